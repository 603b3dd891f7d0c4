//! A private mosquitto on a free loopback port for the end-to-end tests of pipelines that
//! publish, and `mosquitto_sub` to read back what they sent. Needs the Debian packages
//! `mosquitto` and `mosquitto-clients` (scripts/setup.sh installs them).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
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
    pub fn subscribe(&self, topic: &str, count: usize, timeout: Duration) -> Result<Subscription> {
        let child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-v",
            ])
            .args(["-t", topic, "-C", &count.to_string()])
            .args(["-W", &timeout.as_secs().max(1).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mosquitto_sub (Debian package mosquitto-clients)")?;
        // mosquitto_sub has no "subscribed" signal; give it a moment to connect.
        std::thread::sleep(Duration::from_millis(300));
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
