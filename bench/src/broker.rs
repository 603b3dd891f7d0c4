//! A mosquitto on a loopback port for the benchmarks, in a folder of its own that is removed
//! on drop. With persistence it keeps sessions and queued QoS 1 messages across
//! [`Broker::restart`], as a broker in production does.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct Broker {
    child: Option<Child>,
    dir: PathBuf,
    conf: PathBuf,
    port: u16,
}

impl Broker {
    /// Starts mosquitto on a free port; `persistent` stores sessions and messages in its folder.
    pub fn start(name: &str, persistent: bool) -> Result<Self> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("mosquitto.conf");
        let mut text = format!("listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n");
        if persistent && is_root() {
            // Otherwise mosquitto switches to the user `mosquitto`, who cannot write the
            // database into our folder: the persistence would silently be lost at a restart.
            text.push_str("user root\n");
        }
        if persistent {
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 30\n\
                 max_queued_messages 0\n",
                dir.display()
            ));
        }
        std::fs::write(&conf, text)?;
        let mut broker = Broker {
            child: None,
            dir,
            conf,
            port,
        };
        broker.spawn()?;
        Ok(broker)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start mosquitto (Debian: apt-get install mosquitto)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {} within 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the broker as an operator does (SIGTERM: it saves its database and exits).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .context("kill")?;
            if !status.success() {
                let _ = child.kill();
            }
            child.wait().context("waiting for mosquitto")?;
        }
        Ok(())
    }

    /// Starts it again on the same port, with the same folder.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            == Some("0")
    })
}
