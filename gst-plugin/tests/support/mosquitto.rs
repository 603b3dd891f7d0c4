//! A real mosquitto broker for tests, and a subscriber that records what it receives.
//!
//! ```ignore
//! let mut broker = Mosquitto::start(MosquittoConfig { persistence: true, ..Default::default() });
//! let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-1", "vision/#"));
//! // ... publish to mqtt://127.0.0.1:{broker.port()} ...
//! broker.stop();     // an outage; SIGTERM, so mosquitto saves its persistence file
//! broker.restart();  // same ports, same persistence directory
//! let got = sub.wait_for(100, Duration::from_secs(10));
//! ```
//!
//! The broker listens on 127.0.0.1 only: always on a plain TCP port ([`Mosquitto::port`]),
//! and with [`MosquittoConfig::tls`] also on a TLS port ([`Mosquitto::tls_port`]). It runs in
//! its own temporary directory (configuration, password file, persistence, log) and is killed
//! when the value is dropped. Needs `mosquitto` and `mosquitto_passwd` (Debian: `mosquitto`).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TLS listener's files.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// CA certificate; with `require_client_cert` it is what client certificates must chain to.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Refuse clients without a certificate signed by `ca` (mutual TLS).
    pub require_client_cert: bool,
}

#[derive(Debug, Clone, Default)]
pub struct MosquittoConfig {
    /// Keep sessions and queued messages across [`Mosquitto::restart`] (saved on stop).
    pub persistence: bool,
    /// Also listen with TLS on a second port.
    pub tls: Option<TlsListener>,
    /// User names and passwords for a password file (made with `mosquitto_passwd -b`); they
    /// apply to every listener.
    pub users: Vec<(String, String)>,
    /// Let clients connect without credentials.
    pub allow_anonymous: bool,
}

impl MosquittoConfig {
    /// Anonymous access, no persistence, no TLS.
    pub fn anonymous() -> Self {
        MosquittoConfig {
            allow_anonymous: true,
            ..Default::default()
        }
    }
}

/// A running mosquitto. Dropping it kills the broker and deletes its directory.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    conf: PathBuf,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Mosquitto {
    /// Writes the configuration and starts the broker; returns once every port accepts
    /// connections.
    ///
    /// # Panics
    /// If mosquitto is missing or does not come up within 10 s (the message has its log).
    pub fn start(config: MosquittoConfig) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("mosquitto-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir for mosquitto: {e}"));
        let d = dir.path();
        let port = free_port();
        let tls_port = config.tls.as_ref().map(|_| free_port());
        let mut conf = String::new();
        let mut line = |s: String| {
            conf.push_str(&s);
            conf.push('\n');
        };
        if is_root() {
            // Otherwise mosquitto switches to user `mosquitto`, who cannot read our files.
            line("user root".into());
        }
        line("per_listener_settings false".into());
        line(format!("allow_anonymous {}", config.allow_anonymous));
        line(format!(
            "log_dest file {}",
            d.join("mosquitto.log").display()
        ));
        line("log_type all".into());
        line("connection_messages true".into());
        if config.persistence {
            line("persistence true".into());
            line(format!("persistence_location {}/", d.display()));
            line("autosave_interval 1".into());
        }
        if !config.users.is_empty() {
            let pw = d.join("passwd");
            for (i, (user, pass)) in config.users.iter().enumerate() {
                let mut cmd = Command::new("mosquitto_passwd");
                if i == 0 {
                    cmd.arg("-c");
                }
                let status = cmd
                    .arg("-b")
                    .arg(&pw)
                    .arg(user)
                    .arg(pass)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap_or_else(|e| panic!("running mosquitto_passwd: {e}"));
                assert!(status.success(), "mosquitto_passwd failed for {user}");
            }
            line(format!("password_file {}", pw.display()));
        }
        line(format!("listener {port} 127.0.0.1"));
        if let (Some(tls), Some(tls_port)) = (&config.tls, tls_port) {
            line(format!("listener {tls_port} 127.0.0.1"));
            line(format!("cafile {}", tls.ca.display()));
            line(format!("certfile {}", tls.cert.display()));
            line(format!("keyfile {}", tls.key.display()));
            line(format!("require_certificate {}", tls.require_client_cert));
        }
        let conf_path = d.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap_or_else(|e| panic!("writing mosquitto.conf: {e}"));
        let mut broker = Mosquitto {
            dir,
            conf: conf_path,
            port,
            tls_port,
            child: None,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting mosquitto (is it installed?): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in std::iter::once(self.port).chain(self.tls_port) {
            loop {
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    break;
                }
                if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                    panic!("mosquitto exited ({status}):\n{}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not listen on {port} within 10 s:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The plain TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port.
    ///
    /// # Panics
    /// If the broker was started without [`MosquittoConfig::tls`].
    pub fn tls_port(&self) -> u16 {
        self.tls_port
            .unwrap_or_else(|| panic!("this mosquitto has no TLS listener"))
    }

    /// The broker's directory (configuration, persistence, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the broker with SIGTERM (it saves its persistence file and closes every
    /// connection), waiting up to 5 s before killing it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The shell's built-in `kill`: std has no way to send SIGTERM, and /bin/kill (procps)
        // is not on every minimal system.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id()))
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the broker again on the same ports with the same directory (stopping it first
    /// if it runs).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One message as a subscriber got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub dup: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// How a [`Subscriber`] connects (plain TCP to 127.0.0.1).
#[derive(Debug, Clone)]
pub struct SubscriberOptions {
    pub port: u16,
    pub client_id: String,
    pub filter: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl SubscriberOptions {
    pub fn new(port: u16, client_id: &str, filter: &str) -> Self {
        SubscriberOptions {
            port,
            client_id: client_id.into(),
            filter: filter.into(),
            username: None,
            password: None,
        }
    }

    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        self.username = Some(user.into());
        self.password = Some(password.into());
        self
    }
}

/// A QoS 1 subscriber with a persistent session (`clean_session = false`): while it is
/// disconnected, for example while the broker restarts with persistence, the broker keeps its
/// messages. It reconnects by itself and records every message in arrival order.
pub struct Subscriber {
    messages: Arc<Mutex<Vec<Received>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Subscriber {
    /// Connects and subscribes; returns once the broker confirmed the subscription.
    ///
    /// # Panics
    /// If that does not happen within 10 s.
    pub fn start(options: SubscriberOptions) -> Subscriber {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("subscriber runtime: {e}"));
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        let mut mqtt = rumqttc::MqttOptions::new(&options.client_id, "127.0.0.1", options.port);
        mqtt.set_clean_session(false);
        mqtt.set_keep_alive(Duration::from_secs(5));
        mqtt.set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
        if let Some(user) = &options.username {
            mqtt.set_credentials(user, options.password.clone().unwrap_or_default());
        }
        let store = messages.clone();
        let filter = options.filter.clone();
        runtime.spawn(async move {
            let (client, mut eventloop) = rumqttc::AsyncClient::new(mqtt, 64);
            let mut subscribed_once = false;
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        // A restored session keeps its subscription.
                        if !ack.session_present || !subscribed_once {
                            let _ = client.try_subscribe(&filter, rumqttc::QoS::AtLeastOnce);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        subscribed_once = true;
                        let _ = subscribed_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let mut list = store.lock().unwrap_or_else(|e| e.into_inner());
                        list.push(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            dup: p.dup,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        if subscribed_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            panic!(
                "subscriber {} got no SUBACK for '{}' from port {} within 10 s",
                options.client_id, options.filter, options.port
            );
        }
        Subscriber {
            messages,
            runtime: Some(runtime),
        }
    }

    /// Everything received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn count(&self) -> usize {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Waits until at least `n` messages arrived or `timeout` passed, and returns what arrived
    /// (check its length).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        while self.count() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.messages()
    }

    /// Waits until no message arrived for `quiet`, then returns everything.
    pub fn settle(&self, quiet: Duration) -> Vec<Received> {
        let mut last = self.count();
        loop {
            std::thread::sleep(quiet);
            let now = self.count();
            if now == last {
                return self.messages();
            }
            last = now;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
