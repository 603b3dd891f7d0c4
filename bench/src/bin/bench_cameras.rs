//! `bench_cameras`: N cameras of 1080p frames in one process, three ways, on the same model,
//! threads and frames: one shared engine (`model-instance-id`, batch-size N), private
//! engines (one session per camera, the same batch settings), and the bare ONNX Runtime
//! session at batch N (plus the element's preprocessing cost measured alone, for the bound
//! the pipeline can reach at best).
//!
//! Each (mode, N) runs in a child process of its own, so its peak RSS is its own. Rounds are
//! interleaved and medians reported; ratios are taken against baselines measured in the
//! same run.
//!
//! ```text
//! cargo run --release -p vision-bench --bin bench_cameras -- [--model PATH] [--cameras 1,2,4,8]
//!     [--frames N] [--threads T] [--batch-timeout MS] [--rounds R] [--json PATH]
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gstvision::classify::video;
use gstvision::model::{BatchInput, Overrides, Runner, RunnerConfig};
use gstvision::preprocess::{Preprocessor, SlotMut};

// Shared with vision-bench, which uses all of it.
#[allow(dead_code)]
#[path = "../frames.rs"]
mod frames;
#[path = "../median.rs"]
mod median;
use frames::Frames;
use median::median;

/// Every camera plays the same pool of 1080p RGB frames (camera i starts i frames in).
const FRAMES: (&str, u32, u32) = ("RGB", 1920, 1080);

const USAGE: &str = "\
usage: bench_cameras [options]
  --model PATH          ONNX classifier (default: models/efficientnet-lite0.onnx)
  --cameras 1,2,4,8     numbers of cameras (default 1,2,4,8)
  --frames N            frames per camera per run (default 60)
  --threads T           ONNX Runtime intra-op threads of every session (default 1)
  --batch-timeout MS    visionclassify batch-timeout (default 50)
  --batch B             batch-size of every engine (default: the number of cameras)
  --provider P          execution-provider of every session: cpu, cuda, tensorrt (default cpu);
                        on a GPU each child also reports its GPU memory (nvidia-smi)
  --shared-workers K    inference-workers of the shared engine (default 1; private engines 1 each)
  --rounds R            interleaved repetitions, medians reported (default 3)
  --ort-library PATH    libonnxruntime.so (default: $ORT_DYLIB_PATH, else the project's .deps)
  --json PATH           also write the results as JSON";

#[derive(Debug, Clone)]
struct Args {
    model: PathBuf,
    ort_library: PathBuf,
    cameras: Vec<usize>,
    frames: usize,
    threads: usize,
    timeout_ms: u32,
    shared_workers: usize,
    provider: String,
    /// Fixed batch-size; `None`: the number of cameras.
    batch: Option<usize>,
    rounds: usize,
    json: Option<PathBuf>,
    /// Internal: run one measurement (`shared`, `private` or `bare`) with N cameras.
    child: Option<(String, usize)>,
}

impl Args {
    fn parse() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest);
        let mut a = Self {
            model: root.join("models/efficientnet-lite0.onnx"),
            ort_library: std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".deps/onnxruntime/lib/libonnxruntime.so")),
            cameras: vec![1, 2, 4, 8],
            frames: 60,
            threads: 1,
            timeout_ms: 50,
            shared_workers: 1,
            batch: None,
            provider: "cpu".into(),
            rounds: 3,
            json: None,
            child: None,
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
                "--cameras" => {
                    a.cameras = value
                        .split(',')
                        .map(|v| v.trim().parse())
                        .collect::<Result<_, _>>()
                        .with_context(bad)?
                }
                "--frames" => a.frames = value.parse().with_context(bad)?,
                "--threads" => a.threads = value.parse().with_context(bad)?,
                "--batch-timeout" => a.timeout_ms = value.parse().with_context(bad)?,
                "--shared-workers" => a.shared_workers = value.parse().with_context(bad)?,
                "--batch" => a.batch = Some(value.parse().with_context(bad)?),
                "--provider" => {
                    if !["cpu", "cuda", "tensorrt"].contains(&value.as_str()) {
                        bail!("{}", bad());
                    }
                    a.provider = value
                }
                "--rounds" => a.rounds = value.parse().with_context(bad)?,
                "--json" => a.json = Some(value.into()),
                "--child" => {
                    let (mode, n) = value.split_once(':').with_context(bad)?;
                    a.child = Some((mode.to_string(), n.parse().with_context(bad)?));
                }
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        if a.frames == 0 || a.rounds == 0 || a.cameras.contains(&0) {
            bail!("--frames, --rounds and every camera count must be at least 1");
        }
        Ok(a)
    }
}

/// What one child measured.
#[derive(Debug, Clone, Default)]
struct Measure {
    total_fps: f64,
    mean_fill: f64,
    p50_ms: f64,
    p95_ms: f64,
    rss_mib: f64,
    /// GPU memory of the process (NaN on the CPU).
    gpu_mib: f64,
    /// bare only: preprocessing of one 1080p frame, milliseconds.
    prep_ms: f64,
}

impl Measure {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total_fps": self.total_fps, "mean_fill": self.mean_fill, "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms, "rss_mib": self.rss_mib, "prep_ms": self.prep_ms,
            "gpu_mib": self.gpu_mib,
        })
    }

    fn from_json(v: &serde_json::Value) -> Self {
        let f = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        Self {
            total_fps: f("total_fps"),
            mean_fill: f("mean_fill"),
            p50_ms: f("p50_ms"),
            p95_ms: f("p95_ms"),
            rss_mib: f("rss_mib"),
            gpu_mib: f("gpu_mib"),
            prep_ms: f("prep_ms"),
        }
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// GPU memory this process holds, from `nvidia-smi` (NaN without a GPU).
fn gpu_mib() -> f64 {
    let pid = std::process::id().to_string();
    Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                let (p, mib) = l.split_once(',')?;
                (p.trim() == pid).then(|| mib.trim().parse::<f64>().ok())?
            })
        })
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// N × `appsrc ! visionclassify ! fakesink` in one pipeline, every camera pushed by its own
/// thread as fast as the element takes frames.
fn run_pipeline(args: &Args, n: usize, shared: bool) -> Result<Measure> {
    let frames_pool = Frames::make(FRAMES.0, FRAMES.1, FRAMES.2)?;
    let (caps, pool) = (frames_pool.caps, frames_pool.buffers);
    let pipeline = gst::Pipeline::new();
    let pushed: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut sources = Vec::new();
    let mut classifiers = Vec::new();
    for cam in 0..n {
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .block(true)
            .max_buffers(2)
            .build();
        let classify = gst::ElementFactory::make("visionclassify")
            .name(format!("cam{cam}"))
            .property("model", args.model.to_string_lossy().as_ref())
            .property("ort-library", args.ort_library.to_string_lossy().as_ref())
            .property("threads", args.threads as u32)
            .property("batch-size", args.batch.unwrap_or(n) as u32)
            .property("batch-timeout", args.timeout_ms)
            .property_from_str("execution-provider", &args.provider)
            .property("strict-provider", true)
            .build()?;
        if shared {
            classify.set_property("model-instance-id", "bench");
            classify.set_property("inference-workers", args.shared_workers.max(1) as u32);
        }
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()?;
        pipeline.add_many([src.upcast_ref(), &classify, &sink])?;
        gst::Element::link_many([src.upcast_ref(), &classify, &sink])?;
        let enter = pushed.clone();
        classify.static_pad("sink").context("sink pad")?.add_probe(
            gst::PadProbeType::BUFFER,
            move |_, info| {
                if let Some(pts) = info.buffer().and_then(|b| b.pts())
                    && let Ok(mut m) = enter.lock()
                {
                    m.insert((cam, pts.nseconds()), Instant::now());
                }
                gst::PadProbeReturn::Ok
            },
        );
        let (leave, lat) = (pushed.clone(), latencies.clone());
        sink.static_pad("sink").context("sink pad")?.add_probe(
            gst::PadProbeType::BUFFER,
            move |_, info| {
                if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                    let start = leave
                        .lock()
                        .ok()
                        .and_then(|mut m| m.remove(&(cam, pts.nseconds())));
                    if let (Some(t), Ok(mut l)) = (start, lat.lock()) {
                        l.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
        sources.push(src);
        classifiers.push(classify);
    }
    let bus = pipeline.bus().context("bus")?;
    // Opening the engines (and their warm-up runs) happens here, before the clock starts.
    for state in [gst::State::Paused, gst::State::Playing] {
        if pipeline.set_state(state).is_err() {
            let why = bus
                .pop_filtered(&[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(e) => Some(e.error().to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| "no error message".into());
            let _ = pipeline.set_state(gst::State::Null);
            bail!("cannot start the pipeline: {why}");
        }
    }
    let started = Instant::now();
    let frames = args.frames;
    let pushers: Vec<_> = sources
        .into_iter()
        .enumerate()
        .map(|(cam, src)| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let d = gst::ClockTime::SECOND / 30;
                for i in 0..frames {
                    let mut b = pool[(i + cam) % pool.len()].copy();
                    if let Some(b) = b.get_mut() {
                        b.set_pts(d * i as u64);
                        b.set_duration(d);
                    }
                    if src.push_buffer(b).is_err() {
                        return;
                    }
                }
                let _ = src.end_of_stream();
            })
        })
        .collect();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .context("no EOS within 10 minutes")?;
    let elapsed = started.elapsed().as_secs_f64();
    for p in pushers {
        let _ = p.join();
    }
    if let gst::MessageView::Error(e) = msg.view() {
        bail!("pipeline error: {} ({:?})", e.error(), e.debug());
    }
    let gpu = gpu_mib();
    let fills: Vec<f64> = classifiers
        .iter()
        .filter_map(|c| {
            c.property::<gst::Structure>("stats")
                .get::<f64>("engine-mean-fill")
                .ok()
        })
        .collect();
    pipeline.set_state(gst::State::Null)?;
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    Ok(Measure {
        total_fps: (n * frames) as f64 / elapsed,
        mean_fill: fills.iter().sum::<f64>() / fills.len().max(1) as f64,
        p50_ms: percentile(&lat, 0.5),
        p95_ms: percentile(&lat, 0.95),
        rss_mib: peak_rss_mib(),
        gpu_mib: gpu,
        prep_ms: f64::NAN,
    })
}

/// The bare session at batch N on a pre-filled tensor, and the element's preprocessing of one
/// frame measured alone on this thread.
fn run_bare(args: &Args, cameras: usize) -> Result<Measure> {
    let n = args.batch.unwrap_or(cameras);
    let config = RunnerConfig {
        model: args.model.clone(),
        ort_library: Some(args.ort_library.clone()),
        threads: args.threads,
        provider: match args.provider.as_str() {
            "cuda" => gstvision::model::Provider::Cuda,
            "tensorrt" => gstvision::model::Provider::TensorRt,
            _ => gstvision::model::Provider::Cpu,
        },
        strict_provider: true,
        ..RunnerConfig::default()
    };
    let mut runner = Runner::open(&config, &Overrides::default())?.runner;
    let spec = runner.spec().clone();
    let capacity = spec.fixed_batch.unwrap_or(n).max(n);
    let mut tensor = vec![0.0f32; spec.slot.len() * capacity];

    let Frames {
        info,
        buffers: pool,
        ..
    } = Frames::make(FRAMES.0, FRAMES.1, FRAMES.2)?;
    let format = video::pixel_format(info.format()).context("format")?;
    let yuv = video::yuv_color(&info);
    let mut pre = Preprocessor::new(spec.slot, spec.normalize, spec.resize);
    let prep_frames = 40;
    let started = Instant::now();
    for i in 0..prep_frames {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(
            pool[i % pool.len()].as_ref(),
            &info,
        )?;
        let slot = &mut tensor[(i % n) * spec.slot.len()..(i % n + 1) * spec.slot.len()];
        pre.run(&video::frame_view(&frame, format, yuv), SlotMut::F32(slot))?;
    }
    let prep_ms = started.elapsed().as_secs_f64() * 1000.0 / prep_frames as f64;

    let mut scores = Vec::new();
    for _ in 0..2 {
        runner.run(BatchInput::F32(&tensor), n, &mut scores)?;
    }
    let images = cameras * args.frames;
    let mut lat = Vec::new();
    let started = Instant::now();
    let mut done = 0;
    while done < images {
        let t = Instant::now();
        runner.run(BatchInput::F32(&tensor), n, &mut scores)?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        done += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(Measure {
        total_fps: done as f64 / elapsed,
        mean_fill: n as f64,
        p50_ms: percentile(&lat, 0.5),
        p95_ms: percentile(&lat, 0.95),
        rss_mib: peak_rss_mib(),
        gpu_mib: gpu_mib(),
        prep_ms,
    })
}

fn child(args: &Args, mode: &str, n: usize) -> Result<()> {
    gst::init()?;
    gstvision::plugin_register_static()?;
    gstvision::model::load_runtime(Some(&args.ort_library), &[])?;
    let m = match mode {
        "shared" => run_pipeline(args, n, true)?,
        "private" => run_pipeline(args, n, false)?,
        "bare" => run_bare(args, n)?,
        other => bail!("unknown mode {other}"),
    };
    println!("{}", m.to_json());
    Ok(())
}

fn spawn(args: &Args, mode: &str, n: usize) -> Result<Measure> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("--model")
        .arg(&args.model)
        .arg("--ort-library")
        .arg(&args.ort_library)
        .args(["--frames", &args.frames.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--batch-timeout", &args.timeout_ms.to_string()])
        .args(["--shared-workers", &args.shared_workers.to_string()])
        .args(["--provider", &args.provider])
        .args(
            args.batch
                .map(|b| ["--batch".to_string(), b.to_string()])
                .into_iter()
                .flatten(),
        )
        .args(["--child", &format!("{mode}:{n}")])
        .output()?;
    if !out.status.success() {
        bail!(
            "{mode} with {n} cameras failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().context("no result")?;
    Ok(Measure::from_json(&serde_json::from_str(line)?))
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    if let Some((mode, n)) = &args.child {
        return child(&args, mode, *n);
    }
    if !args.model.exists() {
        bail!(
            "{} is missing: make it with `vision-trainer import --out {}`",
            args.model.display(),
            args.model.display()
        );
    }
    const MODES: [&str; 3] = ["shared", "private", "bare"];
    let mut results: HashMap<(usize, &str), Vec<Measure>> = HashMap::new();
    for round in 0..args.rounds {
        for &n in &args.cameras {
            // Alternate the order so no mode always runs on a warmer machine.
            let mut modes = MODES.to_vec();
            modes.rotate_left(round % MODES.len());
            for mode in modes {
                let m = spawn(&args, mode, n)?;
                eprintln!(
                    "round {}/{} {n} cameras {mode}: {:.1} fps, {:.0} MiB",
                    round + 1,
                    args.rounds,
                    m.total_fps,
                    m.rss_mib
                );
                results.entry((n, mode)).or_default().push(m);
            }
        }
    }
    let med = |n: usize, mode: &str, f: fn(&Measure) -> f64| {
        median(results.get(&(n, mode)).into_iter().flatten().map(f))
    };
    println!();
    println!(
        "{} cameras of 1080p RGB, {} frames each, model {}, {} ORT thread(s) per session (0 = ORT's default), shared engine with {} inference worker(s), batch-size {}, batch-timeout {} ms, median of {} rounds",
        args.cameras
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        args.frames,
        args.model.display(),
        args.threads,
        args.shared_workers,
        args.batch
            .map_or("= cameras".to_string(), |b| b.to_string()),
        args.timeout_ms,
        args.rounds
    );
    println!();
    println!(
        "| cameras | shared fps (per camera) | private fps (per camera) | shared / private | bare fps @batch | bound fps (bare + prep) | shared / bound | mean fill shared / private | p50 / p95 ms shared | p50 / p95 ms private | peak RSS MiB shared / private |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for &n in &args.cameras {
        let shared = med(n, "shared", |m| m.total_fps);
        let private = med(n, "private", |m| m.total_fps);
        let bare = med(n, "bare", |m| m.total_fps);
        let prep = med(n, "bare", |m| m.prep_ms);
        let bound = 1000.0 / (1000.0 / bare + prep);
        println!(
            "| {n} | {shared:.1} ({:.1}) | {private:.1} ({:.1}) | {:.2} | {bare:.1} | {bound:.1} | {:.2} | {:.2} / {:.2} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} |",
            shared / n as f64,
            private / n as f64,
            shared / private,
            shared / bound,
            med(n, "shared", |m| m.mean_fill),
            med(n, "private", |m| m.mean_fill),
            med(n, "shared", |m| m.p50_ms),
            med(n, "shared", |m| m.p95_ms),
            med(n, "private", |m| m.p50_ms),
            med(n, "private", |m| m.p95_ms),
            med(n, "shared", |m| m.rss_mib),
            med(n, "private", |m| m.rss_mib),
        );
        json.push(serde_json::json!({
            "cameras": n, "shared_fps": shared, "private_fps": private, "bare_fps": bare,
            "prep_ms": prep, "bound_fps": bound,
            "shared_rss_mib": med(n, "shared", |m| m.rss_mib),
            "private_rss_mib": med(n, "private", |m| m.rss_mib),
            "shared_fill": med(n, "shared", |m| m.mean_fill),
            "shared_p50_ms": med(n, "shared", |m| m.p50_ms),
            "shared_p95_ms": med(n, "shared", |m| m.p95_ms),
            "shared_gpu_mib": med(n, "shared", |m| m.gpu_mib),
            "private_gpu_mib": med(n, "private", |m| m.gpu_mib),
        }));
    }
    if let (Some(&first), Some(&last)) = (args.cameras.first(), args.cameras.last())
        && last > first
    {
        let per = |mode: &str| {
            (med(last, mode, |m| m.rss_mib) - med(first, mode, |m| m.rss_mib))
                / (last - first) as f64
        };
        println!();
        println!(
            "RSS per extra camera ({first} → {last}): shared {:.1} MiB, private {:.1} MiB (frames in flight included)",
            per("shared"),
            per("private")
        );
    }
    if args.provider != "cpu" {
        println!();
        println!("| cameras | GPU MiB shared | GPU MiB private | GPU MiB bare |");
        println!("|---|---|---|---|");
        for &n in &args.cameras {
            println!(
                "| {n} | {:.0} | {:.0} | {:.0} |",
                med(n, "shared", |m| m.gpu_mib),
                med(n, "private", |m| m.gpu_mib),
                med(n, "bare", |m| m.gpu_mib)
            );
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
