//! `bench_publish`: what `visionpublish` costs and how many events it sustains, against a
//! mosquitto that this command starts on a free loopback port.
//!
//! ```text
//! cargo run --release -p vision-bench --bin bench_publish -- [--frames N] [--rounds R]
//!     [--model PATH --width W --height H] [--events N] [--ort-library PATH]
//! ```
//!
//! Two measurements, in one process:
//! 1. Cost: `appsrc ! visionclassify ! [visionpublish !] fakesink sync=false` on pre-made
//!    frames, with and without the publisher, interleaved over `--rounds`; the median frame
//!    rates and their ratio (target: the publisher costs < 2 %). Every frame is an event (mode
//!    `all`, QoS 1).
//! 2. Throughput: the small `color3` model on 64x48 frames, as fast as the pipeline goes,
//!    `--events` events; events made per second, and events acknowledged by the broker per
//!    second from the first frame until the last acknowledgement.
//!
//! CPU time per frame (from the scheduler's per-thread counters, see `cpu.rs`) is reported
//! beside the frame rates, because on a shared machine wall-clock rates swing by more than the
//! 2 % being measured. `BENCH_PER_THREAD=1` prints each run's CPU time per thread.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[path = "../broker.rs"]
#[allow(dead_code)] // stop and restart: the soak's outages
mod broker;
#[path = "../cpu.rs"]
mod cpu;
use broker::Broker;
use cpu::CpuTimes;
use gst::prelude::*;

const USAGE: &str = "\
usage: bench_publish [options]
  --model PATH        classifier for the cost measurement (default: tests/data/bench/convnet224.onnx)
  --width W --height H  frame size of the cost measurement (default 640x480)
  --frames N          timed frames per cost run (default 300)
  --rounds R          interleaved cost rounds, medians reported (default 5)
  --events N          events of the throughput run (default 5000)
  --ort-library PATH  libonnxruntime.so (default: $ORT_DYLIB_PATH, else the project's .deps)";

struct Args {
    model: PathBuf,
    small_model: PathBuf,
    ort_library: PathBuf,
    width: u32,
    height: u32,
    frames: usize,
    rounds: usize,
    events: usize,
}

impl Args {
    fn parse() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest);
        let mut a = Args {
            model: root.join("tests/data/bench/convnet224.onnx"),
            small_model: root.join("tests/data/color3.onnx"),
            ort_library: std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".deps/onnxruntime/lib/libonnxruntime.so")),
            width: 640,
            height: 480,
            frames: 300,
            rounds: 5,
            events: 5000,
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
                "--width" => a.width = value.parse().with_context(bad)?,
                "--height" => a.height = value.parse().with_context(bad)?,
                "--frames" => a.frames = value.parse().with_context(bad)?,
                "--rounds" => a.rounds = value.parse().with_context(bad)?,
                "--events" => a.events = value.parse().with_context(bad)?,
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        if a.frames == 0 || a.rounds == 0 || a.events == 0 {
            bail!("--frames, --rounds and --events must be at least 1");
        }
        Ok(a)
    }
}

/// Pre-made RGB frames: a few distinct ones, cycled.
struct Frames {
    caps: gst::Caps,
    buffers: Vec<gst::Buffer>,
}

impl Frames {
    fn make(width: u32, height: u32) -> Self {
        let colours: [[u8; 3]; 4] = [[220, 20, 30], [10, 200, 40], [30, 40, 210], [128, 128, 128]];
        let n = (width * height) as usize;
        let buffers = colours
            .iter()
            .map(|c| {
                gst::Buffer::from_mut_slice(
                    c.iter().copied().cycle().take(n * 3).collect::<Vec<u8>>(),
                )
            })
            .collect();
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        Frames { caps, buffers }
    }

    fn buffer(&self, i: usize) -> gst::Buffer {
        let mut b = self.buffers[i % self.buffers.len()].copy();
        let b_mut = b.make_mut();
        b_mut.set_pts(gst::ClockTime::from_nseconds(i as u64 * 33_333_333));
        b_mut.set_duration(gst::ClockTime::from_nseconds(33_333_333));
        b
    }
}

struct Run {
    fps: f64,
    /// CPU time of the whole process per timed frame (until the last acknowledgement with
    /// the publisher), the part of it on the plugin's network threads, and time waiting
    /// for a CPU: wall-clock rates on a shared machine swing, CPU time much less.
    cpu_ms: f64,
    network_ms: f64,
    wait_ms: f64,
    /// With the publisher: events made, acknowledged, spooled, and the seconds from the first
    /// timed frame until the broker acknowledged the last event.
    events: u64,
    acked: u64,
    spooled: u64,
    all_acked_s: f64,
}

fn run(
    frames: &Frames,
    model: &Path,
    ort: &Path,
    broker: Option<u16>,
    count: usize,
    run_id: usize,
) -> Result<Run> {
    const WARMUP: usize = 10;
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&frames.caps)
        .format(gst::Format::Time)
        .block(true)
        .max_bytes(4 * frames.buffers[0].size() as u64)
        .build();
    let classify = gst::ElementFactory::make("visionclassify")
        .property("model", model.to_string_lossy().as_ref())
        .property("ort-library", ort.to_string_lossy().as_ref())
        .property("threads", 1u32)
        .build()?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()?;
    let spool = std::env::temp_dir().join(format!(
        "bench-publish-spool-{}-{run_id}",
        std::process::id()
    ));
    let publish = match broker {
        Some(port) => Some(
            gst::ElementFactory::make("visionpublish")
                .property("broker", format!("mqtt://127.0.0.1:{port}"))
                .property("sensor-id", format!("bench-{run_id}"))
                .property("spool-dir", spool.to_string_lossy().as_ref())
                .property("health-interval", 0u32)
                .property("persistent-session", false)
                .build()?,
        ),
        None => None,
    };
    let mut chain: Vec<&gst::Element> = vec![src.upcast_ref(), &classify];
    chain.extend(publish.as_ref());
    chain.push(&sink);
    pipeline.add_many(chain.iter().copied())?;
    gst::Element::link_many(chain.iter().copied())?;

    // Frames that reached the sink, to wait until the warm-up ones are through.
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = arrived.clone();
    sink.static_pad("sink")
        .context("fakesink has no sink pad")?
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });

    let bus = pipeline.bus().context("no bus")?;
    pipeline.set_state(gst::State::Playing)?;
    if let Some(p) = &publish {
        // Connected before timing, as a gateway would be.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p
            .property::<gst::Structure>("stats")
            .get::<bool>("connected")
            .unwrap_or(false)
        {
            if Instant::now() > deadline {
                bail!("visionpublish did not connect to the broker");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for i in 0..WARMUP {
        src.push_buffer(frames.buffer(i))
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
    }
    // The session's first runs are slow: time only what comes after them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrived.load(std::sync::atomic::Ordering::Relaxed) < WARMUP {
        if Instant::now() > deadline {
            bail!("the warm-up frames did not come through within 60 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu_start = CpuTimes::now();
    let started = Instant::now();
    for i in WARMUP..WARMUP + count {
        src.push_buffer(frames.buffer(i))
            .map_err(|e| anyhow::anyhow!("push: {e:?}"))?;
    }
    src.end_of_stream()
        .map_err(|e| anyhow::anyhow!("EOS: {e:?}"))?;
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(300),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .context("no EOS within 5 minutes")?;
    if let gst::MessageView::Error(e) = msg.view() {
        bail!("pipeline error: {} ({:?})", e.error(), e.debug());
    }
    let elapsed = started.elapsed();
    let mut out = Run {
        fps: count as f64 / elapsed.as_secs_f64(),
        cpu_ms: f64::NAN,
        network_ms: 0.0,
        wait_ms: f64::NAN,
        events: 0,
        acked: 0,
        spooled: 0,
        all_acked_s: f64::NAN,
    };
    if let Some(p) = &publish {
        let deadline = Instant::now() + Duration::from_secs(120);
        let total = (WARMUP + count) as u64;
        loop {
            let s = p.property::<gst::Structure>("stats");
            out.events = s.get("events").unwrap_or(0);
            out.acked = s.get("acked").unwrap_or(0);
            out.spooled = s.get("spooled").unwrap_or(0);
            if out.acked >= total {
                out.all_acked_s = started.elapsed().as_secs_f64();
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let cpu_end = CpuTimes::now();
    (out.cpu_ms, out.wait_ms) = cpu_end.per_frame_since(&cpu_start, count);
    if std::env::var_os("BENCH_PER_THREAD").is_some() {
        for (thread, ms) in cpu_end.by_thread_since(&cpu_start, count) {
            eprintln!("    {thread:<28} {:8.1} us/frame", ms * 1000.0);
        }
    }
    out.network_ms = cpu_end
        .by_thread_since(&cpu_start, count)
        .iter()
        .filter(|(name, _)| name.starts_with("vision-rt"))
        .map(|(_, ms)| ms)
        .sum();
    pipeline.set_state(gst::State::Null)?;
    let _ = std::fs::remove_dir_all(&spool);
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    gst::init()?;
    gstvision::plugin_register_static()?;
    let broker = Broker::start("bench-publish", false)?;
    let mut id = 0;
    let mut next_id = || {
        id += 1;
        id
    };

    // 1. Cost, interleaved: [without, with] per round.
    let frames = Frames::make(args.width, args.height);
    let mut rounds: Vec<[Run; 2]> = Vec::new();
    for round in 0..args.rounds {
        let publish_first = round % 2 == 0;
        let mut pair: [Option<Run>; 2] = [None, None];
        for step in 0..2 {
            let publish = (step == 0) == publish_first;
            let r = run(
                &frames,
                &args.model,
                &args.ort_library,
                publish.then_some(broker.port()),
                args.frames,
                next_id(),
            )?;
            if publish && r.acked < r.events {
                eprintln!("  warning: {} of {} events acknowledged", r.acked, r.events);
            }
            pair[usize::from(publish)] = Some(r);
        }
        let [Some(without), Some(with)] = pair else {
            bail!("round {round} is incomplete");
        };
        eprintln!(
            "round {}/{}: without {:.1} fps {:.2} cpu-ms/frame, with {:.1} fps {:.2} cpu-ms/frame",
            round + 1,
            args.rounds,
            without.fps,
            without.cpu_ms,
            with.fps,
            with.cpu_ms
        );
        rounds.push([without, with]);
    }
    let med = |f: &dyn Fn(&[Run; 2]) -> f64| median(rounds.iter().map(f).collect());
    let (fps_without, fps_with) = (med(&|r| r[0].fps), med(&|r| r[1].fps));
    let fps_ratio = med(&|r| r[1].fps / r[0].fps);
    let (cpu_without, cpu_with) = (med(&|r| r[0].cpu_ms), med(&|r| r[1].cpu_ms));
    let cpu_cost = med(&|r| (r[1].cpu_ms - r[0].cpu_ms) / r[0].cpu_ms);
    let network = med(&|r| r[1].network_ms);
    let waiting = med(&|r| r[0].wait_ms.max(r[1].wait_ms));

    // 2. Throughput with the small model.
    let small = Frames::make(64, 48);
    let t = run(
        &small,
        &args.small_model,
        &args.ort_library,
        Some(broker.port()),
        args.events,
        next_id(),
    )?;
    let t0 = run(
        &small,
        &args.small_model,
        &args.ort_library,
        None,
        args.events,
        next_id(),
    )?;

    println!();
    println!("visionpublish: cost and throughput (mode all, QoS 1, mosquitto on 127.0.0.1)");
    println!(
        "cost       {} on {}x{} RGB, 1 ORT thread, {} frames per run, medians of {} interleaved rounds",
        args.model.display(),
        args.width,
        args.height,
        args.frames,
        args.rounds
    );
    println!(
        "  frame rate   without {fps_without:.1} fps, with {fps_with:.1} fps; with/without per round {} (median {fps_ratio:.3})",
        rounds
            .iter()
            .map(|r| format!("{:.3}", r[1].fps / r[0].fps))
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!(
        "  cpu/frame    without {cpu_without:.2} ms, with {cpu_with:.2} ms (until the last ack); \
         publisher +{:.2} % (median per round), of which the network threads {network:.3} ms",
        cpu_cost * 100.0
    );
    println!(
        "  noise        threads waited up to {waiting:.2} ms/frame for a CPU (other work on the machine)"
    );
    println!(
        "  target       publisher < 2 % of frame rate: {} by cpu time, {} by wall-clock frame rate",
        if cpu_cost < 0.02 { "met" } else { "NOT met" },
        if fps_ratio >= 0.98 { "met" } else { "NOT met" }
    );
    println!(
        "throughput {} on 64x48, {} events: pipeline {:.0} fps with the publisher, {:.0} without \
         ({:.1} us cpu per frame added)",
        args.small_model.display(),
        args.events,
        t.fps,
        t0.fps,
        (t.cpu_ms - t0.cpu_ms) * 1000.0
    );
    println!(
        "  events       made at {:.0}/s; {} of {} acknowledged, the last {:.2} s after the first \
         frame: {:.0} events/s sustained at QoS 1; {} went through the spool (memory queue full)",
        t.fps,
        t.acked,
        t.events,
        t.all_acked_s,
        t.acked as f64 / t.all_acked_s,
        t.spooled
    );
    println!(
        "machine    {} cpus; load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default()
    );
    Ok(())
}
