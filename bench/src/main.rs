//! `vision-bench`: throughput of `visionclassify` against a bare ONNX Runtime session on the
//! same model, with the same threads and batch size, measured in one process.
//!
//! ```text
//! cargo run --release -p vision-bench -- [--model PATH] [--frames N] [--batch B | --batches 1,4,8]
//!     [--threads T | --threads 1,2] [--width 1920 --height 1080] [--format RGB|I420|NV12|...]
//!     [--rounds R] [--batch-timeout MS] [--workers N] [--ort-library PATH] [--per-thread]
//!     [--latency N] [--only element|bare] [--json PATH] [--dump-frames PATH]
//! ```
//!
//! For each (threads, batch) it measures, `--rounds` times and interleaved:
//! (a) `appsrc ! visionclassify ! fakesink sync=false` fed with pre-made frames, from the
//! first push to EOS on the bus; (b) `gstvision::model::Runner` on a pre-filled tensor;
//! (c) the element's preprocessing alone, per frame. It prints the medians. With `--latency N`
//! it then measures N frames one at a time at batch 1: push-to-sink through the element
//! against the bare session (run alone, and preprocessing + run inline). `bench/run.sh` runs
//! it with a Python baseline and draws the plot of `BENCHMARKS.md`.

mod bare;
mod cpu;
mod element;
mod frames;
mod median;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::frames::Frames;
use crate::median::median;

const USAGE: &str = "\
usage: vision-bench [options]
  --model PATH          ONNX classifier (default: tests/data/bench/convnet224.onnx)
  --frames N            timed frames per run (default 300)
  --batch B             batch-size (default 1)
  --batches 1,4,8       several batch sizes in one go (instead of --batch)
  --threads T           ONNX Runtime intra-op threads, or a list such as 1,2 (default 1)
  --width W --height H  frame size (default 1920x1080)
  --format F            GStreamer video format of the frames (default RGB; e.g. I420, NV12)
  --rounds R            interleaved repetitions; medians are reported (default 3)
  --batch-timeout MS    visionclassify batch-timeout (default 50)
  --workers N           visionclassify inference-workers (default 0: automatic, the element's
                        default; the bare session is always one)
  --ort-library PATH    libonnxruntime.so (default: $ORT_DYLIB_PATH, else the project's .deps)
  --per-thread          after each element run, print its CPU time per thread (to stderr)
  --latency N           then N frames one at a time at batch 1: element vs bare latency
  --only element|bare   measure one side only (for a process's own peak RSS)
  --json PATH           also write the results as JSON
  --dump-frames PATH    write the frame pool as raw bytes (frame after frame) and exit";

/// One measured configuration, shared by the element and the bare session.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub frames: usize,
    pub batch: usize,
    pub threads: usize,
    pub batch_timeout_ms: u32,
    /// visionclassify `inference-workers` (the bare session is always one).
    pub workers: usize,
    /// Print the element's CPU time per thread after each run.
    pub per_thread: bool,
}

struct Args {
    model: PathBuf,
    ort_library: PathBuf,
    frames: usize,
    batches: Vec<usize>,
    threads: Vec<usize>,
    width: u32,
    height: u32,
    format: String,
    rounds: usize,
    batch_timeout_ms: u32,
    workers: usize,
    per_thread: bool,
    latency: usize,
    only: Option<Side>,
    json: Option<PathBuf>,
    dump_frames: Option<PathBuf>,
}

/// Which side `--only` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Element,
    Bare,
}

impl Args {
    fn parse() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest);
        let mut args = Self {
            model: root.join("tests/data/bench/convnet224.onnx"),
            ort_library: std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".deps/onnxruntime/lib/libonnxruntime.so")),
            frames: 300,
            batches: vec![1],
            threads: vec![1],
            width: 1920,
            height: 1080,
            format: "RGB".into(),
            rounds: 3,
            batch_timeout_ms: 50,
            workers: 0,
            per_thread: false,
            latency: 0,
            only: None,
            json: None,
            dump_frames: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            if flag == "--per-thread" {
                args.per_thread = true;
                continue;
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let bad = || format!("{flag} {value}: not a valid value\n{USAGE}");
            match flag.as_str() {
                "--model" => args.model = value.into(),
                "--ort-library" => args.ort_library = value.into(),
                "--frames" => args.frames = value.parse().with_context(bad)?,
                "--batch" | "--batches" => args.batches = list(&value).with_context(bad)?,
                "--threads" => args.threads = list(&value).with_context(bad)?,
                "--width" => args.width = value.parse().with_context(bad)?,
                "--height" => args.height = value.parse().with_context(bad)?,
                "--format" => args.format = value,
                "--rounds" => args.rounds = value.parse().with_context(bad)?,
                "--batch-timeout" => args.batch_timeout_ms = value.parse().with_context(bad)?,
                "--workers" => args.workers = value.parse().with_context(bad)?,
                "--latency" => args.latency = value.parse().with_context(bad)?,
                "--only" => {
                    args.only = Some(match value.as_str() {
                        "element" => Side::Element,
                        "bare" => Side::Bare,
                        _ => bail!("{}", bad()),
                    })
                }
                "--json" => args.json = Some(value.into()),
                "--dump-frames" => args.dump_frames = Some(value.into()),
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        if args.frames == 0 || args.rounds == 0 {
            bail!("--frames and --rounds must be at least 1");
        }
        if args.batches.contains(&0) {
            bail!("batch sizes must be at least 1");
        }
        Ok(args)
    }
}

/// `1,4,8` → [1, 4, 8].
fn list(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|v| v.trim().parse().map_err(Into::into))
        .collect()
}

/// One configuration's rounds.
struct Row {
    config: Config,
    element: Vec<element::ElementRun>,
    bare: Vec<bare::BareRun>,
    /// Wall and CPU milliseconds per frame.
    preprocess_ms: Vec<(f64, f64)>,
}

impl Row {
    fn element_median(&self, field: impl Fn(&element::ElementRun) -> f64) -> f64 {
        median(self.element.iter().map(field))
    }

    fn bare_median(&self, field: impl Fn(&bare::BareRun) -> f64) -> f64 {
        median(self.bare.iter().map(field))
    }
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    gst::init().context("cannot initialise GStreamer")?;
    gstvision::plugin_register_static().context("cannot register the vision plugin")?;
    // Loaded once for the process; the element's `ort-library` then names the same file.
    let runtime = gstvision::model::load_runtime(Some(&args.ort_library), &[])
        .context("cannot load ONNX Runtime")?;
    if runtime.path != args.ort_library {
        bail!(
            "ONNX Runtime came from {} instead of {}",
            runtime.path.display(),
            args.ort_library.display()
        );
    }
    let load_before = load_average();
    let frames = Frames::make(&args.format, args.width, args.height)?;
    if let Some(path) = &args.dump_frames {
        return dump_frames(&frames, path);
    }
    let spec = bare::open(&args.model, &args.ort_library, 1)?
        .spec()
        .clone();

    let mut rows: Vec<Row> = args
        .threads
        .iter()
        .flat_map(|&threads| {
            args.batches.iter().map(move |&batch| Config {
                frames: args.frames,
                batch,
                threads,
                batch_timeout_ms: args.batch_timeout_ms,
                workers: args.workers,
                per_thread: args.per_thread,
            })
        })
        .map(|config| Row {
            config,
            element: Vec::new(),
            bare: Vec::new(),
            preprocess_ms: Vec::new(),
        })
        .collect();

    // Rounds outermost, so slow drift of the machine spreads over every configuration; the
    // order of (a) and (b) alternates so neither always runs on a warmer cache.
    for round in 0..args.rounds {
        for row in &mut rows {
            let c = row.config;
            let element_first = round % 2 == 0;
            for step in 0..2 {
                let element_step = (step == 0) == element_first;
                let wanted = match args.only {
                    None => true,
                    Some(Side::Element) => element_step,
                    Some(Side::Bare) => !element_step,
                };
                if !wanted {
                    continue;
                }
                if element_step {
                    let e = element::run(&frames, &args.model, &args.ort_library, &c, 2 * c.batch)
                        .with_context(|| {
                            format!("element, threads {} batch {}", c.threads, c.batch)
                        })?;
                    row.element.push(e);
                } else {
                    let b =
                        bare::run(&args.model, &args.ort_library, &c, 2).with_context(|| {
                            format!("bare, threads {} batch {}", c.threads, c.batch)
                        })?;
                    row.bare.push(b);
                }
            }
            let runner = bare::open(&args.model, &args.ort_library, c.threads)?;
            row.preprocess_ms
                .push(bare::preprocess_ms(&runner, &frames, args.frames.min(100))?);
            eprintln!(
                "round {}/{}  threads {} batch {}: element {:.1} fps, bare {:.1} fps",
                round + 1,
                args.rounds,
                c.threads,
                c.batch,
                row.element.last().map_or(f64::NAN, |e| e.fps),
                row.bare.last().map_or(f64::NAN, |b| b.fps),
            );
        }
    }

    println!();
    println!("visionclassify vs bare ONNX Runtime session (same model, threads, batch)");
    println!(
        "model    {} ({}, input {}x{} {:?}, {} classes)",
        args.model.display(),
        spec.name,
        spec.slot.width,
        spec.slot.height,
        spec.slot.layout,
        spec.num_classes
    );
    println!(
        "frames   {} timed per run, {}x{} {}, {} distinct; batch-timeout {} ms; median of {} rounds",
        args.frames,
        args.width,
        args.height,
        args.format,
        frames.buffers.len(),
        args.batch_timeout_ms,
        args.rounds
    );
    println!("ORT      {}", runtime.path.display());
    println!(
        "cpus     {} available",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "threads batch | element fps   bare fps  element/bare  (per round)       | infer ms/batch: element   bare"
    );
    let mut below = Vec::new();
    for row in &rows {
        let c = row.config;
        let (element_fps, bare_fps) = (row.element_median(|e| e.fps), row.bare_median(|b| b.fps));
        let ratio = element_fps / bare_fps;
        if ratio < 0.97 {
            below.push(format!("threads {} batch {}", c.threads, c.batch));
        }
        let per_round: Vec<String> = row
            .element
            .iter()
            .zip(&row.bare)
            .map(|(e, b)| format!("{:.2}", e.fps / b.fps))
            .collect();
        println!(
            "{:>7} {:>5} | {:>11.1} {:>10.1} {:>13.3}  {:<17} | {:>22.2} {:>6.2}",
            c.threads,
            c.batch,
            element_fps,
            bare_fps,
            ratio,
            per_round.join(" "),
            row.element_median(|e| e.inference_ms),
            row.bare_median(|b| b.inference_ms),
        );
    }
    println!();
    println!(
        "cost per frame, ms   | cpu (all threads): element   bare | waiting for a cpu: element   bare | preprocess alone: wall    cpu"
    );
    for row in &rows {
        let c = row.config;
        println!(
            "threads {:>2} batch {:>3} | {:>26.2} {:>6.2} | {:>26.2} {:>6.2} | {:>22.2} {:>6.2}",
            c.threads,
            c.batch,
            row.element_median(|e| e.cpu_ms),
            row.bare_median(|b| b.cpu_ms),
            row.element_median(|e| e.wait_ms),
            row.bare_median(|b| b.wait_ms),
            median(row.preprocess_ms.iter().map(|p| p.0)),
            median(row.preprocess_ms.iter().map(|p| p.1)),
        );
    }
    println!();
    if below.is_empty() {
        println!("target element/bare >= 0.97: met for every row");
    } else {
        println!(
            "target element/bare >= 0.97: NOT met for {}",
            below.join(", ")
        );
    }
    let latencies = args
        .threads
        .iter()
        .filter(|_| args.latency > 0)
        .map(|&threads| measure_latency(&args, &frames, threads))
        .collect::<Result<Vec<_>>>()?;
    if !latencies.is_empty() {
        println!();
        println!(
            "latency at batch 1, ms per frame, median (p95) of {} frames one at a time",
            args.latency
        );
        println!(
            "threads | element push->sink | bare run | bare preprocess+run | added by the element"
        );
        for l in &latencies {
            println!(
                "{:>7} | {:>9.2} ({:>6.2}) | {:>8.2} | {:>19.2} | {:>+9.2} vs run, {:+.2} vs preprocess+run",
                l.threads,
                l.element.median,
                l.element.p95,
                l.bare_run.median,
                l.bare_inline.median,
                l.element.median - l.bare_run.median,
                l.element.median - l.bare_inline.median,
            );
        }
    }
    let load_end = load_average();
    println!("load     {load_before} (start) -> {load_end} (end)");
    println!(
        "peak RSS (VmHWM): {}",
        peak_rss().map_or_else(|| "unknown".into(), |m| format!("{m:.0} MiB"))
    );
    if let Some(path) = &args.json {
        let json = report_json(&args, &spec, &rows, &latencies, &load_before, &load_end);
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Median and 95th percentile of a sample.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    p95: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let p95 = v
            .get(((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN);
        Self {
            median: median(v.into_iter()),
            p95,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "median_ms": self.median, "p95_ms": self.p95 })
    }
}

/// Batch-1 latency of one thread count.
struct Latency {
    threads: usize,
    element: Spread,
    bare_run: Spread,
    bare_inline: Spread,
}

fn measure_latency(args: &Args, frames: &Frames, threads: usize) -> Result<Latency> {
    let config = Config {
        frames: args.latency,
        batch: 1,
        threads,
        batch_timeout_ms: args.batch_timeout_ms,
        workers: args.workers,
        per_thread: false,
    };
    let element = element::latency(
        frames,
        &args.model,
        &args.ort_library,
        &config,
        10,
        args.latency,
    )
    .with_context(|| format!("element latency, threads {threads}"))?;
    let (run, inline) = bare::latency(
        &args.model,
        &args.ort_library,
        frames,
        threads,
        10,
        args.latency,
    )
    .with_context(|| format!("bare latency, threads {threads}"))?;
    Ok(Latency {
        threads,
        element: Spread::of(element),
        bare_run: Spread::of(run),
        bare_inline: Spread::of(inline),
    })
}

fn report_json(
    args: &Args,
    spec: &gstvision::model::ModelSpec,
    rows: &[Row],
    latencies: &[Latency],
    load_start: &str,
    load_end: &str,
) -> serde_json::Value {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            let c = r.config;
            serde_json::json!({
                "threads": c.threads,
                "batch": c.batch,
                "element_fps": r.element_median(|e| e.fps),
                "bare_fps": r.bare_median(|b| b.fps),
                "element_fps_rounds": r.element.iter().map(|e| e.fps).collect::<Vec<_>>(),
                "bare_fps_rounds": r.bare.iter().map(|b| b.fps).collect::<Vec<_>>(),
                "element_infer_ms_per_batch": r.element_median(|e| e.inference_ms),
                "bare_infer_ms_per_batch": r.bare_median(|b| b.inference_ms),
                "element_cpu_ms_per_frame": r.element_median(|e| e.cpu_ms),
                "bare_cpu_ms_per_frame": r.bare_median(|b| b.cpu_ms),
                "preprocess_ms_per_frame": median(r.preprocess_ms.iter().map(|p| p.0)),
            })
        })
        .collect();
    let latencies: Vec<_> = latencies
        .iter()
        .map(|l| {
            serde_json::json!({
                "threads": l.threads,
                "element": l.element.json(),
                "bare_run": l.bare_run.json(),
                "bare_preprocess_and_run": l.bare_inline.json(),
            })
        })
        .collect();
    serde_json::json!({
        "model": args.model.display().to_string(),
        "model_name": spec.name,
        "input": [spec.slot.height, spec.slot.width],
        "frames": { "count": args.frames, "width": args.width, "height": args.height,
                    "format": args.format, "rounds": args.rounds,
                    "batch_timeout_ms": args.batch_timeout_ms },
        "only": args.only.map(|s| format!("{s:?}").to_lowercase()),
        "rows": rows,
        "latency": latencies,
        "peak_rss_mib": peak_rss(),
        "load": { "start": load_start, "end": load_end },
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
    })
}

/// Writes the frame pool, frame after frame, for a baseline outside this process to read the
/// very same pixels.
fn dump_frames(frames: &Frames, path: &Path) -> Result<()> {
    let mut bytes = Vec::with_capacity(frames.frame_size() * frames.buffers.len());
    for buffer in &frames.buffers {
        let map = buffer.map_readable().context("cannot map a frame")?;
        bytes.extend_from_slice(&map);
    }
    std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{} frames of {}x{} {} ({} bytes each) written to {}",
        frames.buffers.len(),
        frames.info.width(),
        frames.info.height(),
        frames.info.format().to_str(),
        frames.frame_size(),
        path.display()
    );
    Ok(())
}

/// The process's peak resident set in MiB, as /proc/self/status reports it.
fn peak_rss() -> Option<f64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().strip_suffix(" kB"))
                .and_then(|kb| kb.trim().parse::<u64>().ok())
        })
        .map(|kb| kb as f64 / 1024.0)
}

/// The 1-minute load average, to judge how much other work shared the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
