//! State and flow storms (issue 14): `visionclassify ! visionpublish` (real ONNX Runtime, a
//! real mosquitto) in a gst-check Harness, driven through a seeded random sequence of state
//! changes (PAUSED, READY and NULL round trips), flushes with frames in flight, EOS, caps
//! changes (size and pixel format mid-stream, odd sizes, RGB/BGRx/NV12/I420/GRAY8) and an
//! unlink/relink of the link between the two elements while frames flow, at batch 1 and 4.
//!
//! Checked after every step: outside flushes every frame pushed comes out once, in order, with
//! its PTS and a classification; after EOS the pad refuses frames until a flush; no element
//! posts an error; and after each storm (the bin back in NULL) the process has no more threads
//! and the plugin's tokio runtime no more tasks than after the warm-up run, so nothing
//! leaks per start.
//!
//! Nothing waits for a fixed time: each pull waits for the frame (the Harness gives up after
//! 60 s, which turns a deadlock into a failure), and a partial batch leaves on the element's
//! batch timeout. The seed of each storm is printed, and `STORM_SEED=N` replays one.

mod support;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;
use gstvision::meta;
use support::mosquitto::{Mosquitto, MosquittoConfig};
use support::plugin::{data, init, ort_library};

/// A bound that only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(120);

/// xorshift64*: a tiny reproducible generator, so a failing sequence replays from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The caps a storm switches between: RGB and packed, planar YUV and grey, odd sizes too.
const FORMATS: &[(&str, u32, u32)] = &[
    ("RGB", 32, 32),
    ("BGRx", 64, 48),
    ("NV12", 48, 36),
    ("I420", 17, 13),
    ("GRAY8", 33, 21),
    ("RGB", 7, 5),
];

fn caps_of(format: usize) -> gst::Caps {
    let (name, w, h) = FORMATS[format];
    format!("video/x-raw,format={name},width={w},height={h},framerate=30/1")
        .parse()
        .expect("caps")
}

/// A frame of `format` whose bytes vary with `n`, at PTS `n` × 33 ms.
fn frame(format: usize, n: u64) -> gst::Buffer {
    let info = gst_video::VideoInfo::from_caps(&caps_of(format)).expect("video info");
    let data: Vec<u8> = (0..info.size())
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(n * 7) as u8)
        .collect();
    let mut b = gst::Buffer::from_mut_slice(data);
    {
        let b = b.get_mut().expect("new buffer");
        b.set_pts(pts(n));
        b.set_duration(gst::ClockTime::from_mseconds(33));
    }
    b
}

fn pts(n: u64) -> gst::ClockTime {
    gst::ClockTime::from_mseconds(33 * n)
}

fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| e.ok())
        .map(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

fn runtime_tasks() -> usize {
    gstvision::runtime::handle().metrics().num_alive_tasks()
}

/// Waits until the plugin's runtime has at most `n` tasks (stopped elements abort theirs; the
/// runtime notices on its own threads).
fn wait_for_tasks(n: usize) -> usize {
    let start = Instant::now();
    loop {
        let alive = runtime_tasks();
        if alive <= n || start.elapsed() > HANG {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One storm's pipeline and what it has pushed and expects.
struct Storm {
    h: Harness,
    bin: gst::Bin,
    bus: gst::Bus,
    rng: Rng,
    format: usize,
    /// PTS index of the next frame pushed (it only grows, so order checks span flushes).
    next: u64,
    /// Frames pushed that must still come out, in order.
    expected: VecDeque<u64>,
    /// Frames pushed before a flush or an unlink: each may come out at most once, in order,
    /// until the next step.
    maybe: VecDeque<u64>,
    frames_out: usize,
    steps: Vec<String>,
}

impl Storm {
    fn new(batch: u32, port: u16, spool: &std::path::Path, seed: u64) -> Storm {
        let desc = format!(
            "visionclassify name=classify model={} ort-library={} batch-size={batch} \
             ! visionpublish name=publish broker=mqtt://127.0.0.1:{port} sensor-id=storm \
             spool-dir={} backoff-min=100 backoff-max=1000 health-interval=0",
            data("color3.onnx"),
            ort_library(),
            spool.display()
        );
        let bin = gst::parse::bin_from_description(&desc, true).expect("storm bin");
        let bus = gst::Bus::new();
        bin.set_bus(Some(&bus));
        let mut h = Harness::with_element(&bin, Some("sink"), Some("src"));
        h.play();
        let mut storm = Storm {
            h,
            bin,
            bus,
            rng: Rng::new(seed),
            format: 0,
            next: 0,
            expected: VecDeque::new(),
            maybe: VecDeque::new(),
            frames_out: 0,
            steps: Vec::new(),
        };
        storm.start_stream();
        storm
    }

    fn element(&self, name: &str) -> gst::Element {
        self.bin.by_name(name).expect("element in the bin")
    }

    /// Stream-start, caps and segment, as a source sends them after it (re)starts.
    fn start_stream(&mut self) {
        let id = format!("storm-{}", self.next);
        assert!(self.h.push_event(gst::event::StreamStart::new(&id)));
        self.h.set_src_caps(caps_of(self.format));
    }

    fn segment(&mut self) {
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        assert!(self.h.push_event(gst::event::Segment::new(&segment)));
    }

    fn push_frames(&mut self, n: u64) {
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            assert_eq!(
                self.h.push(frame(self.format, i)),
                Ok(gst::FlowSuccess::Ok),
                "push of frame {i}"
            );
            self.expected.push_back(i);
        }
    }

    /// Pulls every expected frame and checks it.
    fn pull_expected(&mut self) {
        while let Some(want) = self.expected.pop_front() {
            let b = self
                .h
                .pull()
                .unwrap_or_else(|_| panic!("frame {want} did not come out within 60 s"));
            let got = self.index_of(&b);
            // A frame pushed before a flush may still precede it; never one out of order.
            if got != want {
                let position = self.maybe.iter().position(|&m| m == got);
                let Some(position) = position else {
                    panic!("frame {got} came out where frame {want} was due");
                };
                self.maybe.drain(..=position);
                self.expected.push_front(want);
                continue;
            }
            self.maybe.clear();
        }
    }

    /// Takes whatever already came out without waiting (after a flush or an unlink): only
    /// frames of `maybe`, in order, each once.
    fn take_leftovers(&mut self) {
        while let Some(b) = self.h.try_pull() {
            let got = self.index_of(&b);
            let position = self
                .maybe
                .iter()
                .position(|&m| m == got)
                .unwrap_or_else(|| panic!("frame {got} came out unexpectedly: {:?}", self.maybe));
            self.maybe.drain(..=position);
        }
    }

    fn index_of(&mut self, b: &gst::Buffer) -> u64 {
        self.frames_out += 1;
        let pts = b.pts().expect("a frame with a PTS");
        let i = pts.mseconds() / 33;
        assert_eq!(pts, self::pts(i), "PTS changed on the way");
        assert!(
            meta::read(b).is_some(),
            "frame {i} came out without a classification"
        );
        i
    }

    fn flush(&mut self) {
        self.maybe.extend(self.expected.drain(..));
        assert!(self.h.push_event(gst::event::FlushStart::new()));
        assert!(self.h.push_event(gst::event::FlushStop::new(true)));
        self.take_leftovers();
        self.segment();
    }

    fn set_state(&mut self, state: gst::State) {
        let ret = self.bin.set_state(state);
        assert!(ret.is_ok(), "bin to {state:?}: {ret:?}");
        let (ret, current, _) = self.bin.state(gst::ClockTime::from_seconds(60));
        assert!(
            ret.is_ok() && current == state,
            "bin to {state:?}: {ret:?}, {current:?}"
        );
    }

    fn errors(&self) {
        while let Some(msg) = self.bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                panic!(
                    "error from {:?}: {} ({:?}) after {:?}",
                    msg.src().map(|s| s.path_string()),
                    e.error(),
                    e.debug(),
                    self.steps
                );
            }
        }
    }

    fn step(&mut self) {
        let choice = self.rng.below(100);
        let n = 1 + self.rng.below(6);
        let name = match choice {
            // Frames, pulled as they come.
            0..=34 => {
                self.push_frames(n);
                self.pull_expected();
                format!("frames {n}")
            }
            // A flush with frames in flight: those may come out or not, later ones must.
            35..=49 => {
                self.push_frames(n);
                self.flush();
                format!("flush after {n}")
            }
            // Size and format switch mid-stream.
            50..=61 => {
                self.format = self.rng.below(FORMATS.len() as u64) as usize;
                self.h.set_src_caps(caps_of(self.format));
                self.push_frames(n);
                self.pull_expected();
                format!("caps {:?}, frames {n}", FORMATS[self.format])
            }
            // EOS after frames: all of them, then EOS; a frame after EOS is refused until a
            // flush.
            62..=71 => {
                self.push_frames(n);
                assert!(self.h.push_event(gst::event::Eos::new()));
                self.pull_expected();
                loop {
                    let ev = self.h.pull_event().expect("EOS within 60 s");
                    if ev.type_() == gst::EventType::Eos {
                        break;
                    }
                }
                assert_eq!(
                    self.h.push(frame(self.format, self.next)),
                    Err(gst::FlowError::Eos),
                    "a frame after EOS"
                );
                self.next += 1;
                self.flush();
                format!("eos after {n}")
            }
            // State round trips: PAUSED keeps the stream; READY and NULL restart it.
            72..=79 => {
                self.set_state(gst::State::Paused);
                self.set_state(gst::State::Playing);
                self.push_frames(n);
                self.pull_expected();
                "paused".to_string()
            }
            80..=87 => {
                let to = if choice < 84 {
                    gst::State::Ready
                } else {
                    gst::State::Null
                };
                self.push_frames(n);
                self.maybe.extend(self.expected.drain(..));
                self.set_state(to);
                self.take_leftovers();
                self.set_state(gst::State::Playing);
                self.start_stream();
                self.push_frames(n);
                self.pull_expected();
                format!("{to:?} with {n} in flight")
            }
            // The link between the elements goes away while frames flow, and comes back:
            // frames in between may be lost (not-linked), the stream recovers after a flush.
            _ => {
                let src = self.element("classify").static_pad("src").expect("src");
                let sink = self.element("publish").static_pad("sink").expect("sink");
                self.push_frames(n);
                src.unlink(&sink).expect("unlink");
                for _ in 0..n {
                    let i = self.next;
                    self.next += 1;
                    let ret = self.h.push(frame(self.format, i));
                    assert!(
                        matches!(ret, Ok(_) | Err(gst::FlowError::NotLinked)),
                        "push while unlinked: {ret:?}"
                    );
                    self.expected.push_back(i);
                }
                src.link(&sink).expect("relink");
                self.flush();
                self.push_frames(n);
                self.pull_expected();
                format!("unlink/relink around {n}")
            }
        };
        self.steps.push(name);
        self.errors();
    }
}

#[test]
fn storms_of_state_changes_flushes_eos_caps_and_relinks_lose_nothing_and_leak_nothing() {
    init();
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let spool = tempfile::tempdir().expect("spool dir");
    let replay: Option<u64> = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());

    // Warm-up: one start and stop, so that what lives for the whole process (GStreamer's
    // task pool, ONNX Runtime's environment, the plugin's runtime) exists in the baseline.
    {
        let mut warm = Storm::new(1, broker.port(), spool.path(), 1);
        warm.push_frames(2);
        warm.pull_expected();
        warm.set_state(gst::State::Null);
    }
    let threads_before = threads();
    let tasks_before = wait_for_tasks(0).max(runtime_tasks());

    for batch in [1u32, 4] {
        for round in 0..3u64 {
            let seed = replay.unwrap_or(0x5eed_0000 + u64::from(batch) * 100 + round);
            let mut storm = Storm::new(batch, broker.port(), spool.path(), seed);
            for _ in 0..40 {
                storm.step();
            }
            storm.push_frames(3);
            storm.pull_expected();
            let summary = format!(
                "batch {batch}, seed {seed}: {} steps, {} frames out ({})",
                storm.steps.len(),
                storm.frames_out,
                storm.steps.join("; ")
            );
            storm.set_state(gst::State::Null);
            storm.errors();
            drop(storm);
            println!("{summary}");

            // No thread and no task more than after the warm-up. GLib keeps up to two idle
            // threads of GStreamer's task pool for reuse; they are the only slack.
            let tasks = wait_for_tasks(tasks_before);
            assert!(
                tasks <= tasks_before,
                "{tasks} runtime tasks alive after NULL, {tasks_before} before ({summary})"
            );
            let after = threads();
            println!(
                "  after NULL: {} threads ({} after the warm-up), {tasks} runtime tasks ({tasks_before})",
                after.len(),
                threads_before.len()
            );
            assert!(
                after.len() <= threads_before.len() + 2,
                "threads after NULL: {after:?}\nafter the warm-up: {threads_before:?}\n({summary})"
            );
        }
    }
}
