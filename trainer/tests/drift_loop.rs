//! The whole field loop of issue 13 on real data (Fashion-MNIST, Debian
//! dataset-fashion-mnist), CI-sized: a small CNN trained on a base folder of three classes
//! watches a "camera" that sees them shifted (inverted images: light background); the element
//! captures its doubtful frames and a reference sample (`capture-dir`, `capture-below`,
//! `capture-every`: a drifted model is often confidently wrong), a person's relabelling is
//! played by the test (each capture moved to its true class folder, found through the
//! sidecar's frame number), the trainer retrains from the deployed run with the captured
//! folder (`--from`, `--extra-data`, `--balanced-sampler`, the gate), and the new model is
//! renamed over the file a *running* pipeline watches (`watch-model`). The running pipeline's
//! own messages give top-1 on held-out shifted frames before and after the swap.
//!
//! Needs the plugin built (`cargo build -p gst-plugin-vision`) and `scripts/setup.sh`.

#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use vision_trainer::data::{self, DataSpec, Dataset};
use vision_trainer::retrain;
use vision_trainer::train::run::RunOptions;

mod tiny;
use tiny::{CLASSES, recipe};

const BASE_PER_CLASS: usize = 100;
/// Shifted frames the camera sees before the retraining, per class.
const FIELD_PER_CLASS: usize = 60;
/// Shifted frames held out for the before/after figure, per class.
const HELD_OUT_PER_CLASS: usize = 20;
/// Only a bound against a hang: the test waits on what the pipeline prints.
const HANG: Duration = Duration::from_secs(300);

/// Images `skip..skip + n` of each class, interleaved class by class (a camera sees them
/// mixed), with their class names.
fn interleaved(ds: &Dataset, skip: usize, n: usize) -> Vec<(usize, String)> {
    let per: Vec<Vec<usize>> = CLASSES
        .iter()
        .map(|&c| {
            (0..ds.len())
                .filter(|&i| ds.labels[i] == c)
                .skip(skip)
                .take(n)
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for k in 0..n {
        for (ci, list) in per.iter().enumerate() {
            if let Some(&i) = list.get(k) {
                out.push((i, ds.classes[CLASSES[ci]].clone()));
            }
        }
    }
    out
}

/// Writes the frames as `dir/00000.png`, … (8-bit grey, inverted: the shifted look) and
/// returns their true labels in order.
fn camera(ds: &Dataset, frames: &[(usize, String)], dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    for (n, (i, _)) in frames.iter().enumerate() {
        let img = &ds.images[*i];
        ensure!(img.channels == 1, "Fashion-MNIST is grey");
        let pixels: Vec<u8> = img.pixels.iter().map(|p| 255 - p).collect();
        let file = std::fs::File::create(dir.join(format!("{n:05}.png")))?;
        let mut enc = png::Encoder::new(file, img.width as u32, img.height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&pixels)?;
    }
    Ok(frames.iter().map(|(_, l)| l.clone()).collect())
}

fn source(dir: &Path, looping: bool) -> String {
    format!(
        "multifilesrc location={}/%05d.png loop={looping} caps=image/png,framerate=30/1 \
         ! pngdec ! videoconvert ! video/x-raw,format=GRAY8",
        dir.display()
    )
}

fn launch(description: &str) -> Command {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(["-m", "-e"])
        .args(description.split_whitespace())
        .env("LC_ALL", "C")
        .env_remove("ORT_DYLIB_PATH");
    cmd
}

/// `(frame, best label)` of a `visionclassify` frame message line.
fn frame_message(line: &str) -> Option<(u64, String)> {
    if !line.contains("(element): visionclassify,") {
        return None;
    }
    let frame = line
        .split_once("frame=(guint64)")?
        .1
        .split([',', ';'])
        .next()?
        .parse()
        .ok()?;
    let label = common::best_label(line)?;
    Some((frame, label))
}

fn top1(results: &[(u64, String)], truth: &[String]) -> f64 {
    let hits = results
        .iter()
        .filter(|(f, l)| truth[*f as usize % truth.len()] == *l)
        .count();
    hits as f64 / results.len() as f64
}

#[test]
fn captured_frames_retrain_a_model_that_a_running_pipeline_takes() -> Result<()> {
    let plugins = common::plugin_dir()?;
    let ds = data::load(&DataSpec::from_str("fashion-mnist")?)
        .context("Fashion-MNIST is missing: run scripts/setup.sh")?;
    let dir = tempfile::tempdir()?;
    let at = |p: &str| dir.path().join(p);

    // 1. The deployed model: trained on the base look only.
    let base = at("base");
    let picks: Vec<usize> = interleaved(&ds, 0, BASE_PER_CLASS)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    data::write_image_folder(&ds, &picks, &base)?;
    let run = at("deployed-run");
    vision_trainer::train::run::run(
        &recipe(&base),
        &RunOptions {
            out: run.clone(),
            export: true,
            ..RunOptions::default()
        },
    )?;
    let deployed = at("deployed.onnx");
    std::fs::copy(run.join("model.onnx"), &deployed)?;

    // 2. The camera sees the shifted look; doubtful frames are captured.
    let field = camera(
        &ds,
        &interleaved(&ds, BASE_PER_CLASS, FIELD_PER_CLASS),
        &at("field"),
    )?;
    let captured = at("captured");
    let capture = launch(&format!(
        "{} ! visionclassify model={} capture-dir={} capture-below=0.9 capture-every=3 \
         capture-max-rate=0 capture-max-side=0 ! fakesink sync=true",
        source(&at("field"), false),
        deployed.display(),
        captured.display()
    ))
    .env("GST_PLUGIN_PATH", &plugins)
    .output()?;
    ensure!(
        capture.status.success(),
        "capture pass failed:\n{}",
        String::from_utf8_lossy(&capture.stderr)
    );

    // 3. A person corrects the labels: each capture to its true class folder.
    let relabelled = at("relabelled");
    let mut kept = 0;
    let mut wrong_before = 0;
    for class in std::fs::read_dir(&captured)? {
        let class = class?;
        for f in std::fs::read_dir(class.path())? {
            let png = f?.path();
            if png.extension().is_none_or(|x| x != "png") {
                continue;
            }
            let sidecar: serde_json::Value =
                serde_json::from_slice(&std::fs::read(png.with_extension("json"))?)?;
            let frame = sidecar["frame"].as_u64().context("frame in the sidecar")?;
            let truth = &field[frame as usize];
            wrong_before += usize::from(sidecar["label"] != truth.as_str());
            let to = relabelled.join(truth);
            std::fs::create_dir_all(&to)?;
            let name = png.file_name().context("name")?;
            std::fs::rename(&png, to.join(name))?;
            std::fs::rename(
                png.with_extension("json"),
                to.join(name).with_extension("json"),
            )?;
            kept += 1;
        }
    }
    println!(
        "captured {kept} of {} field frames (confidence < 0.9, and 1 in 3 as a reference sample), {wrong_before} of them labelled wrong by the deployed model",
        field.len()
    );
    ensure!(kept >= 30, "only {kept} frames captured");

    // 4. Retrain from the deployed run with the captured folder; the gate decides.
    let retrained = at("retrained");
    let mut config = recipe(&base);
    config.extra_data = Some(format!("folder:{}", relabelled.display()));
    config.balanced_sampler = true;
    config.optimizer.lr = 0.05;
    config.epochs = 8;
    let (_, report) = retrain::retrain(
        &config,
        &RunOptions {
            out: retrained.clone(),
            from: Some(run.clone()),
            ..RunOptions::default()
        },
        0.0,
    )?;
    println!("{}", report.text());
    ensure!(report.accepted, "the gate kept the old model");

    // 5. A running pipeline on held-out shifted frames takes the new model from its file.
    let held_out = camera(
        &ds,
        &interleaved(&ds, BASE_PER_CLASS + FIELD_PER_CLASS, HELD_OUT_PER_CLASS),
        &at("held-out"),
    )?;
    let mut child = launch(&format!(
        "{} ! visionclassify model={} watch-model=true post-messages=true ! fakesink",
        source(&at("held-out"), true),
        deployed.display()
    ))
    .env("GST_PLUGIN_PATH", &plugins)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()?;
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().context("stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let n = held_out.len();
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut numbers = Vec::new();
    let mut swapped = false;
    let mut live = false;
    let result = (|| -> Result<()> {
        loop {
            let line = lines
                .recv_timeout(HANG)
                .context("the pipeline went quiet")?;
            if line.contains("visionclassify-model") && line.contains("state=(string)rejected") {
                bail!("the retrained model was refused: {line}");
            }
            if line.contains("visionclassify-model")
                && line.contains("state=(string)live")
                && line.contains("generation=(guint64)2")
            {
                live = true;
            }
            let Some(m) = frame_message(&line) else {
                continue;
            };
            numbers.push(m.0);
            if !live {
                if before.len() < n {
                    before.push(m);
                } else if !swapped {
                    // A full pass of the held-out frames on the old model: deploy the new one.
                    let next = at(".deployed.onnx.tmp");
                    std::fs::copy(retrained.join("model.onnx"), &next)?;
                    std::fs::rename(&next, &deployed)?;
                    swapped = true;
                }
            } else {
                after.push(m);
                if after.len() == n {
                    return Ok(());
                }
            }
        }
    })();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    result?;
    ensure!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "frames lost or repeated across the swap"
    );
    let (old, new) = (top1(&before, &held_out), top1(&after, &held_out));
    println!(
        "held-out shifted frames in the running pipeline: top-1 {old:.3} before the swap, {new:.3} after ({n} frames each)"
    );
    ensure!(
        new > old,
        "the retrained model is not better on held-out shifted frames: {old:.3} -> {new:.3}"
    );
    Ok(())
}
