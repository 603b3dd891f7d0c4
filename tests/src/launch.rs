//! Running the GStreamer command-line tools (`gst-launch-1.0`, `gst-inspect-1.0`) against the
//! built plugin, with a timeout, capturing what they print.

use std::ffi::OsString;
use std::io::Read;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::paths::{plugin_dir, target_dir};

/// Long enough for a debug build on a loaded machine; a stalled pipeline fails the test.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Splits a pipeline description into `gst-launch-1.0` arguments at whitespace, replacing each
/// `{}` with the next path. A path stays one argument even when it holds spaces
/// (`gst-launch-1.0` escapes them), so no quoting is needed.
///
/// ```
/// use std::path::Path;
/// let args = vision_e2e::launch::pipeline("filesrc location={} ! fakesink", &[Path::new("/a b.webm")]);
/// assert_eq!(args, ["filesrc", "location=/a b.webm", "!", "fakesink"]);
/// ```
pub fn pipeline(template: &str, paths: &[&Path]) -> Vec<String> {
    let mut paths = paths.iter();
    template
        .split_whitespace()
        .map(|token| {
            let mut out = String::new();
            let mut rest = token;
            while let Some(at) = rest.find("{}") {
                out.push_str(&rest[..at]);
                match paths.next() {
                    Some(p) => out.push_str(&p.to_string_lossy()),
                    None => out.push_str("{}"),
                }
                rest = &rest[at + 2..];
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// A GStreamer tool invocation, configured for the built plugin.
#[derive(Debug, Clone)]
pub struct Tool {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    timeout: Duration,
}

/// `gst-launch-1.0 -m <args>`: every bus message is printed, which is how the
/// `visionclassify` element messages reach the test. `GST_PLUGIN_PATH` is the plugin's build
/// directory and `GST_REGISTRY` a registry cache of the tests' own under `target/`.
pub fn gst_launch<I, S>(args: I) -> Result<Tool>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut all = vec![OsString::from("-m")];
    all.extend(args.into_iter().map(Into::into));
    Tool::new("gst-launch-1.0", all)
}

/// `gst-inspect-1.0 <args>` with the same environment as [`gst_launch`].
pub fn gst_inspect<I, S>(args: I) -> Result<Tool>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    Tool::new(
        "gst-inspect-1.0",
        args.into_iter().map(Into::into).collect(),
    )
}

/// Any other program (a script of `pipelines/`) with the same environment as [`gst_launch`].
pub fn command<I, S>(program: impl Into<OsString>, args: I) -> Result<Tool>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    Tool::new(program, args.into_iter().map(Into::into).collect())
}

impl Tool {
    fn new(program: impl Into<OsString>, args: Vec<OsString>) -> Result<Self> {
        let plugins = plugin_dir()?;
        let registry = target_dir().join("vision-e2e").join("registry.bin");
        if let Some(dir) = registry.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self {
            program: program.into(),
            args,
            env: vec![
                ("GST_PLUGIN_PATH".into(), Some(plugins.into_os_string())),
                ("GST_REGISTRY".into(), Some(registry.into_os_string())),
                // The tests read English messages.
                ("LC_ALL".into(), Some("C".into())),
            ],
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets (or overrides) an environment variable of the tool.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, Some(value.into())));
        self
    }

    /// Removes an environment variable the test process may have.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, None));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line, for error messages.
    pub fn command_line(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// The command with its arguments and environment, stdout and stderr piped.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Runs the tool to its end, or kills it after the timeout.
    pub fn run(&self) -> Result<Launch> {
        let mut cmd = self.command();
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot run {} (is gstreamer1.0-tools installed? scripts/setup.sh installs it)",
                self.program.to_string_lossy()
            )
        })?;
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > self.timeout {
                timed_out = true;
                let _ = child.kill();
                break child.wait()?;
            }
            thread::sleep(Duration::from_millis(10));
        };
        let launch = Launch {
            command: self.command_line(),
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
            code: status.code(),
            timed_out,
            elapsed: started.elapsed(),
        };
        if timed_out {
            bail!(
                "timed out after {:?}: {}\nstdout (tail):\n{}\nstderr:\n{}",
                self.timeout,
                launch.command,
                tail(&launch.stdout, 40),
                launch.stderr
            );
        }
        Ok(launch)
    }
}

impl Tool {
    /// Starts the tool without waiting for it: its stdout lines can be read as they are
    /// printed ([`Running::wait_for`]), e.g. to change a file under a running pipeline.
    pub fn spawn(&self) -> Result<Running> {
        let mut cmd = self.command();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", self.program.to_string_lossy()))?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = reader(child.stderr.take());
        Ok(Running {
            command: self.command_line(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
            started: Instant::now(),
        })
    }
}

/// A tool started by [`Tool::spawn`].
pub struct Running {
    command: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: thread::JoinHandle<String>,
    started: Instant,
}

impl Running {
    /// Reads printed lines until one satisfies `done`. `within` only turns a hang into an
    /// error; nothing is assumed about how fast the tool is.
    pub fn wait_for(&mut self, within: Duration, mut done: impl FnMut(&str) -> bool) -> Result<()> {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = done(&line);
                    self.seen.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(_) => bail!(
                    "{}: the awaited line did not come within {within:?}; stdout (tail):\n{}",
                    self.command,
                    tail(&self.seen.join("\n"), 40)
                ),
            }
        }
    }

    /// Interrupts the tool (`gst-launch-1.0 -e` turns SIGINT into EOS, so the pipeline drains)
    /// and waits for it to end, killing it after `within`.
    pub fn interrupt(mut self, within: Duration) -> Result<Launch> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .context("kill -INT")?;
        let until = Instant::now() + within;
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > until {
                timed_out = true;
                let _ = self.child.kill();
                break self.child.wait()?;
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The reader ends with the pipe.
        self.seen.extend(self.lines.iter());
        let launch = Launch {
            command: self.command,
            stdout: self.seen.join("\n"),
            stderr: self.stderr.join().unwrap_or_default(),
            code: status.code(),
            timed_out,
            elapsed: self.started.elapsed(),
        };
        if timed_out {
            bail!(
                "did not end within {within:?} after SIGINT: {}\nstdout (tail):\n{}",
                launch.command,
                tail(&launch.stdout, 40)
            );
        }
        Ok(launch)
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What a finished tool run printed and how it exited.
#[derive(Debug, Clone)]
pub struct Launch {
    pub command: String,
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Launch {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Fails, showing what was printed, unless the run exited with 0.
    pub fn ensure_success(&self) -> Result<&Self> {
        if !self.success() {
            bail!(
                "{} exited with {:?}\nstderr:\n{}\nstdout (tail):\n{}",
                self.command,
                self.code,
                self.stderr,
                tail(&self.stdout, 40)
            );
        }
        Ok(self)
    }
}
