//! `vision-demo`: runs `visionclassify` over a video file, an RTSP camera or any URI and prints
//! one line per classified frame, then a summary. With `--broker`, `visionpublish` sends the results to that MQTT
//! broker and the lines printed are the events this program receives back as a subscriber. `scripts/demo.sh` builds and runs it; run it by hand with
//! `GST_PLUGIN_PATH=target/release target/release/vision-demo --help`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gstvision::redact::uri_credentials;
use vision_e2e::video::{FRAMES_PER_PHOTO, PHOTOS, encode_photos, quoted};
use vision_e2e::{Classified, photo, repo_root};

const USAGE: &str = "\
usage: vision-demo [--video FILE | --rtsp URL | --uri URI] [--model FILE] [--broker URI]
                   [--frames N] [PROPERTY=VALUE ...]

Classifies every frame of a video with the visionclassify element and prints
timestamp, label and confidence per classified frame, then a summary.

  --video FILE   video to classify (default: a video encoded from the test photos
                 in .deps/data/photos, written to target/vision-demo/photos.webm)
  --rtsp URL     an RTSP camera, rtsp://[user:password@]host[:port]/path (H.264 needs
                 avdec_h264 from gstreamer1.0-libav); RTP comes over the RTSP TCP
                 connection, so no frame is lost to dropped UDP packets
  --uri URI      any source uridecodebin reads (file://, rtsp://, http://, ...)
  --frames N     stop after N frames (a camera does not end by itself)
  --model FILE   ONNX classifier (default: tests/data/color3.onnx)
  --broker URI   publish the results with visionpublish to this MQTT broker
                 (mqtt://host:port) and print the events received back from it
  PROPERTY=VALUE more visionclassify properties, e.g. batch-size=4 top-k=2

The plugin is found through GST_PLUGIN_PATH (scripts/demo.sh sets it).";

struct Args {
    video: Option<PathBuf>,
    uri: Option<String>,
    frames: Option<u64>,
    model: PathBuf,
    broker: Option<String>,
    props: Vec<String>,
}

/// The sensor id the demo publishes as; its events go to `vision/demo/classifications`.
const SENSOR: &str = "demo";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        video: None,
        uri: None,
        frames: None,
        model: repo_root().join("tests/data/color3.onnx"),
        broker: None,
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
            "--rtsp" => {
                let url = it.next().context("--rtsp needs a URL")?;
                if !url.starts_with("rtsp") || !url.contains("://") {
                    bail!("--rtsp {url}: not an rtsp:// URL");
                }
                args.uri = Some(url);
            }
            "--uri" => {
                let uri = it.next().context("--uri needs a URI")?;
                if !uri.contains("://") {
                    bail!("--uri {uri}: not a URI (scheme://...)");
                }
                args.uri = Some(uri);
            }
            "--frames" => {
                let n = it.next().context("--frames needs a number")?;
                args.frames = Some(n.parse().with_context(|| format!("--frames {n}"))?);
            }
            "--model" => args.model = it.next().context("--model needs a file")?.into(),
            "--broker" => args.broker = Some(it.next().context("--broker needs a URI")?),
            p if p.contains('=') && !p.starts_with('-') => args.props.push(p.to_string()),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    if args.video.is_some() && args.uri.is_some() {
        bail!("give either --video or --rtsp/--uri, not both");
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
    let source = match (&args.uri, args.video) {
        (Some(uri), _) => {
            println!("source: {}", uri_credentials(uri));
            if uri.starts_with("rtsp://") || uri.starts_with("rtsps://") {
                // RTP over the RTSP connection (TCP): a loaded gateway or network drops UDP
                // packets, and with them whole frames; TCP delays them instead.
                format!(
                    "rtspsrc location={} protocols=tcp latency=200 ! decodebin",
                    quoted(Path::new(uri))
                )
            } else {
                format!("uridecodebin uri={}", quoted(Path::new(uri)))
            }
        }
        (None, video) => {
            let video = match video {
                Some(v) => v,
                None => encode_demo_video()?,
            };
            if !video.is_file() {
                bail!("video {} does not exist", video.display());
            }
            println!("video: {}", video.display());
            format!("filesrc location={} ! decodebin", quoted(&video))
        }
    };
    let limit = args
        .frames
        // eos-after=K ends the stream at the K-th buffer: K = N + 1 lets N frames through.
        .map_or_else(String::new, |n| format!("identity eos-after={} ! ", n + 1));
    println!("model: {}", args.model.display());

    // With a broker the printed lines come back over MQTT, so subscribe before publishing.
    let (events, publish) = match &args.broker {
        None => (None, String::new()),
        Some(uri) => {
            println!(
                "broker: {} (topic vision/{SENSOR}/classifications)",
                uri_credentials(uri)
            );
            let spool = vision_e2e::paths::target_dir().join("vision-demo/spool");
            (
                Some(subscribe(uri)?),
                format!(
                    "! visionpublish broker={uri} sensor-id={SENSOR} spool-dir={} ",
                    quoted(&spool)
                ),
            )
        }
    };
    let description = format!(
        "{source} ! {limit}videoconvert ! visionclassify name=classify model={} \
         post-messages={} {} {publish}! fakesink",
        quoted(&args.model),
        events.is_none(),
        args.props.join(" ")
    );
    let pipeline = gst::parse::launch(&description)
        .with_context(|| format!("building the pipeline {description}"))?;
    let result = play(&pipeline, events);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Subscribes to the demo's event topic (QoS 1) and returns the events as they arrive.
fn subscribe(uri: &str) -> Result<mpsc::Receiver<serde_json::Value>> {
    let rest = uri
        .strip_prefix("mqtt://")
        .context("the demo subscribes over plain mqtt:// only")?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().context("broker port")?),
        None => (rest.to_string(), 1883),
    };
    let mut options =
        rumqttc::MqttOptions::new(format!("vision-demo-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    client
        .subscribe(
            format!("vision/{SENSOR}/classifications"),
            rumqttc::QoS::AtLeastOnce,
        )
        .context("subscribing")?;
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _client = client; // keeps the connection open
        for notification in connection.iter() {
            match notification {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = ready_tx.send(Ok(()));
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice(&p.payload)
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(rx),
        Ok(Err(e)) => bail!("cannot reach the broker {uri}: {e}"),
        Err(_) => bail!("no answer from the broker {uri} within 10 s"),
    }
}

/// A received event as the line printer's [`Classified`].
fn from_event(v: &serde_json::Value) -> Option<Classified> {
    let object = v["objects"].get(0)?;
    let best = &object["classification"];
    let classes = object["classes"].as_array()?;
    Some(Classified {
        element: "visionpublish".into(),
        model: v["model"].as_str()?.to_string(),
        best_label: best["label"].as_str()?.to_string(),
        best_class_id: best["label_id"].as_u64()? as u32,
        best_confidence: best["confidence"].as_f64()?,
        below_threshold: object["below_threshold"].as_bool().unwrap_or(false),
        labels: classes
            .iter()
            .filter_map(|c| c["label"].as_str().map(str::to_string))
            .collect(),
        confidences: classes
            .iter()
            .filter_map(|c| c["confidence"].as_f64())
            .collect(),
        frame: v["frame"].as_u64()?,
        timestamp: v["timestamp"].as_u64(),
        reused: object["reused"].as_bool().unwrap_or(false),
        batch_size: 0,
        inference_ns: 0,
    })
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

fn play(pipeline: &gst::Element, events: Option<mpsc::Receiver<serde_json::Value>>) -> Result<()> {
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
    if let Some(events) = events {
        // Every frame's event should come back; give the broker a moment after EOS.
        let expected = stats.get::<u64>("frames").unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while classified < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(event) = events.recv_timeout(left) else {
                eprintln!("warning: {classified} of {expected} events came back from the broker");
                break;
            };
            let Some(c) = from_event(&event) else {
                eprintln!("warning: an event without a classification: {event}");
                continue;
            };
            if classified == 0 {
                println!(
                    "\nevents received over MQTT\n{:>13}  {:>6}  {:<16} {:>10}",
                    "timestamp", "frame", "label", "confidence"
                );
            }
            print_line(&c, c.timestamp.map(gst::ClockTime::from_nseconds));
            classified += 1;
            *labels.entry(label_of(&c)).or_default() += 1;
        }
    }
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
