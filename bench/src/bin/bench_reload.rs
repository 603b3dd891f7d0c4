//! `bench_reload`: hot reload and capture costs of `visionclassify` (issue 13).
//!
//! ```text
//! cargo run --release -p vision-bench --bin bench_reload -- [--model PATH] [--reloads N]
//!     [--batch B] [--timeout MS] [--frames N] [--rounds R] [--json PATH]
//! ```
//!
//! 1. **Reload:** a live 30 frames/s stream of 1080p RGB (`appsrc is-live` fed on the clock)
//!    `! visionclassify ! appsink sync=true`; every 90 frames `model` is set to a copy of the
//!    model (another file, so each reload really opens, checks, test-runs and warms up a new
//!    session). Reported per reload: the time from the property set until the replacement
//!    was accepted (`visionclassify-model` state `loaded`) and until the first frame
//!    classified by it left the element; and the lateness of frames (when a frame left the
//!    element after it entered it) around the swap against the frames before the first
//!    reload, in the same run. The target: no frame later than one `batch-timeout` plus one
//!    inference.
//! 2. **Capture cost:** `appsrc ! visionclassify ! fakesink sync=false` as fast as it goes,
//!    with and without `capture-dir` (`capture-below=0.0001`: armed, nothing qualifies),
//!    interleaved rounds, medians: the frame rate ratio (target ≥ 0.99) and CPU time per
//!    frame.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gst::prelude::*;

#[allow(dead_code)]
#[path = "../cpu.rs"]
mod cpu;
#[allow(dead_code)]
#[path = "../frames.rs"]
mod frames;
#[path = "../median.rs"]
mod median;
use cpu::CpuTimes;
use frames::Frames;
use median::median;

const USAGE: &str = "\
usage: bench_reload [options]
  --model PATH        classifier (default: models/efficientnet-lite0.onnx, from vision-trainer import)
  --reloads N         reloads in the live run (default 5)
  --batch B           batch-size (default 1)
  --timeout MS        batch-timeout (default 50)
  --frames N          frames per capture-cost round (default 200)
  --rounds R          interleaved capture-cost rounds (default 5)
  --json PATH         also write the figures as JSON
  --ort-library PATH  libonnxruntime.so (default: $ORT_DYLIB_PATH, else the project's .deps)";

struct Args {
    model: PathBuf,
    ort_library: PathBuf,
    reloads: usize,
    batch: u32,
    timeout_ms: u32,
    frames: usize,
    rounds: usize,
    json: Option<PathBuf>,
}

impl Args {
    fn parse() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest);
        let mut a = Args {
            model: root.join("models/efficientnet-lite0.onnx"),
            ort_library: std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".deps/onnxruntime/lib/libonnxruntime.so")),
            reloads: 5,
            batch: 1,
            timeout_ms: 50,
            frames: 200,
            rounds: 5,
            json: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let bad = || format!("{flag} {value}: not a valid value\n{USAGE}");
            match flag.as_str() {
                "--model" => a.model = value.into(),
                "--ort-library" => a.ort_library = value.into(),
                "--reloads" => a.reloads = value.parse().with_context(bad)?,
                "--batch" => a.batch = value.parse().with_context(bad)?,
                "--timeout" => a.timeout_ms = value.parse().with_context(bad)?,
                "--frames" => a.frames = value.parse().with_context(bad)?,
                "--rounds" => a.rounds = value.parse().with_context(bad)?,
                "--json" => a.json = Some(value.into()),
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        if !a.model.is_file() {
            bail!(
                "{} does not exist: run `vision-trainer import --out {}` or give --model",
                a.model.display(),
                a.model.display()
            );
        }
        if a.reloads == 0 || a.frames == 0 || a.rounds == 0 {
            bail!("--reloads, --frames and --rounds must be at least 1");
        }
        Ok(a)
    }
}

/// One frame's way through the element in the live run.
#[derive(Debug, Clone, Copy)]
struct Passage {
    entered: Instant,
    left: Option<Instant>,
}

struct Reload {
    loaded_ms: f64,
    first_frame_ms: f64,
    /// Latest frame around the swap (the frames from the set until 30 after the first new
    /// one), in ms.
    worst_late_ms: f64,
}

/// The live run: per reload its figures, then the median and the longest passage of the
/// frames before the first reload.
fn live_run(args: &Args, frames: &Frames, copies: &[PathBuf]) -> Result<(Vec<Reload>, f64, f64)> {
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&frames.caps)
        .is_live(true)
        .format(gst::Format::Time)
        .build();
    let classify = gst::ElementFactory::make("visionclassify")
        .property("model", args.model.to_string_lossy().as_ref())
        .property("ort-library", args.ort_library.to_string_lossy().as_ref())
        .property("batch-size", args.batch)
        .property("batch-timeout", args.timeout_ms)
        .build()?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .build()?;
    pipeline.add_many([src.upcast_ref(), &classify, &sink])?;
    gst::Element::link_many([src.upcast_ref(), &classify, &sink])?;

    let total = 90 * (args.reloads + 1);
    let passages: Arc<Mutex<Vec<Passage>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    // Frames leave in order: the n-th buffer out is the n-th in.
    let out = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (passages, out) = (passages.clone(), out.clone());
        let srcpad = classify.static_pad("src").context("src pad")?;
        srcpad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let now = Instant::now();
            if info.buffer().is_some() {
                let n = out.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Ok(mut p) = passages.lock()
                    && let Some(p) = p.get_mut(n)
                {
                    p.left = Some(now);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let bus = pipeline.bus().context("bus")?;
    // The model messages, stamped when they are posted (on the poster's thread).
    let stamped: Arc<Mutex<Vec<(Instant, gst::Message)>>> = Arc::default();
    {
        let stamped = stamped.clone();
        bus.set_sync_handler(move |_, msg| {
            if let gst::MessageView::Element(e) = msg.view()
                && e.structure()
                    .is_some_and(|s| s.name() == "visionclassify-model")
                && let Ok(mut m) = stamped.lock()
            {
                m.push((Instant::now(), msg.clone()));
            }
            gst::BusSyncReply::Pass
        });
    }
    pipeline.set_state(gst::State::Playing)?;
    let clock_start = Instant::now();
    let frame = Duration::from_secs(1) / 30;
    let mut reload_at = Vec::new();
    for i in 0..total {
        // On the clock: frame i enters at i/30 s.
        let due = clock_start + frame * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if i % 90 == 45 && i > 45 && reload_at.len() < args.reloads {
            let k = reload_at.len();
            classify.set_property("model", copies[k].to_string_lossy().as_ref());
            reload_at.push((i, Instant::now()));
        }
        if let Ok(mut p) = passages.lock() {
            p.push(Passage {
                entered: Instant::now(),
                left: None,
            });
        }
        src.push_buffer(frames.buffer(i))
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
    }
    src.end_of_stream()
        .map_err(|e| anyhow::anyhow!("eos: {e:?}"))?;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => bail!("pipeline error: {}", e.error()),
            _ => {}
        }
    }
    let mut loaded = Vec::new();
    // (generation, frame index) of the stream's first frame from each new model.
    let mut live = Vec::new();
    for (at, msg) in stamped.lock().map_err(|_| anyhow::anyhow!("lock"))?.iter() {
        let Some(s) = msg.structure() else {
            continue;
        };
        match s.get::<&str>("state") {
            Ok("loaded") => loaded.push(*at),
            Ok("rejected") => bail!("a reload was refused: {s}"),
            Ok("live") => {
                if let Ok(Some(pts)) = s.get::<Option<gst::ClockTime>>("timestamp") {
                    let index = (pts.nseconds() * 30 + 500_000_000) / 1_000_000_000;
                    live.push((s.get::<u64>("generation").unwrap_or(0), index as usize));
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    let passages = passages
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .clone();
    if passages.iter().any(|p| p.left.is_none()) {
        bail!("a frame did not leave the element");
    }
    let late = |p: &Passage| {
        p.left
            .map_or(0.0, |l| l.duration_since(p.entered).as_secs_f64() * 1e3)
    };
    let first_reload = reload_at.first().map_or(passages.len(), |r| r.0);
    let before: Vec<f64> = passages[30..first_reload].iter().map(late).collect();
    let typical = median(before.iter().copied());
    let worst_before = before.iter().copied().fold(0.0, f64::max);
    let mut reloads = Vec::new();
    for (k, &(at, set)) in reload_at.iter().enumerate() {
        let generation = k as u64 + 2;
        let first_new = live
            .iter()
            .find(|l| l.0 == generation)
            .map(|l| l.1)
            .filter(|&i| i < passages.len())
            .context("no frame from a reloaded model")?;
        let first_left = passages[first_new].left.unwrap_or(set);
        let end = (first_new + 30).min(passages.len());
        let worst = passages[at..end].iter().map(late).fold(0.0, f64::max);
        reloads.push(Reload {
            loaded_ms: loaded
                .get(k)
                .map_or(f64::NAN, |l| l.duration_since(set).as_secs_f64() * 1e3),
            first_frame_ms: first_left.duration_since(set).as_secs_f64() * 1e3,
            worst_late_ms: worst,
        });
    }
    Ok((reloads, typical, worst_before))
}

/// Frames per second and CPU ms per frame of one as-fast-as-possible run.
fn capture_run(args: &Args, frames: &Frames, capture: Option<&Path>) -> Result<(f64, f64)> {
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&frames.caps)
        .format(gst::Format::Time)
        .max_bytes(frames.frame_size() as u64 * 4)
        .block(true)
        .build();
    let classify = gst::ElementFactory::make("visionclassify")
        .property("model", args.model.to_string_lossy().as_ref())
        .property("ort-library", args.ort_library.to_string_lossy().as_ref())
        .property("batch-size", args.batch)
        .build()?;
    if let Some(dir) = capture {
        classify.set_property("capture-dir", dir.to_string_lossy().as_ref());
        classify.set_property("capture-below", 0.0001f64);
    }
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()?;
    pipeline.add_many([src.upcast_ref(), &classify, &sink])?;
    gst::Element::link_many([src.upcast_ref(), &classify, &sink])?;
    pipeline.set_state(gst::State::Playing)?;
    let warm = 10;
    for i in 0..warm {
        src.push_buffer(frames.buffer(i))
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
    }
    let cpu = CpuTimes::now();
    let started = Instant::now();
    for i in warm..warm + args.frames {
        src.push_buffer(frames.buffer(i))
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
    }
    src.end_of_stream()
        .map_err(|e| anyhow::anyhow!("eos: {e:?}"))?;
    let bus = pipeline.bus().context("bus")?;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(600)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => bail!("pipeline error: {}", e.error()),
            _ => {}
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_ms, _) = CpuTimes::now().per_frame_since(&cpu, args.frames);
    pipeline.set_state(gst::State::Null)?;
    Ok((args.frames as f64 / elapsed, cpu_ms))
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    gst::init()?;
    gstvision::plugin_register_static()?;
    let frames = Frames::make("RGB", 1920, 1080)?;
    let scratch = std::env::temp_dir().join(format!("bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let stem = args
        .model
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let copies: Vec<PathBuf> = (0..args.reloads)
        .map(|k| scratch.join(format!("{stem}-reload-{k}.onnx")))
        .collect();
    for c in &copies {
        std::fs::copy(&args.model, c)?;
    }

    println!(
        "model {} (reloaded from copies), 1080p RGB at 30 frames/s, batch-size {}, batch-timeout {} ms",
        args.model.display(),
        args.batch,
        args.timeout_ms
    );
    let (reloads, typical, worst_before) = live_run(&args, &frames, &copies)?;
    println!(
        "before the first reload: frames spend {typical:.1} ms in the element (median), {worst_before:.1} ms at most"
    );
    println!(
        "reload | accepted after ms | first new frame out after ms | latest frame around the swap ms"
    );
    for (k, r) in reloads.iter().enumerate() {
        println!(
            "{k:>6} | {:>17.0} | {:>28.0} | {:>31.1}",
            r.loaded_ms, r.first_frame_ms, r.worst_late_ms
        );
    }
    let bound = f64::from(args.timeout_ms) + typical;
    let worst = reloads.iter().map(|r| r.worst_late_ms).fold(0.0, f64::max);
    println!(
        "target: no frame later than batch-timeout + one inference = {bound:.1} ms (inference taken as the median passage); worst around a swap {worst:.1} ms, worst before any reload {worst_before:.1} ms"
    );

    let dir = scratch.join("capture");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        without.push(capture_run(&args, &frames, None)?);
        with.push(capture_run(&args, &frames, Some(&dir))?);
    }
    let captured = std::fs::read_dir(&dir).map_or(0, |d| d.count());
    let fps = |v: &[(f64, f64)]| median(v.iter().map(|r| r.0));
    let cpu = |v: &[(f64, f64)]| median(v.iter().map(|r| r.1));
    let ratio = fps(&with) / fps(&without);
    println!(
        "capture armed, nothing captured ({captured} class folders written): {:.1} vs {:.1} fps = {ratio:.3}x, CPU {:.2} vs {:.2} ms/frame (medians of {} interleaved rounds)",
        fps(&with),
        fps(&without),
        cpu(&with),
        cpu(&without),
        args.rounds
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "model": args.model.display().to_string(),
            "batch_size": args.batch,
            "batch_timeout_ms": args.timeout_ms,
            "passage_median_ms": typical,
            "passage_max_before_ms": worst_before,
            "reloads": reloads.iter().map(|r| serde_json::json!({
                "accepted_ms": r.loaded_ms,
                "first_new_frame_ms": r.first_frame_ms,
                "latest_frame_ms": r.worst_late_ms,
            })).collect::<Vec<_>>(),
            "bound_ms": bound,
            "capture": {
                "fps_with": fps(&with),
                "fps_without": fps(&without),
                "ratio": ratio,
                "cpu_ms_with": cpu(&with),
                "cpu_ms_without": cpu(&without),
            },
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
