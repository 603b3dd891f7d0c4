//! Test certificates made with rcgen: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, and a client certificate, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of one test CA and the certificates it signed.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (what a client passes as `ca-file`, what mosquitto's `cafile` is).
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Client certificate (common name `vision-test-client`) for mutual TLS.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates a new CA with its server and client certificates into `dir`, with file names
    /// starting with `name` (two calls with different names give two unrelated CAs).
    ///
    /// # Panics
    /// If generating or writing fails.
    pub fn generate(dir: &Path, name: &str) -> TestPki {
        Self::try_generate(dir, name).unwrap_or_else(|e| panic!("generating test PKI: {e:#}"))
    }

    fn try_generate(dir: &Path, name: &str) -> anyhow::Result<TestPki> {
        std::fs::create_dir_all(dir)?;
        let write = |file: &str, pem: String| -> anyhow::Result<PathBuf> {
            let path = dir.join(format!("{name}-{file}"));
            std::fs::write(&path, pem)?;
            Ok(path)
        };

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, "vision-test-client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer)?;

        Ok(TestPki {
            ca: write("ca.pem", ca_cert.pem())?,
            server_cert: write("server.pem", server_cert.pem())?,
            server_key: write("server.key", server_key.serialize_pem())?,
            client_cert: write("client.pem", client_cert.pem())?,
            client_key: write("client.key", client_key.serialize_pem())?,
        })
    }
}
