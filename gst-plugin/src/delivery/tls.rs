//! The rustls client configuration for `mqtts://`: which roots are trusted, the optional client
//! certificate, and (only when explicitly asked for) no server verification at all.
//!
//! Built once in `start()`, so that an unreadable or malformed file is an error naming the
//! setting before anything connects. The crypto provider is *ring*, passed explicitly rather
//! than installed process-wide, so other code in the process may use another one.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{DeliveryConfig, DeliveryError};

fn bad(setting: &'static str, reason: String) -> DeliveryError {
    DeliveryError::Settings { setting, reason }
}

/// Reads every certificate of a PEM file; none at all is an error.
fn read_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, DeliveryError> {
    // Read it first: the PEM reader's errors do not say "file not found" as clearly.
    let bytes = std::fs::read(path)
        .map_err(|e| bad(setting, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(setting, format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(
            setting,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

fn roots(config: &DeliveryConfig) -> Result<RootCertStore, DeliveryError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &config.ca_file {
        for cert in read_certs("ca-file", ca)? {
            roots.add(cert).map_err(|e| {
                bad(
                    "ca-file",
                    format!("{}: unusable CA certificate: {e}", ca.display()),
                )
            })?;
        }
    } else {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            let why = found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(bad(
                "ca-file",
                format!("not set, and no system root certificates were found{why}"),
            ));
        }
    }
    Ok(roots)
}

/// The TLS configuration for `config`, or an error naming the setting whose file is unusable.
pub fn client_config(config: &DeliveryConfig) -> Result<Arc<ClientConfig>, DeliveryError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("broker", format!("no usable TLS version: {e}")))?;
    let builder = if config.tls_insecure {
        // Still read a CA file if one is given, so that a typo is not hidden by the switch.
        if config.ca_file.is_some() {
            roots(config)?;
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else {
        builder.with_root_certificates(roots(config)?)
    };
    let tls = match (&config.client_cert, &config.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(bad(
                "client-key",
                "client-cert is set but client-key is not".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                "client-cert",
                "client-key is set but client-cert is not".into(),
            ));
        }
        (Some(cert), Some(key)) => {
            let chain = read_certs("client-cert", cert)?;
            let bytes = std::fs::read(key)
                .map_err(|e| bad("client-key", format!("cannot read {}: {e}", key.display())))?;
            let key_der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                bad(
                    "client-key",
                    format!("{} holds no usable private key: {e}", key.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                bad(
                    "client-key",
                    format!(
                        "{} cannot be used with {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                )
            })?
        }
    };
    Ok(Arc::new(tls))
}

/// Accepts any server certificate (`tls-insecure`); handshake signatures are still checked,
/// so the connection is encrypted, just not authenticated.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
