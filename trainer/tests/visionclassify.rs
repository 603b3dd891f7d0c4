//! The imported model in `visionclassify` with no property but `model`: the element reads
//! labels and preprocessing from the model's metadata and finds the cat and the espresso.
//! Runs `gst-launch-1.0` with `GST_PLUGIN_PATH=target/debug`, so the plugin must be built
//! first (`cargo build -p gst-plugin-vision`, which scripts/test.sh does).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use vision_trainer::import::{self, ImportOptions};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn plugin_dir() -> Result<PathBuf> {
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
fn best_label(stdout: &str) -> Option<String> {
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

fn classify(model: &Path, photo: &Path) -> Result<String> {
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
    best_label(&stdout).with_context(|| format!("no visionclassify message in:\n{stdout}"))
}

#[test]
fn visionclassify_loads_the_imported_model_with_no_extra_properties() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vision-trainer-{}-e2e", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let opts = ImportOptions::project_defaults(&repo_root(), dir.join("lite0.onnx"));
    import::import(&opts)?;

    let cat = classify(&opts.out, &opts.photos_dir.join("chelsea.png"))?;
    assert!(
        ["Egyptian cat", "tabby", "tiger cat"].contains(&cat.as_str()),
        "chelsea.png: {cat}"
    );
    let coffee = classify(&opts.out, &opts.photos_dir.join("coffee.png"))?;
    assert_eq!(coffee, "espresso");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn best_label_reads_quoted_and_plain_values() {
    let line = "Got message #75 from element \"visionclassify0\" (element): visionclassify, \
                best-class-id=(uint)285, best-label=(string)\"Egyptian\\ cat\", x=1;";
    assert_eq!(best_label(line).as_deref(), Some("Egyptian cat"));
    let line = "Got message #7 from element \"v\" (element): visionclassify, \
                best-label=(string)espresso, best-confidence=(double)0.9;";
    assert_eq!(best_label(line).as_deref(), Some("espresso"));
    assert_eq!(best_label("nothing"), None);
}
