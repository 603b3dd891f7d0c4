//! `soak`: `visionclassify ! visionpublish` on a live source for a long time (an hour by
//! default) against a mosquitto that is stopped and started again every few minutes, sampling
//! this process's memory, file descriptors and threads, the publisher's spool and the events a
//! persistent QoS 1 subscriber (`mosquitto_sub -c`) receives.
//!
//! ```text
//! cargo run --release -p vision-bench --bin soak -- [--minutes 60] [--restart-every 180]
//!     [--down-for 10] [--sample-every 10] [--fps 10] [--model PATH] [--out DIR]
//! ```
//!
//! It writes `DIR/soak.csv` (one row per sample), `DIR/soak.svg` (the plot in BENCHMARKS.md)
//! and `DIR/soak.txt` (the summary it prints): the slopes of the resident set and of the heap
//! in use after the warm-up (least squares, MB per hour), the range of descriptors and
//! threads, the largest spool, and events made / received / lost / duplicated. Not a test: it
//! takes an hour.
//!
//! The heap in use (glibc's `mallinfo2`: bytes `malloc` handed out and not freed, every arena,
//! plus `mmap`ed blocks) tells a leak from memory the allocator keeps after it was freed: a
//! leak grows both. At the end `malloc_trim(0)` gives the kept pages back and the resident set
//! is read once more.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gst::prelude::*;

#[path = "../broker.rs"]
mod broker;
use broker::Broker;

const USAGE: &str = "\
usage: soak [options]
  --minutes M         how long the pipeline runs (default 60)
  --restart-every S   seconds between broker restarts (default 180)
  --down-for S        seconds the broker stays down at each restart (default 10)
  --sample-every S    seconds between samples (default 10)
  --warm-up S         seconds left out of the memory slope (default 300)
  --fps N             frame rate of the live source (default 10)
  --model PATH        classifier (default: models/efficientnet-lite0.onnx if present, else
                      tests/data/bench/convnet224.onnx)
  --ort-library PATH  libonnxruntime.so (default: $ORT_DYLIB_PATH, else the project's .deps)
  --out DIR           results folder (default bench/results/soak)";

struct Args {
    minutes: f64,
    restart_every: u64,
    down_for: u64,
    sample_every: u64,
    warm_up: f64,
    fps: u32,
    model: PathBuf,
    ort_library: PathBuf,
    out: PathBuf,
}

impl Args {
    fn parse() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest);
        let lite0 = root.join("models/efficientnet-lite0.onnx");
        let mut a = Args {
            minutes: 60.0,
            restart_every: 180,
            down_for: 10,
            sample_every: 10,
            warm_up: 300.0,
            fps: 10,
            model: if lite0.exists() {
                lite0
            } else {
                root.join("tests/data/bench/convnet224.onnx")
            },
            ort_library: std::env::var_os("ORT_DYLIB_PATH").map_or_else(
                || root.join(".deps/onnxruntime/lib/libonnxruntime.so"),
                PathBuf::from,
            ),
            out: root.join("bench/results/soak"),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let number = || -> Result<f64> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .with_context(|| format!("{flag}: not a number: {value}"))
            };
            match flag.as_str() {
                "--minutes" => a.minutes = number()?,
                "--restart-every" => a.restart_every = number()? as u64,
                "--down-for" => a.down_for = number()? as u64,
                "--sample-every" => a.sample_every = number()? as u64,
                "--warm-up" => a.warm_up = number()?,
                "--fps" => a.fps = number()? as u32,
                "--model" => a.model = PathBuf::from(&value),
                "--ort-library" => a.ort_library = PathBuf::from(&value),
                "--out" => a.out = PathBuf::from(&value),
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        if a.fps == 0 || a.sample_every == 0 || a.restart_every <= a.down_for {
            bail!("--fps and --sample-every must be at least 1, --restart-every above --down-for");
        }
        Ok(a)
    }
}

/// What the subscriber has received: event sequence numbers of the publisher's run (from 0).
/// Kept in constant memory, so the soak's own bookkeeping does not grow with the events it
/// counts (a set of every number did, in steps of its doublings): every number below `below`
/// has arrived, and `above` holds those that arrived past the first gap.
#[derive(Default)]
struct Received {
    below: u64,
    above: BTreeSet<u64>,
    total: u64,
    runs: HashSet<String>,
}

impl Received {
    fn insert(&mut self, seq: u64) {
        self.total += 1;
        if seq >= self.below && self.above.insert(seq) {
            while self.above.remove(&self.below) {
                self.below += 1;
            }
        }
    }

    fn contains(&self, seq: u64) -> bool {
        seq < self.below || self.above.contains(&seq)
    }

    /// Distinct sequence numbers received.
    fn unique(&self) -> u64 {
        self.below + self.above.len() as u64
    }
}

/// `mosquitto_sub` with a persistent session (`-c`, QoS 1): it reconnects after each broker
/// restart and gets what was queued for it meanwhile. Restarted if it ever exits.
struct Subscriber {
    child: Child,
    port: u16,
    received: Arc<Mutex<Received>>,
    restarts: u32,
}

impl Subscriber {
    fn start(port: u16, received: Arc<Mutex<Received>>) -> Result<Self> {
        let child = spawn_sub(port, &received)?;
        Ok(Subscriber {
            child,
            port,
            received,
            restarts: 0,
        })
    }

    fn keep_alive(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            self.child = spawn_sub(self.port, &self.received)?;
            self.restarts += 1;
        }
        Ok(())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_sub(port: u16, received: &Arc<Mutex<Received>>) -> Result<Child> {
    let mut child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-t",
            "vision/soak/#",
            "-q",
            "1",
            "-c",
            "-i",
            "soak-subscriber",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start mosquitto_sub (Debian: apt-get install mosquitto-clients)")?;
    let stdout = child.stdout.take().context("mosquitto_sub's stdout")?;
    let received = received.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let (Some(seq), Some(run)) = (v["sequence"].as_u64(), v["run"].as_str()) else {
                continue;
            };
            let mut r = received.lock().unwrap_or_else(|e| e.into_inner());
            r.insert(seq);
            r.runs.insert(run.to_string());
        }
    });
    Ok(child)
}

#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    rss_mb: f64,
    heap_mb: f64,
    held_mb: f64,
    fds: u64,
    threads: u64,
    spool_bytes: u64,
    spool_depth: u64,
    events: u64,
    received: u64,
    frames: u64,
    broker_up: bool,
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Heap in use and heap held from the system (MB), over all of glibc's arenas and its
/// `mmap`ed blocks.
fn heap_mb() -> (f64, f64) {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    let mb = |b: usize| b as f64 / (1024.0 * 1024.0);
    (mb(m.uordblks + m.hblkhd), mb(m.arena + m.hblkhd))
}

/// Gives the allocator's free pages back to the system.
fn trim() {
    // SAFETY: malloc_trim only releases free memory; 0 keeps no padding.
    unsafe { libc::malloc_trim(0) };
}

fn count_entries(dir: &str) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.count() as u64)
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

fn field(s: &gst::Structure, name: &str) -> u64 {
    s.get::<u64>(name)
        .or_else(|_| s.get::<u32>(name).map(u64::from))
        .unwrap_or(0)
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    gst::init()?;
    gstvision::plugin_register_static()?;
    std::fs::create_dir_all(&args.out)?;
    let spool = args.out.join("spool");
    let _ = std::fs::remove_dir_all(&spool);
    std::fs::create_dir_all(&spool)?;

    let mut broker = Broker::start("soak-broker", true)?;
    let received = Arc::new(Mutex::new(Received::default()));
    let mut subscriber = Subscriber::start(broker.port(), received.clone())?;
    // The subscriber's session must exist before the first event, or QoS 1 has no one to
    // queue for while it reconnects.
    std::thread::sleep(Duration::from_secs(1));

    let description = format!(
        "videotestsrc is-live=true pattern=ball \
         ! video/x-raw,format=I420,width=640,height=480,framerate={fps}/1 \
         ! visionclassify name=classify model={model} ort-library={ort} \
         ! visionpublish name=publish broker=mqtt://127.0.0.1:{port} sensor-id=soak \
           spool-dir={spool} backoff-min=100 backoff-max=2000 health-interval=0 \
         ! fakesink sync=true",
        fps = args.fps,
        model = args.model.display(),
        ort = args.ort_library.display(),
        port = broker.port(),
        spool = spool.display(),
    );
    let pipeline = gst::parse::launch(&description)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let classify = pipeline.by_name("classify").context("classify")?;
    let publish = pipeline.by_name("publish").context("publish")?;
    let bus = pipeline.bus().context("bus")?;
    pipeline.set_state(gst::State::Playing)?;

    let start = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    // Room for every sample from the start: the soak's own memory stays level.
    let mut samples: Vec<Sample> =
        Vec::with_capacity((args.minutes * 60.0 / args.sample_every as f64) as usize + 16);
    let mut restarts: Vec<f64> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut next_restart = Duration::from_secs(args.restart_every);
    let mut down_until: Option<Duration> = None;
    let mut csv = std::fs::File::create(args.out.join("soak.csv"))?;
    const HEADER: &str = "seconds,rss_mb,heap_in_use_mb,heap_held_mb,fds,threads,spool_bytes,spool_depth,events,received,frames,broker_up";
    writeln!(csv, "{HEADER}")?;
    println!("soak: {description}\n{HEADER}");

    while start.elapsed() < total {
        let now = start.elapsed();
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                bail!("pipeline error: {} ({:?})", e.error(), e.debug());
            }
        }
        if down_until.is_none() && now >= next_restart {
            broker.stop()?;
            restarts.push(now.as_secs_f64());
            down_until = Some(now + Duration::from_secs(args.down_for));
            next_restart += Duration::from_secs(args.restart_every);
        }
        if let Some(until) = down_until
            && now >= until
        {
            broker.restart()?;
            down_until = None;
        }
        subscriber.keep_alive()?;
        if now >= next_sample {
            next_sample += Duration::from_secs(args.sample_every);
            let p = publish.property::<gst::Structure>("stats");
            let c = classify.property::<gst::Structure>("stats");
            let (heap, held) = heap_mb();
            let s = Sample {
                t: now.as_secs_f64(),
                rss_mb: rss_mb(),
                heap_mb: heap,
                held_mb: held,
                fds: count_entries("/proc/self/fd"),
                threads: count_entries("/proc/self/task"),
                spool_bytes: folder_bytes(&spool),
                spool_depth: field(&p, "spool-depth"),
                events: field(&p, "events"),
                received: received.lock().unwrap_or_else(|e| e.into_inner()).unique(),
                frames: field(&c, "frames"),
                broker_up: down_until.is_none(),
            };
            let line = format!(
                "{:.1},{:.2},{:.2},{:.2},{},{},{},{},{},{},{},{}",
                s.t,
                s.rss_mb,
                s.heap_mb,
                s.held_mb,
                s.fds,
                s.threads,
                s.spool_bytes,
                s.spool_depth,
                s.events,
                s.received,
                s.frames,
                u8::from(s.broker_up)
            );
            writeln!(csv, "{line}")?;
            csv.flush()?;
            if samples.len().is_multiple_of(30) {
                println!("{line}");
            }
            samples.push(s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // What the allocator keeps: the resident set before and after giving free pages back, the
    // pipeline still running.
    let rss_before_trim = rss_mb();
    trim();
    let rss_after_trim = rss_mb();

    // The end: the broker up, every event delivered, then EOS and NULL.
    if down_until.is_some() {
        broker.restart()?;
    }
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let p = publish.property::<gst::Structure>("stats");
        let made = field(&p, "events");
        let got = received.lock().unwrap_or_else(|e| e.into_inner()).unique();
        if got >= made || Instant::now() > drain_deadline {
            break;
        }
        subscriber.keep_alive()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    pipeline.send_event(gst::event::Eos::new());
    let _ = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null)?;
    let p = publish.property::<gst::Structure>("stats");
    let made = field(&p, "events");
    let last_wait = Instant::now() + Duration::from_secs(60);
    while (received.lock().unwrap_or_else(|e| e.into_inner()).unique()) < made
        && Instant::now() < last_wait
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let subscriber_restarts = subscriber.restarts;
    drop(subscriber);
    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    let lost = (0..made).filter(|s| !r.contains(*s)).count();
    let duplicates = r.total - r.unique();

    let steady = |f: fn(&Sample) -> f64| {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.t >= args.warm_up)
            .map(|s| (s.t / 3600.0, f(s)))
            .collect();
        let (lo, hi) = points
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        (slope(&points), lo, hi)
    };
    let (rss_slope, rss_lo, rss_hi) = steady(|s| s.rss_mb);
    let (heap_slope, heap_lo, heap_hi) = steady(|s| s.heap_mb);
    let (held_slope, held_lo, held_hi) = steady(|s| s.held_mb);
    let range = |f: fn(&Sample) -> u64| {
        let v: Vec<u64> = samples.iter().map(f).collect();
        (
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
            v.last().copied().unwrap_or(0),
        )
    };
    let (fd_lo, fd_hi, fd_end) = range(|s| s.fds);
    let (th_lo, th_hi, th_end) = range(|s| s.threads);
    let (_, spool_hi, spool_end) = range(|s| s.spool_bytes);
    let (_, depth_hi, _) = range(|s| s.spool_depth);
    let frames = samples.last().map_or(0, |s| s.frames);
    let summary = format!(
        "soak: {minutes:.0} min, {fps} fps live, model {model}, {n_restarts} broker restarts \
         ({down} s down every {every} s), {n} samples\n\
         resident set after {warm:.0} s: {rss_lo:.1}..{rss_hi:.1} MB, slope {rss_slope:+.2} MB/h \
         ({pct:+.2} %/h of {rss_hi:.1} MB); {rss_before_trim:.1} MB at the end, \
         {rss_after_trim:.1} MB after malloc_trim(0)\n\
         heap in use after {warm:.0} s: {heap_lo:.1}..{heap_hi:.1} MB, slope {heap_slope:+.2} MB/h; \
         held from the system {held_lo:.1}..{held_hi:.1} MB, slope {held_slope:+.2} MB/h\n\
         file descriptors {fd_lo}..{fd_hi} (last {fd_end}); threads {th_lo}..{th_hi} (last {th_end})\n\
         spool: largest {spool_hi} B / {depth_hi} events during outages, {spool_end} B at the end\n\
         frames classified {frames}; events made {made}, received {got}, lost {lost}, \
         duplicates {duplicates} (QoS 1 redeliveries); runs seen {runs}; subscriber restarts {sub}\n",
        minutes = args.minutes,
        fps = args.fps,
        model = args.model.display(),
        n_restarts = restarts.len(),
        down = args.down_for,
        every = args.restart_every,
        n = samples.len(),
        warm = args.warm_up,
        pct = if rss_hi > 0.0 {
            100.0 * rss_slope / rss_hi
        } else {
            0.0
        },
        got = r.unique(),
        runs = r.runs.len(),
        sub = subscriber_restarts,
    );
    print!("{summary}");
    std::fs::write(args.out.join("soak.txt"), &summary)?;
    std::fs::write(
        args.out.join("soak.svg"),
        plot(&samples, &restarts, args.warm_up),
    )?;
    println!("wrote {}/soak.{{csv,svg,txt}}", args.out.display());
    Ok(())
}

/// Three stacked panels (resident set; descriptors and threads; spool) over time, broker
/// outages shaded.
fn plot(samples: &[Sample], restarts: &[f64], warm_up: f64) -> String {
    const W: f64 = 900.0;
    const PANEL: f64 = 170.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 30.0;
    let t_max = samples.last().map_or(1.0, |s| s.t.max(1.0));
    let x = |t: f64| LEFT + (W - LEFT - 20.0) * t / t_max;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"18\">visionclassify ! visionpublish soak: \
         broker stopped at the grey lines; warm-up until the dashed line</text>\n",
        TOP + 3.0 * (PANEL + 30.0) + 20.0
    );
    type Series<'a> = (&'a str, &'a str, fn(&Sample) -> f64);
    let panels: [(&str, Vec<Series>); 3] = [
        (
            "memory (MB)",
            vec![
                ("resident set", "#1f77b4", |s| s.rss_mb),
                ("heap in use", "#ff7f0e", |s| s.heap_mb),
            ],
        ),
        (
            "count",
            vec![
                ("file descriptors", "#d62728", |s| s.fds as f64),
                ("threads", "#2ca02c", |s| s.threads as f64),
            ],
        ),
        (
            "spool (events)",
            vec![("spooled events", "#9467bd", |s| s.spool_depth as f64)],
        ),
    ];
    for (i, (label, series)) in panels.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL + 30.0);
        let values: Vec<f64> = series
            .iter()
            .flat_map(|(_, _, f)| samples.iter().map(f))
            .collect();
        let hi = values.iter().copied().fold(0.0f64, f64::max).max(1.0) * 1.1;
        let y = |v: f64| y0 + PANEL - PANEL * v / hi;
        svg += &format!(
            "<rect x=\"{LEFT}\" y=\"{y0}\" width=\"{}\" height=\"{PANEL}\" fill=\"none\" \
             stroke=\"#888\"/>\n<text x=\"5\" y=\"{}\">{label}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{hi:.0}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n",
            W - LEFT - 20.0,
            y0 + PANEL / 2.0,
            LEFT - 4.0,
            y0 + 10.0,
            LEFT - 4.0,
            y0 + PANEL
        );
        for &r in restarts {
            svg += &format!(
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{y0}\" y2=\"{1}\" stroke=\"#ccc\"/>\n",
                x(r),
                y0 + PANEL
            );
        }
        svg += &format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{y0}\" y2=\"{1}\" stroke=\"#555\" \
             stroke-dasharray=\"4 3\"/>\n",
            x(warm_up.min(t_max)),
            y0 + PANEL
        );
        for (j, (name, colour, f)) in series.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .map(|s| format!("{:.1},{:.1}", x(s.t), y(f(s))))
                .collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.2\" \
                 points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>\n",
                points.join(" "),
                LEFT + 8.0 + 140.0 * j as f64,
                y0 + 14.0
            );
        }
    }
    let axis_y = TOP + 3.0 * (PANEL + 30.0) - 14.0;
    for k in 0..=6 {
        let t = t_max * f64::from(k) / 6.0;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{axis_y}\" text-anchor=\"middle\">{:.0} min</text>\n",
            x(t),
            t / 60.0
        );
    }
    svg += "</svg>\n";
    svg
}
