//! The region pipeline end to end with a real detector: the trainer trains `face-or-not` from
//! its recipe (scikit-image's LFW crops), then `pipelines/faces.sh` runs GStreamer's
//! `facedetect` ! `visionclassify target=roi` ! `visionpublish` on scikit-image's
//! `astronaut.png`; the face must be classified as a face and arrive on a real mosquitto as an
//! object with its box. Runs the debug plugin (`cargo build -p gst-plugin-vision` first, as
//! scripts/test.sh does).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use vision_e2e::broker::Broker;
use vision_e2e::{command, photo, repo_root};

#[test]
fn facedetect_regions_are_classified_and_published_as_objects_with_boxes() -> Result<()> {
    let root = repo_root();
    let faces = root.join(".deps/data/faces");
    ensure!(
        faces.join("face").is_dir(),
        "{} is missing: run scripts/setup.sh",
        faces.display()
    );
    let run = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_vision-trainer"))
        .current_dir(&root)
        .args([
            "train",
            "--quiet",
            "--config",
            "models/recipes/face-or-not.toml",
        ])
        .arg("--out")
        .arg(run.path())
        .output()?;
    ensure!(
        out.status.success(),
        "training failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(run.path().join("metrics.json"))?)?;
    let top1 = metrics["test"]["top1"].as_f64().context("test top-1")?;
    ensure!(
        top1 >= 0.8,
        "face-or-not test top-1 {top1} on the held-out LFW crops"
    );
    let model = run.path().join("model.onnx");

    let broker = Broker::start()?;
    let events = broker.subscribe(
        "vision/faces-test/classifications",
        3,
        Duration::from_secs(120),
    )?;
    let launch = command(
        root.join("pipelines/faces.sh"),
        [
            photo("astronaut.png")?.into_os_string(),
            model.into_os_string(),
            "batch-size=2".into(),
        ],
    )?
    .env("BROKER", broker.uri())
    .env("SENSOR", "faces-test")
    .env("FRAMES", "3")
    .timeout(Duration::from_secs(120))
    .run()?;
    launch.ensure_success()?;
    // One bus message per classified face, with the region and the label.
    let faces_seen: Vec<&str> = launch
        .stdout
        .lines()
        .filter(|l| l.contains("(element): visionclassify,"))
        .collect();
    ensure!(faces_seen.len() == 3, "messages:\n{}", launch.stdout);
    for line in &faces_seen {
        ensure!(
            line.contains("roi-type=(string)face") && line.contains("best-label=(string)face"),
            "{line}"
        );
    }

    let events = events.wait()?;
    let objects: Vec<Value> = events
        .iter()
        .filter(|(topic, _)| topic.ends_with("/classifications"))
        .map(|(_, payload)| serde_json::from_str::<Value>(payload))
        .collect::<Result<_, _>>()?;
    ensure!(objects.len() == 3, "events: {events:?}");
    for event in &objects {
        let o = &event["objects"][0];
        ensure!(
            event["objects"].as_array().map(Vec::len) == Some(1),
            "{event}"
        );
        ensure!(
            o["roi_type"] == "face" && o["classification"]["label"] == "face",
            "{o}"
        );
        // facedetect's box on astronaut.png (512x512): x=175, y=64, 97x97.
        let b = (
            o["x"].as_u64(),
            o["y"].as_u64(),
            o["w"].as_u64(),
            o["h"].as_u64(),
        );
        ensure!(b == (Some(175), Some(64), Some(97), Some(97)), "{o}");
        let bbox = &o["detection"]["bounding_box"];
        ensure!(bbox["x_min"].as_f64() == Some(175.0 / 512.0), "{bbox}");
        ensure!(
            bbox["y_max"].as_f64() == Some((64.0 + 97.0) / 512.0),
            "{bbox}"
        );
    }
    Ok(())
}
