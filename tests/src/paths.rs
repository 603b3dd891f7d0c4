//! Where things are: the repository, the built plugin, the test models and photos, and
//! scratch directories that clean up after themselves.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

/// The plugin's file name as cargo builds it on Linux.
pub const PLUGIN_FILE: &str = "libgstvision.so";

/// The repository root (the workspace this package belongs to).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        None => repo_root().join("target"),
    }
}

/// The directory holding the debug build of the plugin, for `GST_PLUGIN_PATH`. Fails with
/// the command to run when the plugin has not been built.
pub fn plugin_dir() -> Result<PathBuf> {
    let dir = target_dir().join("debug");
    let file = dir.join(PLUGIN_FILE);
    if !file.is_file() {
        bail!(
            "{} is missing: build the plugin first with `cargo build -p gst-plugin-vision` \
             (the end-to-end tests run the built plugin, as gst-launch-1.0 would)",
            file.display()
        );
    }
    Ok(dir)
}

/// The built plugin's shared library (see [`plugin_dir`]).
pub fn plugin_file() -> Result<PathBuf> {
    Ok(plugin_dir()?.join(PLUGIN_FILE))
}

/// A checked-in test model, `tests/data/<name>`.
pub fn model(name: &str) -> PathBuf {
    repo_root().join("tests/data").join(name)
}

/// A real photo put in `.deps/data/photos` by `scripts/setup.sh`.
pub fn photo(name: &str) -> Result<PathBuf> {
    let path = repo_root().join(".deps/data/photos").join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `scripts/setup.sh` to fetch the test photos",
            path.display()
        );
    }
    Ok(path)
}

/// A fresh directory under `target/vision-e2e/`, removed when dropped (kept when the
/// `VISION_E2E_KEEP` variable is set, to look at what a failing test produced).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Result<Self> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = target_dir()
            .join("vision-e2e")
            .join(format!("{name}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing old {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("VISION_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
