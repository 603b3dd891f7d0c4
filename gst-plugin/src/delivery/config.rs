//! What a caller configures: broker address, credentials, TLS material, QoS, spool and queue
//! sizes; and the checks that turn a bad value into an error naming the setting.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::DeliveryError;

/// MQTT quality of service of the published messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Qos {
    /// QoS 0: fire and forget. A message counts as delivered once written to the socket.
    AtMostOnce,
    /// QoS 1 (default): the broker acknowledges each message; duplicates are possible after
    /// a reconnection.
    #[default]
    AtLeastOnce,
    /// QoS 2: exactly once within one connection; across a reconnection, unacknowledged
    /// messages are sent again, so duplicates are possible as with QoS 1.
    ExactlyOnce,
}

impl Qos {
    pub(crate) fn to_mqtt(self) -> rumqttc::QoS {
        match self {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
            Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
        }
    }
}

/// A broker address: `mqtt://host[:port]` (plain TCP, port 1883 by default) or
/// `mqtts://host[:port]` (TLS, port 8883 by default). IPv6 literals go in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUri {
    pub tls: bool,
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}

impl BrokerUri {
    fn invalid(reason: impl Into<String>) -> DeliveryError {
        DeliveryError::Settings {
            setting: "broker",
            reason: reason.into(),
        }
    }

    /// The host as a socket address wants it (IPv6 literals in brackets).
    pub(crate) fn connect_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl std::fmt::Display for BrokerUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.connect_host(), self.port)
    }
}

impl FromStr for BrokerUri {
    type Err = DeliveryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        // Errors quote the URI: never with a password someone put in it.
        let shown = crate::redact::uri_credentials(text);
        let s = shown.as_ref();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(Self::invalid(format!(
                "'{s}' is not a broker URI: expected mqtt://host[:port] or mqtts://host[:port]"
            )));
        };
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" => (false, 1883),
            "mqtts" => (true, 8883),
            other => {
                return Err(Self::invalid(format!(
                    "unsupported scheme '{other}' in '{s}': use mqtt:// (TCP) or mqtts:// (TLS)"
                )));
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(c) = authority.chars().find(|c| matches!(c, '/' | '?' | '#')) {
            return Err(Self::invalid(format!(
                "'{s}' has a path, query or fragment ('{c}'): only host and port are allowed"
            )));
        }
        if authority.contains('@') {
            return Err(Self::invalid(format!(
                "'{s}' has user information: set username and password separately"
            )));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Err(Self::invalid(format!(
                    "'{s}': unclosed '[' in an IPv6 address"
                )));
            };
            match after {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => {
                        return Err(Self::invalid(format!("'{s}': unexpected '{p}' after ']'")));
                    }
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(Self::invalid(format!("'{s}' has no host")));
        }
        if authority.starts_with('[') {
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(Self::invalid(format!(
                    "'{s}': '{host}' in brackets is not an IPv6 address"
                )));
            }
        } else if host.contains(':') {
            return Err(Self::invalid(format!(
                "'{s}': put an IPv6 address in brackets, as in mqtt://[::1]:1883"
            )));
        } else if let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            // Letters, digits, '.', '-' and '_' (host names, IPv4); anything else would not
            // print back as the same URI ('[' for one) or reach a broker.
            return Err(Self::invalid(format!(
                "'{s}': the host '{host}' has a character a host name cannot have ({c:?})"
            )));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u32>() {
                Ok(n @ 1..=65535) => n as u16,
                _ => {
                    return Err(Self::invalid(format!(
                        "'{s}': port '{p}' is not a number from 1 to 65535"
                    )));
                }
            },
        };
        Ok(BrokerUri {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

/// A password or other secret: `Debug` prints `***`, and there is no `Display`, so it does not
/// end up in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file, without a trailing line break.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Secret(text.trim_end_matches(['\r', '\n']).to_owned()))
    }

    /// Reads a secret from an environment variable; `None` if it is unset or not Unicode.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var).ok().map(Secret)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// Everything [`Delivery::start`](super::Delivery::start) needs. Errors name a setting by the
/// element property it comes from: the field name in kebab case (`ca-file`, `spool-max-bytes`).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub broker: BrokerUri,
    /// MQTT client id; must not be empty (a persistent session is found by it).
    pub client_id: String,
    /// MQTT keep-alive: zero (off) or whole seconds from 1 to 65535.
    pub keep_alive: Duration,
    pub username: Option<String>,
    /// Never logged; needs `username`.
    pub password: Option<Secret>,
    /// PEM file of the CA certificates that may sign the broker's certificate; without it the
    /// system's root certificates are used.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate. Only for tests and lab set-ups: anyone on the path can
    /// then read and change the traffic.
    pub tls_insecure: bool,
    pub qos: Qos,
    /// Ask the broker to keep the session across connections (`clean_session = false`).
    pub persistent_session: bool,
    /// SQLite file of the store-and-forward spool (created with its directory).
    pub spool_path: PathBuf,
    /// Most bytes of topics and payloads in the spool; 0 = no limit. At the limit the oldest
    /// messages are dropped, counted and reported.
    pub spool_max_bytes: u64,
    /// Spooled messages older than this are dropped; zero = no limit.
    pub spool_max_age: Duration,
    /// Messages held in memory while connected; when full, messages go to the spool.
    pub queue_capacity: usize,
    /// Retained `online` / `offline` status and last will; empty = none.
    pub status_topic: String,
    /// First delay before reconnecting; doubles after each failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl DeliveryConfig {
    /// A configuration with the defaults: QoS 1, keep-alive 30 s, no credentials, system root
    /// certificates, clean session, spool limit 64 MiB and 7 days, queue of 1024, status topic
    /// `vision/<client_id>/status`, back-off 1 s to 60 s.
    pub fn new(broker: BrokerUri, client_id: impl Into<String>, spool_path: PathBuf) -> Self {
        let client_id = client_id.into();
        DeliveryConfig {
            broker,
            status_topic: format!("vision/{client_id}/status"),
            client_id,
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            tls_insecure: false,
            qos: Qos::AtLeastOnce,
            persistent_session: false,
            spool_path,
            spool_max_bytes: 64 * 1024 * 1024,
            spool_max_age: Duration::from_secs(7 * 24 * 3600),
            queue_capacity: 1024,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }

    /// Checks the values that do not need files (those are checked while building TLS).
    pub(crate) fn check(&self) -> Result<(), DeliveryError> {
        let bad = |setting: &'static str, reason: String| {
            Err(DeliveryError::Settings { setting, reason })
        };
        if self.broker.host.is_empty() || self.broker.port == 0 {
            return bad(
                "broker",
                format!("'{}' needs a host and a port from 1 to 65535", self.broker),
            );
        }
        if self.client_id.is_empty() {
            return bad("client-id", "must not be empty".into());
        }
        if self.client_id.len() > usize::from(u16::MAX) {
            return bad("client-id", "is longer than 65535 bytes".into());
        }
        let ka = self.keep_alive;
        if !ka.is_zero() && (ka < Duration::from_secs(1) || ka > Duration::from_secs(65535)) {
            return bad(
                "keep-alive",
                format!("{ka:?}: must be 0 (off) or 1 to 65535 seconds"),
            );
        }
        if self.password.is_some() && self.username.is_none() {
            return bad(
                "password",
                "is set without a username (MQTT 3.1.1 needs both)".into(),
            );
        }
        if !self.broker.tls
            && (self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some())
        {
            return bad(
                "broker",
                format!(
                    "'{}' is plain TCP but TLS files (ca-file, client-cert or client-key) are set: \
                     use mqtts:// for TLS",
                    self.broker
                ),
            );
        }
        if let (false, Err(reason)) = (
            self.status_topic.is_empty(),
            check_topic(&self.status_topic),
        ) {
            return bad("status-topic", reason);
        }
        if self.backoff_min.is_zero() {
            return bad("backoff-min", "must be above zero".into());
        }
        if self.backoff_max < self.backoff_min {
            return bad(
                "backoff-max",
                format!(
                    "{:?} is below backoff-min {:?}",
                    self.backoff_max, self.backoff_min
                ),
            );
        }
        Ok(())
    }
}

/// Checks a topic to publish to: not empty, no wildcards or NUL, at most 65535 bytes.
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        Err("the topic is empty".into())
    } else if topic.contains(['+', '#']) {
        Err(format!(
            "topic '{topic}' contains a wildcard (+ or #), not allowed when publishing"
        ))
    } else if topic.contains('\0') {
        Err(format!(
            "topic '{}' contains a NUL character",
            topic.escape_debug()
        ))
    } else if topic.len() > usize::from(u16::MAX) {
        Err("the topic is longer than 65535 bytes".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<BrokerUri, String> {
        s.parse::<BrokerUri>().map_err(|e| e.to_string())
    }

    fn uri(tls: bool, host: &str, port: u16) -> Result<BrokerUri, String> {
        Ok(BrokerUri {
            tls,
            host: host.into(),
            port,
        })
    }

    #[test]
    fn parses_broker_uris() {
        assert_eq!(parse("mqtt://localhost"), uri(false, "localhost", 1883));
        assert_eq!(
            parse("mqtts://broker.example.com"),
            uri(true, "broker.example.com", 8883)
        );
        assert_eq!(parse("mqtt://10.0.0.2:1884"), uri(false, "10.0.0.2", 1884));
        assert_eq!(parse("MQTTS://h:443/"), uri(true, "h", 443));
        assert_eq!(parse(" mqtt://h:1 "), uri(false, "h", 1));
        assert_eq!(parse("mqtt://[::1]"), uri(false, "::1", 1883));
        assert_eq!(parse("mqtts://[fe80::1]:9000"), uri(true, "fe80::1", 9000));
        assert_eq!(
            parse("mqtts://[fe80::1]:9000").map(|u| u.to_string()),
            Ok("mqtts://[fe80::1]:9000".to_string())
        );
        assert_eq!(
            parse("mqtt://h").map(|u| u.to_string()),
            Ok("mqtt://h:1883".into())
        );
    }

    #[test]
    fn rejects_bad_broker_uris_naming_the_setting() {
        for (s, why) in [
            ("http://x", "unsupported scheme 'http'"),
            ("tcp://x:1883", "unsupported scheme"),
            ("localhost:1883", "not a broker URI"),
            ("", "not a broker URI"),
            ("mqtt://", "no host"),
            ("mqtt://:1883", "no host"),
            ("mqtt://:99999", "no host"),
            ("mqtt://h:99999", "port '99999'"),
            ("mqtt://h:0", "port '0'"),
            ("mqtt://h:", "port ''"),
            ("mqtt://h:-1", "port '-1'"),
            ("mqtt://h:18x3", "port '18x3'"),
            ("mqtt://h/topic", "path"),
            ("mqtt://h?x=1", "query"),
            ("mqtt://user:pw@h", "user information"),
            ("mqtt://::1", "brackets"),
            ("mqtt://[::1", "unclosed"),
            ("mqtt://[::1]x", "after ']'"),
            // Found by fuzzing: these parsed, but printed as URIs that do not parse back.
            ("mqtt://[[]", "not an IPv6 address"),
            ("mqtt://[]", "no host"),
            ("mqtt://[host]", "not an IPv6 address"),
            ("mqtt://a[b", "character"),
            ("mqtt://a b", "character"),
        ] {
            match s.parse::<BrokerUri>() {
                Ok(u) => panic!("'{s}' parsed as {u:?}"),
                Err(DeliveryError::Settings { setting, reason }) => {
                    assert_eq!(setting, "broker", "{s}");
                    assert!(reason.contains(why), "'{s}': '{reason}' lacks '{why}'");
                }
                Err(e) => panic!("'{s}': unexpected error {e:?}"),
            }
        }
    }

    #[test]
    fn a_parsed_uri_prints_as_one_that_parses_the_same() {
        for s in [
            "mqtt://h",
            "MQTTS://Broker.example:8883/",
            "mqtt://[::1]:1884",
            "mqtt://[fe80::1]",
            "mqtt://10.0.0.5",
            "mqtt://my_broker-2",
        ] {
            let u = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(parse(&u.to_string()), Ok(u), "{s}");
        }
    }

    #[test]
    fn a_password_in_the_broker_uri_is_never_quoted() {
        for s in [
            "mqtt://cam:hunter2@h",
            "mqtts://cam:hunter2@h:8883/",
            "mqtt://cam:hunter2@h/topic",
            "mqtt://cam:hunter2@h?x",
            "http://cam:hunter2@h",
            "mqtt://cam:hunter2@h:99999",
        ] {
            match s.parse::<BrokerUri>() {
                Ok(u) => panic!("'{s}' parsed as {u:?}"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(!text.contains("hunter2"), "'{s}': {text}");
                    assert!(text.contains("***@h"), "'{s}': {text}");
                }
            }
        }
    }

    #[test]
    fn secrets_do_not_print() -> anyhow::Result<()> {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        let mut c = DeliveryConfig::new(
            parse("mqtt://h").map_err(anyhow::Error::msg)?,
            "id",
            "x".into(),
        );
        c.password = Some(s.clone());
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n")?;
        assert_eq!(Secret::from_file(&f)?.expose(), "s3cret");
        Ok(())
    }

    #[test]
    fn checks_settings() -> anyhow::Result<()> {
        let base = DeliveryConfig::new(
            parse("mqtt://h").map_err(anyhow::Error::msg)?,
            "id",
            "x".into(),
        );
        assert!(base.check().is_ok());
        let setting_of = |c: &DeliveryConfig| match c.check() {
            Err(DeliveryError::Settings { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        let mut c = base.clone();
        c.client_id.clear();
        assert_eq!(setting_of(&c), "client-id");
        let mut c = base.clone();
        c.keep_alive = Duration::from_millis(500);
        assert_eq!(setting_of(&c), "keep-alive");
        let mut c = base.clone();
        c.password = Some("p".into());
        assert_eq!(setting_of(&c), "password");
        let mut c = base.clone();
        c.ca_file = Some("ca.pem".into());
        assert_eq!(setting_of(&c), "broker");
        let mut c = base.clone();
        c.status_topic = "status/#".into();
        assert_eq!(setting_of(&c), "status-topic");
        let mut c = base.clone();
        c.backoff_min = Duration::ZERO;
        assert_eq!(setting_of(&c), "backoff-min");
        let mut c = base.clone();
        c.backoff_max = Duration::from_millis(10);
        assert_eq!(setting_of(&c), "backoff-max");
        let mut c = base;
        c.status_topic.clear();
        assert!(
            c.check().is_ok(),
            "an empty status topic turns the status off"
        );
        Ok(())
    }

    #[test]
    fn checks_topics() {
        assert!(check_topic("vision/cam1/classifications").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a/+/b").is_err());
        assert!(check_topic("a/#").is_err());
        assert!(check_topic("a\0b").is_err());
    }
}
