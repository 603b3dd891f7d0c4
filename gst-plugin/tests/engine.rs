//! Several `visionclassify` elements on one shared engine (`model-instance-id`), with real
//! ONNX Runtime and real pipelines: each stream gets its own frames back, in its own order,
//! with the right labels, while batches hold frames of several streams; one stream's stall,
//! flush or EOS does not touch the others; conflicting settings fail clearly. Also the
//! batching path's flow and query faults that the engine work fixed.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

mod support;

use gst::prelude::*;
use gst_check::Harness;
use gstvision::meta::{self, FrameResult};
use support::plugin::{data, init, ort_library, start_error_of};

const RGB_32: &str = "video/x-raw,format=RGB,width=32,height=32,framerate=30/1";
const RED: [u8; 3] = [220, 20, 30];
const GREEN: [u8; 3] = [10, 200, 40];
const BLUE: [u8; 3] = [30, 40, 210];

fn element(name: &str, props: &[(&str, &str)]) -> gst::Element {
    init();
    let e = gst::ElementFactory::make("visionclassify")
        .name(name)
        .property("model", data("color3.onnx"))
        .property("ort-library", ort_library())
        .build()
        .expect("visionclassify");
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    e
}

fn harness(name: &str, props: &[(&str, &str)]) -> Harness {
    let e = element(name, props);
    let mut h = Harness::with_element(&e, Some("sink"), Some("src"));
    h.set_src_caps_str(RGB_32);
    h.play();
    h
}

fn frame(rgb: [u8; 3], i: u64) -> gst::Buffer {
    let data: Vec<u8> = rgb.iter().copied().cycle().take(32 * 32 * 3).collect();
    let mut b = gst::Buffer::from_mut_slice(data);
    {
        let b = b.get_mut().expect("new buffer");
        b.set_pts(gst::ClockTime::from_mseconds(33 * i));
        b.set_duration(gst::ClockTime::from_mseconds(33));
    }
    b
}

fn result(b: &gst::Buffer) -> FrameResult {
    meta::read(b).unwrap_or_else(|| panic!("buffer {:?} has no classification meta", b.pts()))
}

/// (pts in ms, label, frame number, frames in the run) of each buffer.
fn summary(buffers: &[gst::Buffer]) -> Vec<(u64, String, u64, u32)> {
    buffers
        .iter()
        .map(|b| {
            let r = result(b);
            (
                b.pts().expect("pts").mseconds(),
                r.classification.best.label.to_string(),
                r.frame,
                r.batch_size,
            )
        })
        .collect()
}

fn pull_until_eos(h: &mut Harness) -> Vec<gst::Buffer> {
    let mut got = Vec::new();
    while let Some(b) = h.pull_until_eos().expect("pull") {
        got.push(b);
    }
    got
}

fn stats(h: &Harness) -> gst::Structure {
    h.element()
        .expect("element")
        .property::<gst::Structure>("stats")
}

#[test]
fn three_streams_fill_shared_batches_and_each_gets_its_own_frames_in_order() {
    let props = [
        ("model-instance-id", "three"),
        ("batch-size", "6"),
        ("batch-timeout", "100000"),
    ];
    let mut hs = [
        harness("cam-red", &props),
        harness("cam-green", &props),
        harness("cam-blue", &props),
    ];
    let colours = [RED, GREEN, BLUE];
    // Interleaved as cameras would be; the timeout is never reached: only full batches of
    // 6 frames (2 of each camera) run.
    for i in 0..4u64 {
        for (h, c) in hs.iter_mut().zip(colours) {
            h.push(frame(c, i)).expect("push");
        }
    }
    let s = stats(&hs[0]);
    assert_eq!(s.get::<u64>("engine-streams").expect("field"), 3);
    assert_eq!(s.get::<String>("engine-id").expect("field"), "three");
    for h in hs.iter_mut() {
        assert!(h.push_event(gst::event::Eos::new()));
    }
    for (h, label) in hs.iter_mut().zip(["red", "green", "blue"]) {
        let got = summary(&pull_until_eos(h));
        let want: Vec<_> = (0..4u64)
            .map(|i| (33 * i, label.to_string(), i, 6))
            .collect();
        assert_eq!(got, want, "{label} stream");
        let s = stats(h);
        assert_eq!(s.get::<u64>("frames").expect("frames"), 4);
        assert_eq!(s.get::<u64>("batches").expect("batches"), 2);
    }
    let s = stats(&hs[2]);
    assert_eq!(s.get::<u64>("engine-batches").expect("field"), 2);
    assert_eq!(s.get::<u64>("engine-frames").expect("field"), 12);
    assert_eq!(s.get::<f64>("engine-mean-fill").expect("field"), 6.0);
    assert_eq!(s.get::<u64>("engine-queued").expect("field"), 0);
}

#[test]
fn two_workers_run_batches_side_by_side_and_each_stream_keeps_its_order() {
    let props = [
        ("model-instance-id", "two-workers"),
        ("inference-workers", "2"),
        ("batch-size", "2"),
        ("batch-timeout", "0"),
    ];
    let mut a = harness("workers-a", &props);
    let mut b = harness("workers-b", &props);
    let pattern = [RED, GREEN, BLUE];
    let names = ["red", "green", "blue"];
    for i in 0..30u64 {
        a.push(frame(pattern[i as usize % 3], i)).expect("push");
        b.push(frame(pattern[(i as usize + 1) % 3], i))
            .expect("push");
    }
    for h in [&mut a, &mut b] {
        assert!(h.push_event(gst::event::Eos::new()));
    }
    for (h, shift) in [(&mut a, 0), (&mut b, 1)] {
        let got = summary(&pull_until_eos(h));
        let want: Vec<(u64, String, u64)> = (0..30u64)
            .map(|i| (33 * i, names[(i as usize + shift) % 3].to_string(), i))
            .collect();
        assert_eq!(
            got.into_iter().map(|g| (g.0, g.1, g.2)).collect::<Vec<_>>(),
            want
        );
    }
    assert_eq!(
        stats(&a).get::<u64>("engine-frames").expect("field"),
        60,
        "both streams on one engine"
    );
}

#[test]
fn eos_on_one_stream_drains_it_while_the_other_goes_on() {
    let props = [
        ("model-instance-id", "eos"),
        ("batch-size", "8"),
        ("batch-timeout", "100000"),
    ];
    let mut a = harness("eos-a", &props);
    let mut b = harness("eos-b", &props);
    for i in 0..2 {
        a.push(frame(RED, i)).expect("push");
        b.push(frame(BLUE, i)).expect("push");
    }
    // A's EOS cannot wait for a batch of 8 nor for the timeout: its frames run now.
    assert!(a.push_event(gst::event::Eos::new()));
    let got = summary(&pull_until_eos(&mut a));
    assert_eq!(
        got.iter().map(|g| (g.1.as_str(), g.2)).collect::<Vec<_>>(),
        [("red", 0), ("red", 1)]
    );
    // B has not ended: it goes on, numbering its own frames only.
    for i in 2..4 {
        b.push(frame(GREEN, i)).expect("push");
    }
    assert!(b.push_event(gst::event::Eos::new()));
    let got = summary(&pull_until_eos(&mut b));
    assert_eq!(
        got.iter()
            .map(|g| (g.0, g.1.as_str(), g.2))
            .collect::<Vec<_>>(),
        [
            (0, "blue", 0),
            (33, "blue", 1),
            (66, "green", 2),
            (99, "green", 3)
        ]
    );
}

#[test]
fn a_flush_on_one_stream_drops_only_its_frames() {
    let props = [
        ("model-instance-id", "flush"),
        ("batch-size", "4"),
        ("batch-timeout", "100000"),
    ];
    let mut a = harness("flush-a", &props);
    let mut b = harness("flush-b", &props);
    a.push(frame(RED, 0)).expect("push");
    a.push(frame(RED, 1)).expect("push");
    b.push(frame(BLUE, 0)).expect("push");
    // A seeks: its two waiting frames leave the engine; B's frame stays.
    assert!(a.push_event(gst::event::FlushStart::new()));
    assert!(a.push_event(gst::event::FlushStop::new(true)));
    assert!(a.push_event(gst::event::StreamStart::new("after-flush")));
    a.set_src_caps_str(RGB_32);
    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(a.push_event(gst::event::Segment::new(&segment)));
    // Three more of B fill a batch of 4 with B's frames only.
    for i in 1..4 {
        b.push(frame(BLUE, i)).expect("push");
    }
    let got = summary(&(0..4).map(|_| b.pull().expect("pull")).collect::<Vec<_>>());
    assert_eq!(
        got,
        (0..4u64)
            .map(|i| (33 * i, "blue".to_string(), i, 4))
            .collect::<Vec<_>>()
    );
    a.push(frame(GREEN, 10)).expect("push");
    assert!(a.push_event(gst::event::Eos::new()));
    let got = summary(&pull_until_eos(&mut a));
    assert_eq!(got, [(330, "green".to_string(), 0, 1)]);
    assert_eq!(stats(&a).get::<u64>("frames").expect("frames"), 1);
    assert_eq!(stats(&b).get::<u64>("frames").expect("frames"), 4);
}

/// Counts the buffers reaching a fakesink, with their labels.
fn count_handoffs(sink: &gst::Element) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    sink.connect("handoff", false, move |args| {
        let buffer = args[1].get::<gst::Buffer>().expect("buffer");
        let label = meta::read(&buffer)
            .map(|r| r.classification.best.label.to_string())
            .unwrap_or_default();
        let _ = tx.lock().expect("sender").send(label);
        None
    });
    rx
}

#[test]
fn a_stalled_camera_and_a_blocked_one_do_not_hold_up_the_others() {
    init();
    let branch = |name: &str, src: &str| {
        format!(
            "{src} ! video/x-raw,format=RGB,width=32,height=32,framerate=30/1 ! visionclassify name={name} model={} ort-library={} model-instance-id=isolation batch-size=4 batch-timeout=30 inference-workers=2 ! fakesink name={name}-sink sync=false async=false signal-handoffs=true",
            data("color3.onnx"),
            ort_library()
        )
    };
    let pipeline = gst::parse::launch(
        &[
            branch(
                "moving",
                "videotestsrc is-live=true num-buffers=40 pattern=red",
            ),
            // Never sends a frame: a camera that stalls.
            branch(
                "stalled",
                "appsrc name=stalled-src is-live=true format=time",
            ),
            // Its downstream blocks on the first frame: a paused or stuck branch.
            branch("blocked", "videotestsrc pattern=blue"),
        ]
        .join("  "),
    )
    .expect("pipeline");
    let pipeline = pipeline.downcast::<gst::Pipeline>().expect("pipeline");
    let moving = count_handoffs(&pipeline.by_name("moving-sink").expect("sink"));
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let blocked_frames = Arc::new(Mutex::new(0u32));
    let (reached, blocked_reached) = mpsc::channel();
    {
        let (gate, blocked_frames) = (gate.clone(), blocked_frames.clone());
        let reached = Mutex::new(reached);
        pipeline
            .by_name("blocked-sink")
            .expect("sink")
            .connect("handoff", false, move |_| {
                *blocked_frames.lock().expect("count") += 1;
                let _ = reached.lock().expect("sender").send(());
                let (open, cond) = &*gate;
                let mut open = open.lock().expect("gate");
                while !*open {
                    open = cond.wait(open).expect("gate");
                }
                None
            });
    }
    pipeline.set_state(gst::State::Playing).expect("playing");
    // The blocked branch is stuck on its first frame; the moving camera (live, 30 frames a
    // second) still delivers every frame. No timing is assumed: the waits are for events.
    blocked_reached
        .recv_timeout(Duration::from_secs(60))
        .expect("the blocked branch's first frame reaches its sink");
    let mut labels = Vec::new();
    for _ in 0..40 {
        labels.push(
            moving
                .recv_timeout(Duration::from_secs(60))
                .expect("every frame of the moving camera arrives"),
        );
    }
    assert!(labels.iter().all(|l| l == "red"), "{labels:?}");
    let blocked_count = *blocked_frames.lock().expect("count");
    assert_eq!(blocked_count, 1, "it is still blocked");
    let blocked = pipeline.by_name("blocked").expect("element");
    let s = blocked.property::<gst::Structure>("stats");
    assert_eq!(s.get::<u64>("engine-streams").expect("field"), 3);
    // Preprocessed tensors, however many frames went through: at most (workers + 1) x
    // batch-size admitted, plus a batch being copied by each of the 2 workers.
    let slots = s.get::<u64>("engine-slots").expect("field");
    assert!((1..=20).contains(&slots), "{slots} slots");
    {
        let (open, cond) = &*gate;
        *open.lock().expect("gate") = true;
        cond.notify_all();
    }
    pipeline.set_state(gst::State::Null).expect("null");
}

/// Starts a second element on an engine another element holds; returns the error text.
fn second_element_error(first: &[(&str, &str)], second: &[(&str, &str)]) -> String {
    let _h = harness("first-cam", first);
    start_error_of(&element("second-cam", second))
}

#[test]
fn a_conflicting_second_element_fails_naming_both_and_the_setting() {
    let msg = second_element_error(
        &[("model-instance-id", "conflict-a"), ("batch-size", "4")],
        &[("model-instance-id", "conflict-a"), ("batch-size", "2")],
    );
    for part in [
        "conflict-a",
        "first-cam",
        "second-cam",
        "batch-size=4",
        "batch-size=2",
    ] {
        assert!(msg.contains(part), "{msg:?} should name {part:?}");
    }
    let msg = second_element_error(
        &[("model-instance-id", "conflict-b")],
        &[
            ("model-instance-id", "conflict-b"),
            ("model", &data("gray2.onnx")),
        ],
    );
    assert!(
        msg.contains("model=") && msg.contains("gray2.onnx") && msg.contains("color3.onnx"),
        "{msg}"
    );
}

#[test]
fn the_engine_closes_with_its_last_element_and_private_engines_stay_apart() {
    {
        let h = harness(
            "closing",
            &[("model-instance-id", "closing"), ("batch-size", "4")],
        );
        assert_eq!(stats(&h).get::<u64>("engine-streams").expect("field"), 1);
    }
    // The first engine closed with its element: other settings may open it anew.
    let mut h = harness(
        "reopened",
        &[("model-instance-id", "closing"), ("batch-size", "2")],
    );
    h.push(frame(GREEN, 0)).expect("push");
    h.push(frame(GREEN, 1)).expect("push");
    assert_eq!(result(&h.pull().expect("pull")).batch_size, 2);

    let p1 = harness("private-1", &[]);
    let p2 = harness("private-2", &[]);
    for p in [&p1, &p2] {
        let s = stats(p);
        assert_eq!(s.get::<u64>("engine-streams").expect("field"), 1);
        assert_eq!(s.get::<String>("engine-id").expect("field"), "");
    }
}

#[test]
fn per_stream_settings_stay_per_stream_on_a_shared_engine() {
    let shared = [("model-instance-id", "per-stream"), ("batch-size", "2")];
    let mut a = harness("top1", &shared);
    let mut props = shared.to_vec();
    props.extend([("top-k", "3"), ("inference-interval", "2")]);
    let mut b = harness("top3", &props);
    a.push(frame(RED, 0)).expect("push");
    b.push(frame(BLUE, 0)).expect("push");
    b.push(frame(RED, 1)).expect("push"); // reuses frame 0's result
    let ra = result(&a.pull().expect("pull"));
    assert_eq!(ra.classification.classes.len(), 1);
    assert_eq!(ra.batch_size, 2, "one frame of each stream in the run");
    let rb = result(&b.pull().expect("pull"));
    assert_eq!(rb.classification.classes.len(), 3);
    assert_eq!(&*rb.classification.best.label, "blue");
    let rb = result(&b.pull().expect("pull"));
    assert!(rb.reused);
    assert_eq!(&*rb.classification.best.label, "blue");
}

#[test]
fn a_post_messages_change_while_playing_applies_to_the_next_frame() {
    let mut h = harness("messages", &[]);
    let bus = gst::Bus::new();
    h.element().expect("element").set_bus(Some(&bus));
    h.push(frame(RED, 0)).expect("push");
    h.pull().expect("pull");
    h.element()
        .expect("element")
        .set_property("post-messages", true);
    h.push(frame(GREEN, 1)).expect("push");
    h.pull().expect("pull");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Element],
        )
        .expect("a visionclassify message for the second frame");
    let s = msg.structure().expect("structure");
    assert_eq!(s.name(), "visionclassify");
    assert_eq!(s.get::<u64>("frame").expect("frame"), 1);
}

/// A pad standing in for downstream: answers allocation queries with a bounded pool, and
/// answers every buffer with `chain`.
fn downstream(chain: Result<gst::FlowSuccess, gst::FlowError>) -> gst::Pad {
    init();
    gst::Pad::builder(gst::PadDirection::Sink)
        .name("downstream")
        .chain_function(move |_, _, _| chain)
        .query_function(|pad, parent, query| {
            if let gst::QueryViewMut::Allocation(q) = query.view_mut() {
                let pool = gst::BufferPool::new();
                q.add_allocation_pool(Some(&pool), 32 * 32 * 3, 2, 10);
                return true;
            }
            gst::Pad::query_default(pad, parent, query)
        })
        .build()
}

/// visionclassify between a pad we push from and `downstream`.
fn wired(props: &[(&str, &str)], sink: &gst::Pad) -> (gst::Element, gst::Pad) {
    let e = element("wired", props);
    let up = gst::Pad::builder(gst::PadDirection::Src)
        .name("upstream")
        .build();
    up.link(&e.static_pad("sink").expect("sink pad"))
        .expect("link up");
    e.static_pad("src")
        .expect("src pad")
        .link(sink)
        .expect("link down");
    up.set_active(true).expect("activate");
    sink.set_active(true).expect("activate");
    e.set_state(gst::State::Playing).expect("playing");
    assert!(up.push_event(gst::event::StreamStart::new("wired")));
    assert!(up.push_event(gst::event::Caps::new(
        &RGB_32.parse::<gst::Caps>().expect("caps")
    )));
    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(up.push_event(gst::event::Segment::new(&segment)));
    (e, up)
}

#[test]
fn allocation_raises_the_pools_maximum_not_their_minimum() {
    // A batch per worker and one more being filled, each frame to classify with 29 reused
    // frames behind it: 16 frames with one worker, 24 with two.
    for (workers, frames) in [("1", 16), ("2", 24)] {
        let sink = downstream(Ok(gst::FlowSuccess::Ok));
        let (e, up) = wired(
            &[
                ("batch-size", "8"),
                ("inference-interval", "30"),
                ("inference-workers", workers),
            ],
            &sink,
        );
        let caps = RGB_32.parse::<gst::Caps>().expect("caps");
        let mut q = gst::query::Allocation::new(Some(&caps), true);
        assert!(up.peer_query(&mut q));
        let pools: Vec<_> = q.allocation_pools().collect();
        assert_eq!(pools.len(), 1);
        assert_eq!(
            (pools[0].2, pools[0].3),
            (2, 10 + frames * 30),
            "{workers} workers"
        );
        e.set_state(gst::State::Null).expect("null");
    }
}

#[test]
fn a_serialized_query_does_not_wait_on_a_task_stopped_by_a_downstream_error() {
    let sink = downstream(Err(gst::FlowError::Error));
    let (e, up) = wired(&[("batch-size", "2"), ("batch-timeout", "100000")], &sink);
    assert_eq!(up.push(frame(RED, 0)), Ok(gst::FlowSuccess::Ok));
    // The tag event is queued behind the frame and hurries it; pushing the frame fails, so
    // the task stops with the event still queued.
    let tags = gst::TagList::new();
    up.push_event(gst::event::Tag::new(tags));
    let (tx, rx) = mpsc::channel();
    let asker = {
        let up = up.clone();
        std::thread::spawn(move || {
            let caps = RGB_32.parse::<gst::Caps>().expect("caps");
            let mut q = gst::query::Allocation::new(Some(&caps), true);
            let _ = tx.send(up.peer_query(&mut q));
        })
    };
    let answered = rx.recv_timeout(Duration::from_secs(30));
    e.set_state(gst::State::Null).expect("null");
    asker.join().expect("thread");
    assert_eq!(
        answered,
        Ok(false),
        "the query fails at once instead of waiting for a task that will not run"
    );
}

#[test]
fn not_linked_downstream_goes_back_upstream_instead_of_an_element_error() {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc name=camera ! video/x-raw,format=RGB,width=32,height=32 ! visionclassify name=classifier model={} ort-library={}",
        data("color3.onnx"),
        ort_library()
    ))
    .expect("pipeline");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let msg = pipeline
        .bus()
        .expect("bus")
        .timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Error])
        .expect("an error");
    pipeline.set_state(gst::State::Null).expect("null");
    let src = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
    assert_eq!(
        src, "camera",
        "the source reports not-linked, as it would with a queue: {msg:?}"
    );
}
