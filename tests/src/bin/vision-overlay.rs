//! `vision-overlay`: shows each frame's classification on the video itself, for people
//! watching: `visionclassify` puts its result on every buffer as metadata, and a pad probe in
//! front of `textoverlay` turns that buffer's result into the text drawn on that same frame.
//! `pipelines/overlay.sh` runs it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use vision_e2e::Classified;
use vision_e2e::inprocess::META_NAME;
use vision_e2e::overlay::{OVERLAY_PROPS, overlay_text};
use vision_e2e::video::quoted;

const USAGE: &str = "\
usage: vision-overlay SOURCE [--model FILE] [--png-dir DIR] [--frames N] [PROPERTY=VALUE ...]

Classifies a video and draws the label and confidence of each frame in its top-left corner.

  SOURCE          a video file, rtsp://camera/stream, or any URI uridecodebin reads
  --model FILE    ONNX classifier (default: tests/data/color3.onnx)
  --png-dir DIR   write the decorated frames as DIR/frame-00000.png ... instead of showing them
  --frames N      stop after N frames
  --sink DESC     the sink to show the video with (default: autovideosink)
  PROPERTY=VALUE  more visionclassify properties, e.g. top-k=3 inference-interval=2

Prints one line per frame: its number and the text drawn on it.";

struct Args {
    source: String,
    model: PathBuf,
    png_dir: Option<PathBuf>,
    frames: Option<u64>,
    sink: String,
    props: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut source = None;
    let mut args = Args {
        source: String::new(),
        model: vision_e2e::repo_root().join("tests/data/color3.onnx"),
        png_dir: None,
        frames: None,
        sink: "autovideosink".into(),
        props: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--model" => args.model = it.next().context("--model needs a file")?.into(),
            "--png-dir" => args.png_dir = Some(it.next().context("--png-dir needs a dir")?.into()),
            "--frames" => {
                let n = it.next().context("--frames needs a number")?;
                args.frames = Some(n.parse().with_context(|| format!("--frames {n}"))?);
            }
            "--sink" => args.sink = it.next().context("--sink needs an element")?,
            p if p.contains('=') && !p.starts_with('-') && !p.contains("://") => {
                args.props.push(p.to_string())
            }
            s if !s.starts_with('-') && source.is_none() => source = Some(s.to_string()),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    args.source = source.with_context(|| format!("no source given\n\n{USAGE}"))?;
    Ok(args)
}

/// A file path as a `file://` URI; URIs pass unchanged.
fn to_uri(source: &str) -> Result<String> {
    if source.contains("://") {
        return Ok(source.to_string());
    }
    let path = std::path::absolute(source).with_context(|| format!("source {source}"))?;
    if !path.is_file() {
        bail!("video {} does not exist", path.display());
    }
    gst::glib::filename_to_uri(&path, None)
        .map(|u| u.to_string())
        .with_context(|| format!("{} as a URI", path.display()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("vision-overlay: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    gst::init().context("initialising GStreamer")?;
    for element in ["visionclassify", "textoverlay"] {
        if gst::ElementFactory::find(element).is_none() {
            bail!(
                "the {element} element is not found (visionclassify: set GST_PLUGIN_PATH to \
                 the directory of libgstvision.so; textoverlay: Debian gstreamer1.0-x)"
            );
        }
    }
    let uri = to_uri(&args.source)?;
    let limit = args
        .frames
        // eos-after=K ends the stream at the K-th buffer: K = N + 1 lets N frames through.
        .map_or_else(String::new, |n| format!("identity eos-after={} ! ", n + 1));
    let sink = match &args.png_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            format!(
                "videoconvert ! pngenc ! multifilesink location={}",
                quoted(&dir.join("frame-%05d.png"))
            )
        }
        None => format!("videoconvert ! {}", args.sink),
    };
    // textoverlay blends in RGBx here, so that the drawn pixels do not depend on the decoder's
    // format (and a reference can be drawn the same way from the decoded frame).
    let description = format!(
        "uridecodebin uri={} ! {limit}videoconvert ! visionclassify name=classify model={} {} \
         ! videoconvert ! video/x-raw,format=RGBx ! textoverlay name=overlay {OVERLAY_PROPS} \
         ! {sink}",
        quoted(std::path::Path::new(&uri)),
        quoted(&args.model),
        args.props.join(" "),
    );
    let pipeline = gst::parse::launch(&description)
        .with_context(|| format!("building the pipeline {description}"))?;
    let bin = pipeline
        .downcast_ref::<gst::Bin>()
        .context("not a pipeline")?;
    let overlay = bin.by_name("overlay").context("no overlay element")?;
    let pad = overlay
        .static_pad("video_sink")
        .context("textoverlay has no video_sink pad")?;
    // The probe runs in the streaming thread just before textoverlay takes this buffer, so
    // the text set here is the one drawn on it.
    let overlay_weak = overlay.downgrade();
    let frame = AtomicU64::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let text = match gst::meta::CustomMeta::from_buffer(buffer, META_NAME) {
            Ok(meta) => match Classified::from_structure(String::new(), meta.structure(), None) {
                Ok(c) => overlay_text(&c),
                Err(e) => format!("(unreadable result: {e})"),
            },
            Err(_) => String::new(),
        };
        if let Some(overlay) = overlay_weak.upgrade() {
            overlay.set_property("text", text.as_str());
        }
        let n = frame.fetch_add(1, Ordering::Relaxed);
        println!("frame {n}: {}", text.replace('\n', " | "));
        gst::PadProbeReturn::Ok
    });

    let result = play(&pipeline);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn play(pipeline: &gst::Element) -> Result<()> {
    let bus = pipeline.bus().context("pipeline without bus")?;
    let _ = pipeline.set_state(gst::State::Playing);
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => bail!(
                "{}: {}{}",
                e.src().map(|s| s.name().to_string()).unwrap_or_default(),
                e.error(),
                e.debug().map(|d| format!("\n  ({d})")).unwrap_or_default()
            ),
            gst::MessageView::Warning(w) => eprintln!("warning: {}", w.error()),
            _ => {}
        }
    }
    Ok(())
}
