//! `vision-demo`: runs `visionclassify` over a video file and prints one line per classified
//! frame, then a summary. `scripts/demo.sh` builds and runs it; run it by hand with
//! `GST_PLUGIN_PATH=target/release target/release/vision-demo --help`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use vision_e2e::video::{FRAMES_PER_PHOTO, PHOTOS, encode_photos, quoted};
use vision_e2e::{Classified, photo, repo_root};

const USAGE: &str = "\
usage: vision-demo [--video FILE] [--model FILE] [PROPERTY=VALUE ...]

Classifies every frame of a video with the visionclassify element and prints
timestamp, label and confidence per classified frame, then a summary.

  --video FILE   video to classify (default: a video encoded from the test photos
                 in .deps/data/photos, written to target/vision-demo/photos.webm)
  --model FILE   ONNX classifier (default: tests/data/color3.onnx)
  PROPERTY=VALUE more visionclassify properties, e.g. batch-size=4 top-k=2

The plugin is found through GST_PLUGIN_PATH (scripts/demo.sh sets it).";

struct Args {
    video: Option<PathBuf>,
    model: PathBuf,
    props: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        video: None,
        model: repo_root().join("tests/data/color3.onnx"),
        props: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--video" => args.video = Some(it.next().context("--video needs a file")?.into()),
            "--model" => args.model = it.next().context("--model needs a file")?.into(),
            p if p.contains('=') && !p.starts_with('-') => args.props.push(p.to_string()),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(args)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("vision-demo: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    gst::init().context("initialising GStreamer")?;
    if gst::ElementFactory::find("visionclassify").is_none() {
        bail!(
            "the visionclassify element is not found: build it with `cargo build --release -p \
             gst-plugin-vision` and set GST_PLUGIN_PATH to the directory holding \
             libgstvision.so (scripts/demo.sh does both)"
        );
    }
    let video = match args.video {
        Some(v) => v,
        None => encode_demo_video()?,
    };
    if !video.is_file() {
        bail!("video {} does not exist", video.display());
    }
    println!("video: {}", video.display());
    println!("model: {}", args.model.display());

    let description = format!(
        "filesrc location={} ! decodebin ! videoconvert ! visionclassify name=classify model={} \
         post-messages=true {} ! fakesink",
        quoted(&video),
        quoted(&args.model),
        args.props.join(" ")
    );
    let pipeline = gst::parse::launch(&description)
        .with_context(|| format!("building the pipeline {description}"))?;
    let result = play(&pipeline);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Encodes the test photos into `target/vision-demo/photos.webm`.
fn encode_demo_video() -> Result<PathBuf> {
    let photos = PHOTOS
        .iter()
        .map(|name| photo(name))
        .collect::<Result<Vec<_>>>()?;
    let dir = vision_e2e::paths::target_dir().join("vision-demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join("photos.webm");
    println!(
        "encoding {} photos from .deps/data/photos into {} ...",
        photos.len(),
        out.display()
    );
    encode_photos(&photos, FRAMES_PER_PHOTO, &out)?;
    Ok(out)
}

fn play(pipeline: &gst::Element) -> Result<()> {
    let bin = pipeline
        .downcast_ref::<gst::Bin>()
        .context("not a pipeline")?;
    let classify = bin.by_name("classify").context("no classify element")?;
    let bus = pipeline.bus().context("pipeline without bus")?;
    let started = Instant::now();
    // An error from the element's start() (bad model, no ONNX Runtime) comes on the bus.
    let _ = pipeline.set_state(gst::State::Playing);

    let mut labels: BTreeMap<String, u64> = BTreeMap::new();
    let mut classified = 0u64;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        use gst::MessageView;
        match msg.view() {
            MessageView::Element(e) => {
                let Some(s) = e.structure().filter(|s| s.name() == "visionclassify") else {
                    continue;
                };
                let ts = s
                    .get::<u64>("timestamp")
                    .ok()
                    .filter(|t| *t != u64::MAX)
                    .map(gst::ClockTime::from_nseconds);
                let c = Classified::from_structure(String::new(), s, ts.map(|t| t.nseconds()))?;
                if classified == 0 {
                    println!(
                        "\n{:>13}  {:>6}  {:<16} {:>10}",
                        "timestamp", "frame", "label", "confidence"
                    );
                }
                print_line(&c, ts);
                classified += 1;
                *labels.entry(label_of(&c)).or_default() += 1;
            }
            MessageView::Warning(w) => eprintln!("warning: {}", w.error()),
            MessageView::Error(e) => {
                bail!(
                    "{}: {}{}",
                    e.src().map(|s| s.name().to_string()).unwrap_or_default(),
                    e.error(),
                    e.debug().map(|d| format!("\n  ({d})")).unwrap_or_default()
                );
            }
            MessageView::Eos(_) => break,
            _ => {}
        }
    }
    let wall = started.elapsed();
    let stats = classify.property::<gst::Structure>("stats");
    summary(&stats, classified, &labels, wall);
    Ok(())
}

fn label_of(c: &Classified) -> String {
    if c.below_threshold {
        format!("(below threshold: {})", c.best_label)
    } else {
        c.best_label.clone()
    }
}

fn print_line(c: &Classified, ts: Option<gst::ClockTime>) {
    let ts = ts.map_or_else(|| "none".to_string(), |t| format!("{t:.3}"));
    let mut line = format!(
        "{ts:>13}  {:>6}  {:<16} {:>10.3}",
        c.frame,
        label_of(c),
        c.best_confidence
    );
    // With top-k > 1, the runners-up follow.
    for (label, conf) in c.labels.iter().zip(&c.confidences).skip(1) {
        line.push_str(&format!("  {label} {conf:.3}"));
    }
    println!("{line}");
}

fn summary(
    stats: &gst::Structure,
    classified: u64,
    labels: &BTreeMap<String, u64>,
    wall: std::time::Duration,
) {
    let get_u = |f: &str| stats.get::<u64>(f).unwrap_or(0);
    let get_f = |f: &str| stats.get::<f64>(f).unwrap_or(0.0);
    let frames = get_u("frames");
    println!("\nsummary");
    println!(
        "  frames:           {frames} ({classified} classified, {} batches)",
        get_u("batches")
    );
    println!(
        "  inference:        {:.3} ms mean, {:.3} ms max per batch",
        get_f("mean-inference-ms"),
        get_f("max-inference-ms")
    );
    let wall_fps = if wall.as_secs_f64() > 0.0 {
        frames as f64 / wall.as_secs_f64()
    } else {
        0.0
    };
    println!(
        "  speed:            {:.1} fps (element stats), {wall_fps:.1} fps over {:.2} s wall time (with start-up)",
        get_f("fps"),
        wall.as_secs_f64()
    );
    let mut counts: Vec<(&String, &u64)> = labels.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let seen: Vec<String> = counts.iter().map(|(l, n)| format!("{l} x{n}")).collect();
    println!("  labels:           {}", seen.join(", "));
}
