//! End-to-end runs of `visionclassify` with `gst-launch-1.0` on a real video made from real
//! photos (see `vision_e2e::video`), checked against references computed here, without the
//! element, from the same photos and frames.
//!
//! Needs `cargo build -p gst-plugin-vision` first (the plugin is loaded from `target/debug`)
//! and `scripts/setup.sh` (ONNX Runtime and the photos in `.deps/`).
//!
//! The photos and what the references say (photo decoded to RGBx, averaged):
//!
//! | photo | R | G | B | dominant, lead | BT.601 luma |
//! |---|---|---|---|---|---|
//! | chelsea.png | 0.579 | 0.437 | 0.340 | red by 0.142 | 0.469 |
//! | coffee.png | 0.622 | 0.336 | 0.202 | red by 0.285 | 0.406 |
//! | astronaut.png | 0.555 | 0.415 | 0.378 | red by 0.140 | 0.453 |
//! | rocket.jpg | 0.202 | 0.234 | 0.317 | blue by 0.083 | 0.234 |
//! | motorcycle_left.png | 0.504 | 0.398 | 0.365 | red by 0.106 | 0.426 |

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use vision_e2e::inprocess::metas_at_sink;
use vision_e2e::launch::pipeline;
use vision_e2e::paths::PLUGIN_FILE;
use vision_e2e::pixels::softmax;
use vision_e2e::video::quoted;
use vision_e2e::{
    ChannelMeans, Classified, Scratch, TestVideo, command, frame_means, gray_frame_means,
    gst_inspect, gst_launch, model, parse_messages, picture_means, plugin_file, test_video,
};

/// `color3.onnx`'s labels, in channel order; its logits are `20 * mean(channel)`.
const COLOR_LABELS: [&str; 3] = ["red", "green", "blue"];
const COLOR_GAIN: f64 = 20.0;

/// A photo's label is asserted only when it wins by at least this much (0..1 scale, about
/// 13 of 255 levels): for `color3` the lead of the dominant channel, for `gray2` the distance
/// of the scaled luma from 0.5. Encoding and colour conversion move these by under 0.02.
/// All five photos pass for `color3` (leads 0.083 to 0.285); for `gray2` see
/// [`gray8_frames_give_bright_or_dark_as_their_luma_says`].
const CLEAR_MARGIN: f64 = 0.05;

/// How far the element's confidence may be from the reference's. When the element gets RGB
/// it averages the very bytes the reference averaged, so only float rounding separates them.
/// When it gets I420/NV12 it converts to RGB itself (BT.601), while the reference comes from
/// `videoconvert`'s RGB, which is up to 0.012 of confidence away on these frames.
const RGB_TOLERANCE: f64 = 0.003;
const YUV_TOLERANCE: f64 = 0.02;
/// `gray2` turns a mean-brightness difference into confidence with a slope of about 40 (twice
/// `color3`'s), and the element's large downscales go through exact 2×2 area steps, each
/// rounding to 8 bits (measured: the mean moves by ~0.0005 of full scale, 0.013 of confidence
/// on chelsea). A 2 % brightness error still moves the confidence by 0.06.
const GRAY_TOLERANCE: f64 = 0.02;

fn frame_refs(video: &TestVideo) -> Result<&'static [ChannelMeans]> {
    static REFS: OnceLock<Result<Vec<ChannelMeans>, String>> = OnceLock::new();
    REFS.get_or_init(|| frame_means(&video.path).map_err(|e| format!("{e:#}")))
        .as_deref()
        .map_err(|e| anyhow!("{e}"))
}

fn gray_refs(video: &TestVideo) -> Result<&'static [f64]> {
    static REFS: OnceLock<Result<Vec<f64>, String>> = OnceLock::new();
    REFS.get_or_init(|| gray_frame_means(&video.path).map_err(|e| format!("{e:#}")))
        .as_deref()
        .map_err(|e| anyhow!("{e}"))
}

/// Each photo's means, from the photo itself (decoded by GStreamer to RGBx, averaged here),
/// in the video's order.
fn photo_refs(video: &TestVideo) -> Result<&'static [ChannelMeans]> {
    static REFS: OnceLock<Result<Vec<ChannelMeans>, String>> = OnceLock::new();
    REFS.get_or_init(|| {
        video
            .segments
            .iter()
            .map(|s| picture_means(&s.photo))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| format!("{e:#}"))
    })
    .as_deref()
    .map_err(|e| anyhow!("{e}"))
}

/// The photo shown at a message's frame: its index in the video and its name.
fn photo_of(video: &TestVideo, m: &Classified) -> Result<(usize, &'static str)> {
    let index = video
        .segment_index(m.frame)
        .with_context(|| format!("frame {} is beyond the video", m.frame))?;
    Ok((index, video.segments[index].name))
}

/// Runs `filesrc ! decodebin ! videoconvert ! <before> visionclassify model=<model>
/// post-messages=true <props> ! fakesink` on the test video and returns its messages.
fn classify(
    video: &TestVideo,
    before: &str,
    model_name: &str,
    props: &str,
) -> Result<Vec<Classified>> {
    let model = model(model_name);
    let args = pipeline(
        &format!(
            "filesrc location={{}} ! decodebin ! videoconvert ! {before} \
             visionclassify model={{}} post-messages=true {props} ! fakesink"
        ),
        &[&video.path, &model],
    );
    let run = gst_launch(args)?.run()?;
    run.ensure_success()?;
    parse_messages(&run.stdout).with_context(|| format!("output of {}", run.command))
}

/// Every frame classified once, in order, with its PTS, by itself (batch of 1, not reused).
fn check_one_message_per_frame(video: &TestVideo, msgs: &[Classified], model: &str) -> Result<()> {
    let frames: Vec<u64> = msgs.iter().map(|m| m.frame).collect();
    let expected: Vec<u64> = (0..video.frames()).collect();
    ensure!(frames == expected, "frames in message order: {frames:?}");
    let mut last = None;
    for m in msgs {
        let ts = m
            .timestamp
            .with_context(|| format!("frame {} has no timestamp", m.frame))?;
        ensure!(
            last < Some(ts),
            "timestamp {ts} of frame {} is not after {last:?}",
            m.frame
        );
        ensure!(
            ts == m.frame * video.frame_ns(),
            "frame {} has timestamp {ts}, expected {}",
            m.frame,
            m.frame * video.frame_ns()
        );
        last = Some(ts);
        ensure!(!m.reused && m.batch_size == 1, "frame {}: {m:?}", m.frame);
        ensure!(m.model == model, "frame {}: model {}", m.frame, m.model);
    }
    Ok(())
}

/// Each message's label is its photo's dominant colour, and its confidence `color3`'s softmax
/// of the frame's reference means, within `tolerance`.
fn check_colors(video: &TestVideo, msgs: &[Classified], tolerance: f64) -> Result<()> {
    let photos = photo_refs(video)?;
    let refs = frame_refs(video)?;
    for m in msgs {
        let (index, name) = photo_of(video, m)?;
        let (channel, lead) = photos[index].dominant();
        if lead >= CLEAR_MARGIN {
            let label = COLOR_LABELS[channel];
            ensure!(
                m.best_label == label,
                "frame {} ({name}): label {}, expected {label}",
                m.frame,
                m.best_label
            );
        }
        let means = refs
            .get(m.frame as usize)
            .with_context(|| format!("no reference for frame {}", m.frame))?;
        let probs = softmax(&means.as_array().map(|x| COLOR_GAIN * x));
        let class = COLOR_LABELS
            .iter()
            .position(|l| *l == m.best_label)
            .with_context(|| format!("frame {}: unknown label {}", m.frame, m.best_label))?;
        ensure!(
            (probs[class] - m.best_confidence).abs() <= tolerance,
            "frame {} ({name}): confidence {:.4} of {}, reference {:.4} from {means}",
            m.frame,
            m.best_confidence,
            m.best_label,
            probs[class]
        );
    }
    Ok(())
}

#[test]
fn each_photo_of_a_real_video_gets_its_dominant_colour() -> Result<()> {
    let video = test_video()?;
    // videoconvert passes the decoder's I420 through: the element converts it itself.
    let msgs = classify(video, "", "color3.onnx", "")?;
    check_one_message_per_frame(video, &msgs, "color3")?;
    check_colors(video, &msgs, YUV_TOLERANCE)?;
    // The video really changes: both labels occur (rocket.jpg is the blue one).
    let blue = msgs.iter().filter(|m| m.best_label == "blue").count();
    ensure!(blue == 6, "{blue} blue frames, expected rocket.jpg's 6");
    Ok(())
}

#[test]
fn every_input_format_gives_the_same_colours() -> Result<()> {
    let video = test_video()?;
    for (format, tolerance) in [
        ("NV12", YUV_TOLERANCE),
        ("I420", YUV_TOLERANCE),
        ("BGRx", RGB_TOLERANCE),
        ("RGB", RGB_TOLERANCE),
    ] {
        let caps = format!("video/x-raw,format={format} !");
        let check = || -> Result<()> {
            let msgs = classify(video, &caps, "color3.onnx", "")?;
            check_one_message_per_frame(video, &msgs, "color3")?;
            check_colors(video, &msgs, tolerance)
        };
        check().with_context(|| format!("input format {format}"))?;
    }
    Ok(())
}

#[test]
fn batches_of_four_classify_every_second_frame() -> Result<()> {
    let video = test_video()?;
    // A file is decoded far faster than batch-timeout, so every batch fills up but the last,
    // which EOS sends as it is: 15 classified frames = 4 + 4 + 4 + 3.
    let props = "batch-size=4 inference-interval=2 batch-timeout=5000";
    let msgs = classify(video, "", "color3.onnx", props)?;
    // The bus gets one message per classified frame; reused frames are only in the meta.
    let frames: Vec<u64> = msgs.iter().map(|m| m.frame).collect();
    let expected: Vec<u64> = (0..video.frames()).step_by(2).collect();
    ensure!(frames == expected, "classified frames: {frames:?}");
    let sizes: Vec<u32> = msgs.iter().map(|m| m.batch_size).collect();
    ensure!(
        sizes == [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3],
        "batch sizes: {sizes:?}"
    );
    for m in &msgs {
        ensure!(!m.reused, "frame {} posted as reused", m.frame);
        ensure!(m.timestamp == Some(m.frame * video.frame_ns()), "{m:?}");
    }
    check_colors(video, &msgs, YUV_TOLERANCE)?;

    // Every buffer carries a meta: the odd frames reuse the frame before them.
    let metas = metas_at_sink(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! visionclassify model={} {props} \
         ! fakesink name=sink",
        quoted(&video.path),
        quoted(&model("color3.onnx"))
    ))?;
    ensure!(
        metas.len() as u64 == video.frames(),
        "{} buffers",
        metas.len()
    );
    let mut previous: Option<&Classified> = None;
    for (i, meta) in metas.iter().enumerate() {
        let m = meta
            .as_ref()
            .with_context(|| format!("buffer {i} has no meta"))?;
        let i = i as u64;
        ensure!(m.frame == i, "buffer {i} has frame {}", m.frame);
        ensure!(
            m.timestamp == Some(i * video.frame_ns()),
            "buffer {i}: {m:?}"
        );
        ensure!(m.reused == (i % 2 == 1), "buffer {i}: reused={}", m.reused);
        if m.reused {
            let p = previous.with_context(|| format!("buffer {i} reuses nothing"))?;
            ensure!(
                (m.best_label.as_str(), m.best_confidence, m.batch_size)
                    == (p.best_label.as_str(), p.best_confidence, p.batch_size),
                "buffer {i} does not carry frame {}'s result: {m:?} vs {p:?}",
                p.frame
            );
        } else {
            let posted = &msgs[(i / 2) as usize];
            ensure!(
                (m.best_label.as_str(), m.best_confidence)
                    == (posted.best_label.as_str(), posted.best_confidence),
                "buffer {i}'s meta differs from its message: {m:?} vs {posted:?}"
            );
        }
        previous = Some(m);
    }
    Ok(())
}

/// `gray2.onnx` gets the luma plane: logits `[20(m - 0.5), -20(m - 0.5)]` for the mean `m`
/// of `scale * pixel`. At its own scale (1/255) all five photos are dark, chelsea.png
/// (luma 0.469) and astronaut.png (0.453) too close to 0.5 to assert; with `scale=0.007`
/// (x1.785) four are bright and rocket.jpg stays dark (0.418).
#[test]
fn gray8_frames_give_bright_or_dark_as_their_luma_says() -> Result<()> {
    let video = test_video()?;
    let photos = photo_refs(video)?;
    let refs = gray_refs(video)?;
    for (props, gain) in [("", 1.0), ("scale=0.007", 0.007 * 255.0)] {
        let check = || -> Result<()> {
            let msgs = classify(video, "video/x-raw,format=GRAY8 !", "gray2.onnx", props)?;
            check_one_message_per_frame(video, &msgs, "gray2")?;
            let mut labels = Vec::new();
            for m in &msgs {
                let (index, name) = photo_of(video, m)?;
                let value = gain * photos[index].luma();
                if (value - 0.5).abs() >= CLEAR_MARGIN {
                    let label = if value > 0.5 { "bright" } else { "dark" };
                    ensure!(
                        m.best_label == label,
                        "frame {} ({name}, scaled luma {value:.3}): {}, expected {label}",
                        m.frame,
                        m.best_label
                    );
                }
                // The element sees exactly the GRAY8 bytes the reference averaged.
                let mean = gain * refs[m.frame as usize];
                let bright = softmax(&[20.0 * (mean - 0.5), -20.0 * (mean - 0.5)])[0];
                let expected = if m.best_label == "bright" {
                    bright
                } else {
                    1.0 - bright
                };
                ensure!(
                    (expected - m.best_confidence).abs() <= GRAY_TOLERANCE,
                    "frame {} ({name}): {} {:.4}, reference {expected:.4} (scaled mean {mean:.4})",
                    m.frame,
                    m.best_label,
                    m.best_confidence
                );
                labels.push(m.best_label.clone());
            }
            if gain > 1.0 {
                ensure!(labels.iter().any(|l| l == "bright") && labels.iter().any(|l| l == "dark"));
            }
            Ok(())
        };
        check().with_context(|| format!("gray2 with `{props}`"))?;
    }
    Ok(())
}

/// `gst-launch-1.0` of a short test-pattern pipeline with `visionclassify <props>`.
fn launch_with(props: &[String]) -> Result<vision_e2e::Launch> {
    let mut args = pipeline("videotestsrc num-buffers=5 ! visionclassify", &[]);
    args.extend(props.iter().cloned());
    args.extend(pipeline("! fakesink", &[]));
    gst_launch(args)?.run()
}

#[test]
fn bad_models_fail_with_the_file_and_the_reason() -> Result<()> {
    let missing = model("no_such_model.onnx");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            missing.display().to_string(),
            vec!["cannot open model", "No such file or directory"],
        ),
        (
            model("truncated.onnx").display().to_string(),
            vec!["cannot open model", "Protobuf parsing failed"],
        ),
        (
            model("not_onnx.onnx").display().to_string(),
            vec!["cannot open model", "Protobuf parsing failed"],
        ),
        (
            model("two_inputs_not_image.onnx").display().to_string(),
            vec!["is not an image classifier", "[-1, 10]", "4 dimensions"],
        ),
        (
            model("labels_mismatch.onnx").display().to_string(),
            vec!["vision.labels has 5 labels", "outputs 3 classes"],
        ),
    ];
    for (path, reasons) in cases {
        let run = launch_with(&[format!("model={path}")])?;
        ensure!(!run.success(), "{path}: exit code {:?}", run.code);
        let first_error = run
            .stderr
            .lines()
            .find(|l| l.starts_with("ERROR: from element"))
            .with_context(|| format!("{path}: no error in stderr:\n{}", run.stderr))?;
        ensure!(
            first_error.contains("GstVisionClassify:visionclassify0")
                && first_error.contains(&path),
            "{path}: the error does not name the element and the file: {first_error}"
        );
        for reason in reasons {
            ensure!(
                first_error.contains(reason),
                "{path}: no `{reason}` in: {first_error}"
            );
        }
    }
    let run = launch_with(&[])?;
    ensure!(!run.success(), "no model: exit code {:?}", run.code);
    ensure!(
        run.stderr.contains("property `model` is not set"),
        "no model: {}",
        run.stderr
    );
    Ok(())
}

#[test]
fn a_relocated_plugin_says_where_it_looked_for_onnx_runtime() -> Result<()> {
    let video = test_video()?;
    let scratch = Scratch::new("relocated")?;
    let dir = scratch.join("plugins");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(plugin_file()?, dir.join(PLUGIN_FILE))?;
    let ort = vision_e2e::repo_root().join(".deps/onnxruntime/lib/libonnxruntime.so");
    ensure!(
        ort.exists(),
        "{} is missing: run scripts/setup.sh",
        ort.display()
    );
    let color3 = model("color3.onnx");
    let run_with =
        |extra_props: &str, ort_env: Option<&std::path::Path>| -> Result<vision_e2e::Launch> {
            let args = pipeline(
                &format!(
                    "filesrc location={{}} ! decodebin ! videoconvert ! visionclassify model={{}} \
                 post-messages=true {extra_props} ! fakesink"
                ),
                &[&video.path, &color3],
            );
            let mut tool = gst_launch(args)?
                .env("GST_PLUGIN_PATH", &dir)
                .env("GST_REGISTRY", scratch.join("registry.bin"))
                .env_remove("ORT_DYLIB_PATH")
                .env_remove("LD_LIBRARY_PATH")
                .timeout(Duration::from_secs(120));
            if let Some(lib) = ort_env {
                tool = tool.env("ORT_DYLIB_PATH", lib);
            }
            tool.run()
        };

    let run = run_with("", None)?;
    ensure!(
        !run.success(),
        "it ran without ONNX Runtime (is libonnxruntime installed system-wide?): {}",
        run.stderr
    );
    let error = run
        .stderr
        .lines()
        .find(|l| l.starts_with("ERROR: from element"))
        .with_context(|| format!("no error in stderr:\n{}", run.stderr))?;
    for needle in [
        "could not load the ONNX Runtime library",
        "tried: ",
        &format!(
            "{}/onnxruntime/libonnxruntime.so (not found)",
            dir.display()
        ),
        "libonnxruntime.so.1",
        "ORT_DYLIB_PATH",
    ] {
        ensure!(error.contains(needle), "no `{needle}` in: {error}");
    }

    // Both ways of pointing at the library make it work.
    for (how, props, env) in [
        ("ORT_DYLIB_PATH", String::new(), Some(ort.as_path())),
        (
            "ort-library",
            format!("ort-library={}", ort.display()),
            None,
        ),
    ] {
        let run = run_with(&props, env)?;
        run.ensure_success()
            .with_context(|| format!("with {how}"))?;
        let msgs = parse_messages(&run.stdout)?;
        ensure!(
            msgs.len() as u64 == video.frames(),
            "with {how}: {} messages",
            msgs.len()
        );
    }
    Ok(())
}

#[test]
fn inspect_describes_every_property() -> Result<()> {
    let run = gst_inspect(["visionclassify"])?.run()?;
    run.ensure_success()?;
    let klass = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Klass"))
        .context("no Klass line")?
        .trim();
    ensure!(klass.contains("Analyzer"), "Klass is {klass}");

    let section = run
        .stdout
        .split_once("Element Properties:")
        .map(|(_, rest)| rest)
        .context("no `Element Properties:` section")?;
    // A property line is `  name<spaces>: description` at an indent of two.
    let props: Vec<(&str, &str)> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_once(" : ").or_else(|| l.split_once(":")))
        .map(|(name, blurb)| (name.trim(), blurb.trim()))
        .collect();
    for name in [
        "model",
        "batch-size",
        "batch-timeout",
        "execution-provider",
        "inference-interval",
        "top-k",
        "threshold",
        "target",
        "object-class",
        "min-roi-size",
        "roi-padding",
        "reclassify-interval",
        "stats",
    ] {
        ensure!(
            props.iter().any(|(n, _)| *n == name),
            "property {name} missing from: {props:?}"
        );
    }
    for (name, blurb) in &props {
        ensure!(
            blurb.len() >= 10,
            "property {name} has no real description: `{blurb}`"
        );
    }
    ensure!(
        props.len() >= 20,
        "only {} properties: {props:?}",
        props.len()
    );
    Ok(())
}

#[test]
fn the_classify_file_pipeline_prints_one_message_per_frame() -> Result<()> {
    let video = test_video()?;
    let script = vision_e2e::repo_root().join("pipelines/classify-file.sh");
    let gray2 = model("gray2.onnx");
    let run = command(
        &script,
        [
            video.path.as_os_str(),
            gray2.as_os_str(),
            "top-k=2".as_ref(),
        ],
    )?
    .run()?;
    run.ensure_success()?;
    let msgs = parse_messages(&run.stdout)?;
    check_one_message_per_frame(video, &msgs, "gray2")?;
    for m in &msgs {
        ensure!(
            m.labels.len() == 2 && m.best_label == "dark",
            "frame {}: {m:?}",
            m.frame
        );
    }
    // Only the classifications and the end are kept.
    let other = run
        .stdout
        .lines()
        .filter(|l| !l.contains("(element): visionclassify"))
        .count();
    ensure!(other <= 2, "{other} other lines:\n{}", run.stdout);

    let run = command(&script, ["--help"])?.run()?;
    ensure!(run.stdout.contains("VIDEO [MODEL]"), "{}", run.stdout);
    Ok(())
}

/// Hot reload in a running `gst-launch-1.0` pipeline (issue 13): a live source, a synced
/// sink, `watch-model=true`, and a model renamed over the watched file mid-stream, as a
/// deployment tool does. `color3_inverse.onnx` disagrees with `color3.onnx` by design, and
/// each frame's message names the model that classified it: frames before the swap get the
/// old one, frames after it the new one, and none is lost, repeated or reordered. The test
/// waits on what the pipeline prints, never on the clock (the bounds only catch a hang).
#[test]
fn a_running_pipeline_takes_a_model_renamed_over_its_file() -> Result<()> {
    let dir = Scratch::new("hot-reload")?;
    let deployed = dir.join("deployed.onnx");
    std::fs::copy(model("color3.onnx"), &deployed)?;
    let mut args = vec!["-e".to_string()];
    args.extend(pipeline(
        "videotestsrc is-live=true pattern=red ! video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! visionclassify model={} watch-model=true post-messages=true batch-size=2 batch-timeout=100 \
         ! fakesink sync=true",
        &[&deployed],
    ));
    let mut running = gst_launch(args)?.spawn()?;
    let guard = Duration::from_secs(120);
    let mut frames = 0;
    running.wait_for(guard, |l| {
        frames += usize::from(l.contains("(element): visionclassify,"));
        frames >= 10
    })?;
    let next = dir.join(".deployed.onnx.tmp");
    std::fs::copy(model("color3_inverse.onnx"), &next)?;
    std::fs::rename(&next, &deployed)?;
    running.wait_for(guard, |l| {
        l.contains("visionclassify-model") && l.contains("state=(string)loaded")
    })?;
    let mut after = 0;
    running.wait_for(guard, |l| {
        after +=
            usize::from(l.contains("(element): visionclassify,") && l.contains("color3_inverse"));
        after >= 10
    })?;
    let run = running.interrupt(guard)?;
    let msgs = parse_messages(&run.stdout)?;
    ensure!(msgs.len() >= 20, "{} messages", msgs.len());
    let numbers: Vec<u64> = msgs.iter().map(|m| m.frame).collect();
    ensure!(
        numbers == (0..msgs.len() as u64).collect::<Vec<_>>(),
        "frame numbers not contiguous: {numbers:?}"
    );
    // A live videotestsrc stamps frame n at its start time + n/30 s: none missing.
    let first = msgs[0].timestamp.context("no timestamp")?;
    for (n, m) in msgs.iter().enumerate() {
        let offset = m.timestamp.context("no timestamp")?.checked_sub(first);
        let want = n as u64 * 1_000_000_000 / 30;
        ensure!(
            offset.is_some_and(|o| o.abs_diff(want) <= 1),
            "frame {n}: {offset:?} ns after the first, want {want}"
        );
    }
    let switch = msgs
        .iter()
        .position(|m| m.model == "color3_inverse")
        .context("no frame from the new model")?;
    ensure!(switch >= 10, "switched at frame {switch}");
    ensure!(
        msgs[..switch]
            .iter()
            .all(|m| m.model == "color3" && m.best_label == "red"),
        "before the swap: {:?}",
        &msgs[..switch]
    );
    ensure!(
        msgs[switch..]
            .iter()
            .all(|m| m.model == "color3_inverse" && m.best_label != "red"),
        "after the swap: {:?}",
        &msgs[switch..]
    );
    Ok(())
}
