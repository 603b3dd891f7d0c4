//! The ready pipelines of `pipelines/` and the demo's camera input, run as a user runs them,
//! on the real test video (five photos, six frames each; see `vision_e2e::video`) and on a
//! local RTSP camera that serves it as H.264 (`vision_e2e::rtsp`).
//!
//! `classify-file.sh` is covered in `pipelines.rs`. Every check here is on what a user sees:
//! one result per frame, in order, each with the label of the photo shown at that frame, tied
//! to the right camera; the label drawn on the right frame; one JSON line per image.
//!
//! With `color3.onnx` (logits = 20 × channel means) the labels are known from the photos
//! alone: `rocket.jpg` is blue, the four others red, each by a lead of at least 0.083 of full
//! scale (the table in `pipelines.rs`), far more than H.264 or VP8 coding moves a mean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vision_e2e::broker::Broker;
use vision_e2e::overlay::OVERLAY_PROPS;
use vision_e2e::rtsp::RtspCamera;
use vision_e2e::video::{FRAMES_PER_PHOTO, HEIGHT, WIDTH, decode_raw, encode_photos, quoted};
use vision_e2e::{
    Classified, PHOTOS, Scratch, TestVideo, command, gst_launch, model, parse_messages, photo,
    repo_root, test_video,
};

/// A script of `pipelines/`.
fn script(name: &str) -> PathBuf {
    repo_root().join("pipelines").join(name)
}

/// `color3`'s label for a photo of the test video.
fn color_of(photo: &str) -> &'static str {
    if photo == "rocket.jpg" { "blue" } else { "red" }
}

/// The labels, frame by frame, of a video showing `photos` in this order.
fn expected_labels(photos: &[&str]) -> Vec<&'static str> {
    photos
        .iter()
        .flat_map(|p| std::iter::repeat_n(color_of(p), FRAMES_PER_PHOTO as usize))
        .collect()
}

/// One message per frame, frames numbered 0.. in order with rising timestamps, each with the
/// label of the photo shown.
fn check_frames(msgs: &[&Classified], expected: &[&str], what: &str) -> Result<()> {
    let frames: Vec<u64> = msgs.iter().map(|m| m.frame).collect();
    let want: Vec<u64> = (0..expected.len() as u64).collect();
    ensure!(frames == want, "{what}: frames in message order {frames:?}");
    let labels: Vec<&str> = msgs.iter().map(|m| m.best_label.as_str()).collect();
    ensure!(
        labels == expected,
        "{what}: labels {labels:?}, expected {expected:?}"
    );
    let stamps: Vec<Option<u64>> = msgs.iter().map(|m| m.timestamp).collect();
    ensure!(
        stamps.iter().all(Option::is_some) && stamps.windows(2).all(|w| w[0] < w[1]),
        "{what}: timestamps not rising: {stamps:?}"
    );
    for m in msgs {
        ensure!(
            m.best_confidence > 0.5,
            "{what}: frame {} has confidence {}",
            m.frame,
            m.best_confidence
        );
    }
    Ok(())
}

/// The test photos in reverse order, encoded like the test video: a second camera that shows
/// something else at each moment (rocket.jpg, the blue one, second instead of fourth).
fn reversed_video(scratch: &Scratch) -> Result<(PathBuf, Vec<&'static str>)> {
    let order: Vec<&str> = PHOTOS.iter().rev().copied().collect();
    let photos = order.iter().map(|p| photo(p)).collect::<Result<Vec<_>>>()?;
    let path = scratch.join("reversed.webm");
    encode_photos(&photos, FRAMES_PER_PHOTO, &path)?;
    Ok((path, order))
}

fn video_order(video: &TestVideo) -> Vec<&'static str> {
    video.segments.iter().map(|s| s.name).collect()
}

#[test]
fn rtsp_camera_script_classifies_every_frame_of_an_h264_camera() -> Result<()> {
    let video = test_video()?;
    let camera = RtspCamera::start(&video.path)?;
    let run = command(
        script("rtsp-camera.sh"),
        [camera.url(), model("color3.onnx").to_str().context("path")?],
    )?
    .run()?;
    run.ensure_success()?;
    let msgs = parse_messages(&run.stdout)?;
    let msgs: Vec<&Classified> = msgs.iter().collect();
    check_frames(&msgs, &expected_labels(&video_order(video)), "rtsp camera")?;
    ensure!(
        run.stdout.contains("Got EOS"),
        "the stream should end with the camera's BYE:\n{}",
        run.stdout
    );
    Ok(())
}

#[test]
fn rtsp_camera_script_stops_after_frames_and_rejects_other_urls() -> Result<()> {
    let video = test_video()?;
    let camera = RtspCamera::start(&video.path)?;
    let run = command(script("rtsp-camera.sh"), [camera.url()])?
        .env("FRAMES", "8")
        .run()?;
    run.ensure_success()?;
    let msgs = parse_messages(&run.stdout)?;
    let msgs: Vec<&Classified> = msgs.iter().collect();
    check_frames(&msgs, &["red"; 8], "rtsp camera, FRAMES=8")?;

    let run = command(
        script("rtsp-camera.sh"),
        [video.path.to_str().context("path")?],
    )?
    .run()?;
    ensure!(run.code == Some(2), "a file path is not a camera: {run:?}");
    ensure!(
        run.stderr.contains("is not an rtsp:// URL"),
        "{}",
        run.stderr
    );
    Ok(())
}

#[test]
fn the_demo_takes_an_rtsp_camera_and_prints_the_events_it_receives() -> Result<()> {
    let video = test_video()?;
    let camera = RtspCamera::start(&video.path)?;
    let broker = Broker::start()?;
    let run = command(
        env!("CARGO_BIN_EXE_vision-demo"),
        [
            "--rtsp",
            camera.url(),
            "--model",
            model("color3.onnx").to_str().context("path")?,
            "--broker",
            &broker.uri(),
        ],
    )?
    .run()?;
    run.ensure_success()?;
    let out = &run.stdout;
    ensure!(out.contains("events received over MQTT"), "{out}");
    // One printed line per event: "<timestamp>  <frame>  <label>  <confidence>".
    let lines: Vec<(u64, String)> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[3].parse::<f64>().is_ok())
                .then(|| Some((f[1].parse().ok()?, f[2].to_string())))
                .flatten()
        })
        .collect();
    let expected = expected_labels(&video_order(video));
    ensure!(
        lines.len() == expected.len(),
        "{} event lines:\n{out}",
        lines.len()
    );
    for (frame, label) in &lines {
        ensure!(
            expected.get(*frame as usize) == Some(&label.as_str()),
            "frame {frame}: {label}\n{out}"
        );
    }
    ensure!(out.contains("frames:           30"), "{out}");
    ensure!(out.contains("red x24, blue x6"), "{out}");
    Ok(())
}

#[test]
fn multi_camera_keeps_each_camera_s_results_apart() -> Result<()> {
    let video = test_video()?;
    let scratch = Scratch::new("multi-camera")?;
    let (reversed, reversed_order) = reversed_video(&scratch)?;
    // cam0 a file, cam1 an RTSP camera showing the photos in the other order.
    let camera = RtspCamera::start(&reversed)?;
    let broker = Broker::start()?;
    let events = broker.subscribe("vision/+/classifications", 60, Duration::from_secs(40))?;
    let run = command(
        script("multi-camera.sh"),
        [
            "--broker",
            &broker.uri(),
            video.path.to_str().context("path")?,
            camera.url(),
            "batch-size=4",
        ],
    )?
    .run()?;
    run.ensure_success()?;
    ensure!(
        run.stdout.contains("2 cameras") && run.stdout.contains("one shared engine"),
        "{}",
        run.stdout
    );
    let msgs = parse_messages(&run.stdout)?;
    let mut by_camera: BTreeMap<&str, Vec<&Classified>> = BTreeMap::new();
    for m in &msgs {
        by_camera.entry(m.element.as_str()).or_default().push(m);
    }
    ensure!(
        by_camera.keys().copied().collect::<Vec<_>>() == ["cam0", "cam1"],
        "cameras: {:?}",
        by_camera.keys()
    );
    check_frames(
        &by_camera["cam0"],
        &expected_labels(&video_order(video)),
        "cam0 (file)",
    )?;
    check_frames(
        &by_camera["cam1"],
        &expected_labels(&reversed_order),
        "cam1 (rtsp)",
    )?;
    // Batches of 4 on the engine the two cameras share (which cameras a batch mixes depends
    // on their timing; the gst-check tests count that deterministically).
    ensure!(
        msgs.iter().any(|m| m.batch_size == 4),
        "no batch of 4 in {:?}",
        msgs.iter().map(|m| m.batch_size).collect::<Vec<_>>()
    );

    // Each camera's events on its own topic, with its own labels.
    let events = events.wait()?;
    let mut blue: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (topic, payload) in &events {
        let v: serde_json::Value = serde_json::from_str(payload)
            .with_context(|| format!("event on {topic}: {payload}"))?;
        ensure!(
            v["sensorId"]
                .as_str()
                .map(|s| format!("vision/{s}/classifications"))
                .as_deref()
                == Some(topic.as_str()),
            "{topic}: {payload}"
        );
        if v["objects"][0]["classification"]["label"] == "blue" {
            blue.entry(topic.clone())
                .or_default()
                .push(v["frame"].as_u64().context("frame")?);
        }
    }
    ensure!(events.len() == 60, "{} events: {events:?}", events.len());
    let rocket = |order: &[&str]| -> Vec<u64> {
        let at = order.iter().position(|p| *p == "rocket.jpg").unwrap_or(0) as u64;
        (at * FRAMES_PER_PHOTO..(at + 1) * FRAMES_PER_PHOTO).collect()
    };
    let mut want = BTreeMap::new();
    want.insert(
        "vision/cam0/classifications".to_string(),
        rocket(&video_order(video)),
    );
    want.insert(
        "vision/cam1/classifications".to_string(),
        rocket(&reversed_order),
    );
    for frames in blue.values_mut() {
        frames.sort_unstable();
    }
    ensure!(
        blue == want,
        "blue frames per topic {blue:?}, expected {want:?}"
    );
    Ok(())
}

/// Frame `index` of raw `RGBx` bytes of [`WIDTH`]x[`HEIGHT`] frames.
fn rgbx_frame(raw: &[u8], index: usize) -> Result<&[u8]> {
    let size = WIDTH as usize * HEIGHT as usize * 4;
    raw.get(index * size..(index + 1) * size)
        .with_context(|| format!("no frame {index} in {} bytes", raw.len()))
}

fn decode_png(path: &Path) -> Result<Vec<u8>> {
    let raw = decode_raw(path, "RGBx")?;
    ensure!(
        raw.len() == WIDTH as usize * HEIGHT as usize * 4,
        "{}: {} bytes, not one {WIDTH}x{HEIGHT} frame",
        path.display(),
        raw.len()
    );
    Ok(raw)
}

#[test]
fn overlay_draws_each_frames_own_label_on_it() -> Result<()> {
    let video = test_video()?;
    let scratch = Scratch::new("overlay")?;
    let pngs = scratch.join("frames");
    let run = command(script("overlay.sh"), [video.path.to_str().context("path")?])?
        .env("VISION_OVERLAY", env!("CARGO_BIN_EXE_vision-overlay"))
        .env("PNG_DIR", &pngs)
        .run()?;
    run.ensure_success()?;
    // "frame N: <label> <confidence>" per frame.
    let texts: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, t)| t))
        .collect();
    let expected = expected_labels(&video_order(video));
    ensure!(texts.len() == expected.len(), "{}", run.stdout);
    for (i, (text, label)) in texts.iter().zip(&expected).enumerate() {
        let confidence = text
            .strip_prefix(&format!("{label} "))
            .and_then(|c| c.parse::<f64>().ok());
        ensure!(
            confidence.is_some_and(|c| (0.5..=1.0).contains(&c)),
            "frame {i}: `{text}`, expected `{label} <confidence>`"
        );
    }
    let undecorated = decode_raw(&video.path, "RGBx")?;
    // A red frame (chelsea) and a blue one (rocket.jpg).
    for index in [0usize, 20] {
        let drawn = decode_png(&pngs.join(format!("frame-{index:05}.png")))?;
        let plain = rgbx_frame(&undecorated, index)?;
        // The text changes pixels in the top-left corner only; the rest is the frame itself.
        let mut changed = 0;
        for (i, (a, b)) in drawn.chunks_exact(4).zip(plain.chunks_exact(4)).enumerate() {
            if a[..3] != b[..3] {
                let (x, y) = (i % WIDTH as usize, i / WIDTH as usize);
                ensure!(
                    x < WIDTH as usize / 2 && y < HEIGHT as usize / 4,
                    "frame {index}: pixel ({x}, {y}) changed outside the label's corner"
                );
                changed += 1;
            }
        }
        ensure!(changed > 1000, "frame {index}: only {changed} pixels drawn");

        // And it is exactly that frame's text: draw it on the undecorated frame with the same
        // textoverlay settings and compare every pixel.
        let reference = scratch.join(&format!("reference-{index}.png"));
        let raw = scratch.join(&format!("frame-{index}.raw"));
        std::fs::write(&raw, plain)?;
        let text = texts[index];
        let description = format!(
            "filesrc location={} ! rawvideoparse width={WIDTH} height={HEIGHT} format=rgbx \
             framerate=10/1 ! textoverlay text={} {OVERLAY_PROPS} ! videoconvert ! pngenc \
             ! filesink location={}",
            quoted(&raw),
            quoted(Path::new(text)),
            quoted(&reference)
        );
        vision_e2e::video::run_to_eos(&description)?;
        let redrawn = decode_png(&reference)?;
        ensure!(
            redrawn == drawn,
            "frame {index}: the drawn text is not `{text}` in the same place"
        );
    }
    Ok(())
}

#[test]
fn batch_folder_writes_a_json_line_per_image_and_both_throughputs() -> Result<()> {
    let video = test_video()?;
    let scratch = Scratch::new("batch-folder")?;
    // A folder of 30 images: the test video's frames as PNG files.
    let dir = scratch.join("images");
    std::fs::create_dir_all(&dir)?;
    let args = vision_e2e::launch::pipeline(
        "filesrc location={} ! decodebin ! videoconvert ! pngenc ! multifilesink location={}",
        &[&video.path, &dir.join("img-%03d.png")],
    );
    gst_launch(args)?.run()?.ensure_success()?;
    let out = scratch.join("labels.jsonl");
    // color3 infers in microseconds, so with batch-timeout=0 the worker is always free and
    // every batch is one image; a timeout makes the batches of 8 that a slow model gets.
    let run = command(script("batch-folder.sh"), [dir.to_str().context("path")?])?
        .env("OUT", &out)
        .env("BATCH_TIMEOUT", "2000")
        .run()?;
    run.ensure_success()?;

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let expected = expected_labels(&video_order(video));
    ensure!(lines.len() == expected.len(), "{} JSON lines", lines.len());
    let mut batch_sizes = Vec::new();
    for (i, (line, label)) in lines.iter().zip(&expected).enumerate() {
        ensure!(
            line["file"] == format!("img-{i:03}.png"),
            "line {i}: {line}"
        );
        ensure!(line["frame"] == i, "line {i}: {line}");
        ensure!(line["label"] == *label, "line {i}: {line}");
        ensure!(line["model"] == "color3", "line {i}: {line}");
        batch_sizes.push(line["batch_size"].as_u64().context("batch_size")?);
    }
    let mut want = vec![8; 24];
    want.extend([6; 6]);
    ensure!(batch_sizes == want, "batch sizes {batch_sizes:?}");

    let throughput = |prefix: &str| -> Result<f64> {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no `{prefix}` line:\n{}", run.stdout))?;
        ensure!(line.contains(": 30 images in "), "{line}");
        line.rsplit_once(" = ")
            .and_then(|(_, v)| v.strip_suffix(" images/s"))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no images/s in `{line}`"))
    };
    ensure!(throughput("batch-size=8 batch-timeout=2000")? > 0.0);
    ensure!(throughput("batch-size=1")? > 0.0);

    // One decoder per run: a folder mixing PNG and JPEG is refused with the reason.
    let jpeg = photo("rocket.jpg")?;
    std::fs::copy(&jpeg, dir.join("rocket.jpg"))?;
    let run = command(script("batch-folder.sh"), [dir.to_str().context("path")?])?
        .env("OUT", &out)
        .run()?;
    ensure!(run.code == Some(2), "{run:?}");
    ensure!(run.stderr.contains("mixes PNG and JPEG"), "{}", run.stderr);
    Ok(())
}

#[test]
fn every_pipeline_script_is_documented_and_prints_its_usage() -> Result<()> {
    let readme = std::fs::read_to_string(repo_root().join("pipelines/README.md"))?;
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("pipelines"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sh") {
            scripts.push(name);
        }
    }
    scripts.sort();
    ensure!(scripts.len() >= 5, "scripts: {scripts:?}");
    for name in &scripts {
        ensure!(
            readme.contains(&format!("## `{name}`")),
            "pipelines/README.md has no section for {name}"
        );
        let run = command(script(name), ["--help"])?
            .timeout(Duration::from_secs(10))
            .run()?;
        let usage = format!("{}{}", run.stdout, run.stderr);
        ensure!(
            usage.contains(&format!("pipelines/{name} ")),
            "{name} --help does not show its usage:\n{usage}"
        );
    }
    Ok(())
}
