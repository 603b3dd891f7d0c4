//! Helpers shared by the trainer's tests that run exported models through `visionclassify`
//! with `gst-launch-1.0`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

pub fn plugin_dir() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| repo_root().join("target"), |t| repo_root().join(t));
    let dir = target.join("debug");
    ensure!(
        dir.join("libgstvision.so").is_file(),
        "{} is missing: build the plugin first with `cargo build -p gst-plugin-vision`",
        dir.join("libgstvision.so").display()
    );
    Ok(dir)
}

/// `best-label=(string)"Egyptian\ cat"` or `best-label=(string)espresso` from the element
/// message that `gst-launch-1.0 -m` prints.
pub fn best_label(stdout: &str) -> Option<String> {
    let line = stdout
        .lines()
        .find(|l| l.contains("(element): visionclassify,"))?;
    let rest = line.split_once("best-label=(string)")?.1;
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split_once('"')?.0,
        None => rest.split([',', ';']).next()?,
    };
    Some(value.replace("\\ ", " "))
}

pub fn classify(model: &Path, photo: &Path) -> Result<String> {
    Ok(classify_scored(model, photo)?.0)
}

/// `best-confidence=(double)0.123` from the same message.
pub fn best_confidence(stdout: &str) -> Option<f64> {
    let line = stdout
        .lines()
        .find(|l| l.contains("(element): visionclassify,"))?;
    let rest = line.split_once("best-confidence=(double)")?.1;
    rest.split([',', ';']).next()?.trim().parse().ok()
}

/// The element's top-1 label and its confidence for one photo.
pub fn classify_scored(model: &Path, photo: &Path) -> Result<(String, f64)> {
    let pipeline = format!(
        "filesrc location={} ! decodebin ! videoconvert ! imagefreeze num-buffers=1 ! \
         visionclassify model={} post-messages=true ! fakesink",
        photo.display(),
        model.display()
    );
    let run = Command::new("gst-launch-1.0")
        .arg("-m")
        .args(pipeline.split_whitespace())
        .env("GST_PLUGIN_PATH", plugin_dir()?)
        // The element finds ONNX Runtime next to the plugin (.deps/), as a user's would.
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .context("running gst-launch-1.0 (gstreamer1.0-tools)")?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    ensure!(
        run.status.success(),
        "gst-launch-1.0 failed:\n{stdout}\n{stderr}"
    );
    let label =
        best_label(&stdout).with_context(|| format!("no visionclassify message in:\n{stdout}"))?;
    let confidence = best_confidence(&stdout)
        .with_context(|| format!("no best-confidence in the message:\n{stdout}"))?;
    Ok((label, confidence))
}
