//! A private mosquitto on a free loopback port for the end-to-end tests of pipelines that
//! publish, and `mosquitto_sub` to read back what they sent. Needs the Debian packages
//! `mosquitto` and `mosquitto-clients` (scripts/setup.sh installs them).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::paths::Scratch;

/// A running broker, killed when dropped.
pub struct Broker {
    port: u16,
    child: Child,
    _dir: Scratch,
}

impl Broker {
    /// Starts mosquitto (anonymous, plain TCP) and returns once it accepts connections.
    pub fn start() -> Result<Self> {
        let dir = Scratch::new("mosquitto")?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("no free loopback port")?
            .port();
        let mut conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\n");
        if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        {
            // As root, mosquitto would otherwise switch to user `mosquitto`.
            conf.push_str("user root\n");
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).context("writing mosquitto.conf")?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (Debian package mosquitto)")?;
        let mut broker = Self {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = broker.child.try_wait()? {
                bail!("mosquitto exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Subscribes to `topic` with `mosquitto_sub -v` until `count` messages came or
    /// `timeout` passed; started before publishing, read with [`Subscription::wait`].
    ///
    /// No message published after this returns is missed, however slow the machine: a
    /// first `mosquitto_sub -E` registers a persistent session (QoS 1, clean session off)
    /// and returns once the broker acknowledged the subscription; the broker then queues
    /// the messages for that session until the reading `mosquitto_sub` (same client id)
    /// takes them.
    pub fn subscribe(&self, topic: &str, count: usize, timeout: Duration) -> Result<Subscription> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let port = self.port.to_string();
        let base = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-c",
            "-i",
            &id,
            "-t",
            topic,
        ];
        let registered = Command::new("mosquitto_sub")
            .args(base)
            .args(["-E", "-W", "60"])
            .output()
            .context("starting mosquitto_sub (Debian package mosquitto-clients)")?;
        if !registered.status.success() {
            bail!(
                "mosquitto_sub could not subscribe to {topic}: {}",
                String::from_utf8_lossy(&registered.stderr)
            );
        }
        let child = Command::new("mosquitto_sub")
            .args(base)
            .args(["-v", "-C", &count.to_string()])
            .args(["-W", &timeout.as_secs().max(1).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mosquitto_sub (Debian package mosquitto-clients)")?;
        Ok(Subscription { child })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `mosquitto_sub`.
pub struct Subscription {
    child: Child,
}

impl Subscription {
    /// Waits for the subscriber to end and returns its `topic payload` lines.
    pub fn wait(self) -> Result<Vec<(String, String)>> {
        let out = self
            .child
            .wait_with_output()
            .context("waiting for mosquitto_sub")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect())
    }
}
