//! Harness tests of `visionclassify` with real ONNX Runtime and the small models in
//! `tests/data/` (see its README for what each model computes).

use std::time::{Duration, Instant};

mod support;

use gst::prelude::*;
use gst_check::Harness;
use gstvision::meta::{self, FrameResult};
use support::plugin::{data, init, ort_library, start_error_of};

fn element(model: &str, props: &[(&str, &str)]) -> gst::Element {
    init();
    let e = gst::ElementFactory::make("visionclassify")
        .property("model", data(model))
        .property("ort-library", ort_library())
        .build()
        .expect("visionclassify");
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    e
}

fn harness(model: &str, props: &[(&str, &str)], caps: &str) -> Harness {
    let e = element(model, props);
    let mut h = Harness::with_element(&e, Some("sink"), Some("src"));
    h.set_src_caps_str(caps);
    h.play();
    h
}

const RGB_64X48: &str = "video/x-raw,format=RGB,width=64,height=48,framerate=30/1";
const RED: [u8; 3] = [220, 20, 30];
const GREEN: [u8; 3] = [10, 200, 40];
const BLUE: [u8; 3] = [30, 40, 210];
const GREY: [u8; 3] = [128, 128, 128];

fn rgb_frame(w: usize, h: usize, rgb: [u8; 3], i: u64) -> gst::Buffer {
    let data: Vec<u8> = rgb.iter().copied().cycle().take(w * h * 3).collect();
    let mut b = gst::Buffer::from_mut_slice(data);
    {
        let b = b.get_mut().expect("new buffer");
        b.set_pts(gst::ClockTime::from_mseconds(33 * i));
        b.set_dts(gst::ClockTime::from_mseconds(33 * i + 1));
        b.set_duration(gst::ClockTime::from_mseconds(33));
        b.set_offset(i);
    }
    b
}

fn result(b: &gst::Buffer) -> FrameResult {
    meta::read(b).unwrap_or_else(|| panic!("buffer {:?} has no classification meta", b.pts()))
}

fn best(b: &gst::Buffer) -> String {
    result(b).classification.best.label.to_string()
}

#[test]
fn passes_frames_through_untouched_with_meta() {
    let mut h = harness("color3.onnx", &[], RGB_64X48);
    let input = rgb_frame(64, 48, RED, 3);
    let input_ptr = input.map_readable().expect("map").as_ptr();
    let kept = input.clone();
    h.push(input).expect("push");
    let out = h.pull().expect("pull");
    let map = out.map_readable().expect("map");
    assert_eq!(map.as_ptr(), input_ptr, "pixels must not be copied");
    assert_eq!(map.as_slice(), kept.map_readable().expect("map").as_slice());
    assert_eq!(out.pts(), Some(gst::ClockTime::from_mseconds(99)));
    assert_eq!(out.dts(), Some(gst::ClockTime::from_mseconds(100)));
    assert_eq!(out.duration(), Some(gst::ClockTime::from_mseconds(33)));
    assert_eq!(out.offset(), 3);
    let r = result(&out);
    assert_eq!(&*r.model, "color3");
    assert_eq!(&*r.classification.best.label, "red");
    assert_eq!(r.classification.best.class_id, 0);
    assert!(r.classification.best.confidence > 0.99, "{r:?}");
    assert_eq!(r.classification.classes.len(), 1, "top-k defaults to 1");
    assert!(!r.reused);
    assert_eq!(r.batch_size, 1);
    assert!(r.inference_ns > 0);
    assert_eq!(r.frame, 0);
    // The caps are forwarded unchanged.
    let caps = h
        .sinkpad()
        .expect("harness sink pad")
        .current_caps()
        .expect("caps");
    assert_eq!(caps, gst::Caps::from_str(RGB_64X48).expect("caps"));
}

use std::str::FromStr;

/// With `v1_24`, the same result is also readable as GStreamer analytics classification.
#[cfg(feature = "v1_24")]
#[test]
fn analytics_classification_meta_is_attached() {
    let mut h = harness("color3.onnx", &[("top-k", "2")], RGB_64X48);
    h.push(rgb_frame(64, 48, BLUE, 0)).expect("push");
    let out = h.pull().expect("pull");
    let cls = meta::analytics::read(&out);
    assert_eq!(cls.len(), 1, "one classification per result: {cls:?}");
    assert_eq!(cls[0].len(), 2);
    assert_eq!(cls[0][0].0, "blue");
    assert!(cls[0][0].1 > 0.99);
}

#[test]
fn batches_keep_order_and_timestamps_and_eos_drains_the_partial_batch() {
    let mut h = harness(
        "color3.onnx",
        &[("batch-size", "4"), ("batch-timeout", "10000")],
        RGB_64X48,
    );
    let colours = [RED, GREEN, BLUE];
    let names = ["red", "green", "blue"];
    for i in 0..10u64 {
        h.push(rgb_frame(64, 48, colours[i as usize % 3], i))
            .expect("push");
    }
    // Two full batches went through; the last two frames wait for a third batch.
    let mut out = Vec::new();
    for _ in 0..8 {
        out.push(h.pull().expect("pull"));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        h.try_pull().is_none(),
        "a partial batch waits for its timeout"
    );
    assert!(h.push_event(gst::event::Eos::new()));
    out.push(h.pull().expect("pull"));
    out.push(h.pull().expect("pull"));
    for (i, b) in out.iter().enumerate() {
        assert_eq!(b.pts(), Some(gst::ClockTime::from_mseconds(33 * i as u64)));
        assert_eq!(best(b), names[i % 3], "frame {i}");
        let r = result(b);
        assert_eq!(r.frame, i as u64);
        assert_eq!(r.batch_size, if i < 8 { 4 } else { 2 }, "frame {i}");
    }
    // EOS comes after the last frame.
    loop {
        let ev = h.pull_event().expect("event");
        if ev.type_() == gst::EventType::Eos {
            break;
        }
    }
}

#[test]
fn batch_timeout_releases_a_partial_batch() {
    let mut h = harness(
        "color3.onnx",
        &[("batch-size", "8"), ("batch-timeout", "60")],
        RGB_64X48,
    );
    let started = Instant::now();
    for i in 0..3 {
        h.push(rgb_frame(64, 48, BLUE, i)).expect("push");
    }
    for _ in 0..3 {
        let b = h.pull().expect("pull");
        assert_eq!(result(&b).batch_size, 3);
        assert_eq!(best(&b), "blue");
    }
    assert!(started.elapsed() >= Duration::from_millis(60));
}

#[test]
fn flush_drops_the_pending_batch_cleanly() {
    let mut h = harness(
        "color3.onnx",
        &[("batch-size", "8"), ("batch-timeout", "10000")],
        RGB_64X48,
    );
    // Two frames leave (batch-size 1 until the first flush would not test numbering).
    h.push(rgb_frame(64, 48, RED, 0)).expect("push");
    h.push_event(gst::event::CustomDownstream::new(
        gst::Structure::new_empty("drain"),
    ));
    h.push(rgb_frame(64, 48, RED, 1)).expect("push");
    h.push_event(gst::event::CustomDownstream::new(
        gst::Structure::new_empty("drain"),
    ));
    let before: Vec<u64> = (0..2)
        .map(|_| result(&h.pull().expect("pull")).frame)
        .collect();
    assert_eq!(before, [0, 1]);
    for i in 2..5 {
        h.push(rgb_frame(64, 48, RED, i)).expect("push");
    }
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    // Sticky events are resent after a flush as a real source would.
    assert!(h.push_event(gst::event::StreamStart::new("after-flush")));
    h.set_src_caps_str(RGB_64X48);
    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    for i in 10..12 {
        h.push(rgb_frame(64, 48, GREEN, i))
            .expect("push after flush");
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let mut got = Vec::new();
    while let Some(b) = h.pull_until_eos().expect("pull") {
        got.push(b);
    }
    let pts: Vec<_> = got
        .iter()
        .map(|b| b.pts().expect("pts").mseconds())
        .collect();
    assert_eq!(
        pts,
        vec![330, 363],
        "flushed frames are dropped, later ones arrive"
    );
    assert!(got.iter().all(|b| best(b) == "green"));
    assert_eq!(
        got.iter().map(|b| result(b).frame).collect::<Vec<_>>(),
        [0, 1],
        "numbering restarts after a flush"
    );
}

#[test]
fn inference_interval_reuses_the_last_result() {
    let mut h = harness(
        "color3.onnx",
        &[
            ("inference-interval", "3"),
            ("batch-size", "2"),
            ("batch-timeout", "0"),
        ],
        RGB_64X48,
    );
    // Frames 0, 3, 6 are classified; the others are of a different colour and must carry
    // the result of the classified frame before them.
    let colours = [RED, GREEN, GREEN, BLUE, RED, RED, GREEN];
    for (i, c) in colours.iter().enumerate() {
        h.push(rgb_frame(64, 48, *c, i as u64)).expect("push");
    }
    h.push_event(gst::event::Eos::new());
    let mut got = Vec::new();
    while let Some(b) = h.pull_until_eos().expect("pull") {
        got.push(result(&b));
    }
    let summary: Vec<(String, bool)> = got
        .iter()
        .map(|r| (r.classification.best.label.to_string(), r.reused))
        .collect();
    let expect = [
        ("red", false),
        ("red", true),
        ("red", true),
        ("blue", false),
        ("blue", true),
        ("blue", true),
        ("green", false),
    ];
    assert_eq!(summary, expect.map(|(l, r)| (l.to_string(), r)).to_vec());
    assert_eq!(
        got.iter().map(|r| r.frame).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
}

#[test]
fn top_k_and_threshold() {
    let mut h = harness("color3.onnx", &[("top-k", "3")], RGB_64X48);
    h.push(rgb_frame(64, 48, GREY, 0)).expect("push");
    let r = result(&h.pull().expect("pull"));
    let c = &r.classification;
    assert_eq!(c.classes.len(), 3);
    for class in &c.classes {
        assert!((class.confidence - 1.0 / 3.0).abs() < 0.01, "{c:?}");
    }

    let mut h = harness(
        "color3.onnx",
        &[("top-k", "3"), ("threshold", "0.5")],
        RGB_64X48,
    );
    h.push(rgb_frame(64, 48, GREY, 0)).expect("push");
    h.push(rgb_frame(64, 48, GREEN, 1)).expect("push");
    let grey = result(&h.pull().expect("pull"));
    assert!(grey.classification.below_threshold(), "{grey:?}");
    assert!(grey.classification.classes.is_empty());
    assert!((grey.classification.best.confidence - 1.0 / 3.0).abs() < 0.01);
    let green = result(&h.pull().expect("pull"));
    assert!(!green.classification.below_threshold());
    assert_eq!(
        green.classification.classes.len(),
        1,
        "only green passes 0.5"
    );
    assert_eq!(&*green.classification.classes[0].label, "green");
}

#[test]
fn formats_layouts_and_model_types() {
    // NHWC uint8 BGR model with probabilities output.
    let mut h = harness("color3_nhwc_u8.onnx", &[], RGB_64X48);
    for (i, (c, name)) in [(RED, "red"), (GREEN, "green"), (BLUE, "blue")]
        .iter()
        .enumerate()
    {
        h.push(rgb_frame(64, 48, *c, i as u64)).expect("push");
        assert_eq!(best(&h.pull().expect("pull")), *name);
    }
    // One-channel model.
    let mut h = harness("gray2.onnx", &[], RGB_64X48);
    h.push(rgb_frame(64, 48, [250, 250, 250], 0)).expect("push");
    assert_eq!(best(&h.pull().expect("pull")), "bright");
    h.push(rgb_frame(64, 48, [5, 5, 5], 1)).expect("push");
    assert_eq!(best(&h.pull().expect("pull")), "dark");
    // BGRx input: the element maps channels by format.
    let mut h = harness(
        "color3.onnx",
        &[],
        "video/x-raw,format=BGRx,width=16,height=8,framerate=30/1",
    );
    let bgrx: Vec<u8> = [30u8, 40, 210, 0]
        .iter()
        .copied()
        .cycle()
        .take(16 * 8 * 4)
        .collect();
    h.push(gst::Buffer::from_mut_slice(bgrx)).expect("push");
    assert_eq!(best(&h.pull().expect("pull")), "red");
}

#[test]
fn fixed_batch_models_are_padded() {
    let mut h = harness(
        "color3_fixed4.onnx",
        &[("batch-size", "2"), ("batch-timeout", "0")],
        RGB_64X48,
    );
    for (i, c) in [BLUE, RED, GREEN].iter().enumerate() {
        h.push(rgb_frame(64, 48, *c, i as u64)).expect("push");
    }
    h.push_event(gst::event::Eos::new());
    let mut labels = Vec::new();
    while let Some(b) = h.pull_until_eos().expect("pull") {
        labels.push(best(&b));
    }
    assert_eq!(labels, ["blue", "red", "green"]);
}

#[test]
fn labels_file_and_models_without_metadata() {
    let mut h = harness("color3_nometa.onnx", &[], RGB_64X48);
    h.push(rgb_frame(64, 48, GREEN, 0)).expect("push");
    assert_eq!(
        best(&h.pull().expect("pull")),
        "1",
        "no labels: class numbers"
    );

    let labels = data("labels_rgb.txt");
    let mut h = harness("color3_nometa.onnx", &[("labels-file", &labels)], RGB_64X48);
    h.push(rgb_frame(64, 48, GREEN, 0)).expect("push");
    assert_eq!(best(&h.pull().expect("pull")), "G");

    // A labels file overrides the model's own labels.
    let mut h = harness("color3.onnx", &[("labels-file", &labels)], RGB_64X48);
    h.push(rgb_frame(64, 48, BLUE, 0)).expect("push");
    assert_eq!(best(&h.pull().expect("pull")), "B");
}

#[test]
fn preprocessing_overrides_change_the_result() {
    // Telling the element the model wants BGR swaps red and blue.
    let mut h = harness("color3.onnx", &[("channel-order", "bgr")], RGB_64X48);
    h.push(rgb_frame(64, 48, RED, 0)).expect("push");
    assert_eq!(best(&h.pull().expect("pull")), "blue");
    // A mean that removes most of the red channel makes green win.
    let mut h = harness(
        "color3.onnx",
        &[("mean", "<0.9,0.0,0.0>"), ("scale", "0.00392156862745098")],
        RGB_64X48,
    );
    h.push(rgb_frame(64, 48, [230, 120, 20], 0)).expect("push");
    assert_eq!(best(&h.pull().expect("pull")), "green");
}

/// The latency covers the batch wait and the inference: the batch timeout (batch > 1) plus
/// two runs of a full batch, measured when the model was opened (so never just the timeout,
/// and never 0 at batch-timeout=0).
#[test]
fn latency_query_adds_the_batch_timeout_and_the_inference_time() {
    let latency = |props: &[(&str, &str)]| {
        let e = element("color3.onnx", props);
        let mut h = Harness::with_element(&e, Some("sink"), Some("src"));
        h.set_src_caps_str(RGB_64X48);
        h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
        h.play();
        h.query_latency().expect("latency")
    };
    let ms = gst::ClockTime::from_mseconds;
    let batched = latency(&[("batch-size", "4"), ("batch-timeout", "40")]);
    assert!(batched > ms(50) && batched < ms(1050), "{batched}");
    let dynamic = latency(&[("batch-size", "4"), ("batch-timeout", "0")]);
    assert!(dynamic > ms(10) && dynamic < ms(1010), "{dynamic}");
    let single = latency(&[]);
    assert!(single > ms(10) && single < ms(1010), "{single}");
}

#[test]
fn caps_change_mid_stream_drains_and_applies() {
    let mut h = harness(
        "color3.onnx",
        &[("batch-size", "4"), ("batch-timeout", "10000")],
        RGB_64X48,
    );
    h.push(rgb_frame(64, 48, RED, 0)).expect("push");
    h.push(rgb_frame(64, 48, RED, 1)).expect("push");
    h.set_src_caps_str("video/x-raw,format=RGB,width=8,height=8,framerate=30/1");
    h.push(rgb_frame(8, 8, GREEN, 2)).expect("push");
    h.push_event(gst::event::Eos::new());
    let mut got = Vec::new();
    while let Some(b) = h.pull_until_eos().expect("pull") {
        got.push((best(&b), result(&b).batch_size));
    }
    assert_eq!(
        got,
        vec![("red".into(), 2), ("red".into(), 2), ("green".into(), 1)],
        "the caps change hands the partial batch over first"
    );
}

#[test]
fn unsupported_format_is_refused() {
    let e = element("color3.onnx", &[]);
    let mut h = Harness::with_element(&e, Some("sink"), Some("src"));
    h.play();
    let caps = gst::Caps::from_str("video/x-raw,format=YUY2,width=8,height=8,framerate=1/1")
        .expect("caps");
    let sink = e.static_pad("sink").expect("sink pad");
    assert!(
        !sink.query_accept_caps(&caps),
        "YUY2 is not in the template"
    );
}

#[test]
fn stats_count_frames_and_batches() {
    let mut h = harness(
        "color3.onnx",
        &[("batch-size", "3"), ("batch-timeout", "10000")],
        RGB_64X48,
    );
    for i in 0..7 {
        h.push(rgb_frame(64, 48, RED, i)).expect("push");
    }
    h.push_event(gst::event::Eos::new());
    while h.pull_until_eos().expect("pull").is_some() {}
    let e = h.element().expect("element");
    let stats = e.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("frames").expect("frames"), 7);
    assert_eq!(stats.get::<u64>("classified").expect("classified"), 7);
    assert_eq!(stats.get::<u64>("batches").expect("batches"), 3);
    assert!(stats.get::<f64>("mean-inference-ms").expect("mean") > 0.0);
    assert!(stats.get::<f64>("fps").expect("fps") > 0.0);
}

/// Runs a pipeline to PAUSED and returns the error message the element posted.
fn start_error(model: Option<&str>, props: &[(&str, &str)]) -> String {
    init();
    let e = gst::ElementFactory::make("visionclassify")
        .property("ort-library", ort_library())
        .build()
        .expect("visionclassify");
    if let Some(m) = model {
        e.set_property("model", m);
    }
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    start_error_of(&e)
}

#[test]
fn bad_models_give_errors_naming_file_and_reason() {
    let cases: &[(Option<String>, &[&str])] = &[
        (None, &["property `model` is not set"]),
        (
            Some("/nonexistent/m.onnx".into()),
            &["/nonexistent/m.onnx", "No such file"],
        ),
        (
            Some(data("truncated.onnx")),
            &["truncated.onnx", "Protobuf parsing failed"],
        ),
        (
            Some(data("not_onnx.onnx")),
            &["not_onnx.onnx", "Protobuf parsing failed"],
        ),
        (
            Some(data("two_inputs_not_image.onnx")),
            &[
                "two_inputs_not_image.onnx",
                "not an image classifier",
                "4 dimensions",
            ],
        ),
        (
            Some(data("labels_mismatch.onnx")),
            &["labels_mismatch.onnx", "5 labels", "3 classes"],
        ),
    ];
    for (model, needles) in cases {
        let msg = start_error(model.as_deref(), &[]);
        for n in *needles {
            assert!(msg.contains(n), "{model:?}: {msg:?} should contain {n:?}");
        }
    }
    let empty = std::env::temp_dir().join(format!("vision-empty-{}.onnx", std::process::id()));
    std::fs::write(&empty, b"").expect("write");
    let msg = start_error(empty.to_str(), &[]);
    assert!(msg.contains("empty"), "{msg}");
    let _ = std::fs::remove_file(empty);
}

#[test]
fn bad_settings_give_errors_naming_the_setting() {
    let color3 = data("color3.onnx");
    let msg = start_error(Some(&color3), &[("labels-file", "/nonexistent/labels.txt")]);
    assert!(msg.contains("labels-file /nonexistent/labels.txt"), "{msg}");

    let two = std::env::temp_dir().join(format!("vision-two-{}.txt", std::process::id()));
    std::fs::write(&two, "a\nb\n").expect("write");
    let msg = start_error(
        Some(&color3),
        &[("labels-file", two.to_str().expect("utf-8"))],
    );
    assert!(
        msg.contains("labels file has 2 labels but the model outputs 3"),
        "{msg}"
    );
    let _ = std::fs::remove_file(two);

    let msg = start_error(Some(&data("color3_fixed4.onnx")), &[("batch-size", "8")]);
    assert!(
        msg.contains("batch-size 8") && msg.contains("fixed batch dimension 4"),
        "{msg}"
    );

    // The CPU build of ONNX Runtime has no CUDA: strict refuses, non-strict falls back.
    let msg = start_error(
        Some(&color3),
        &[("execution-provider", "cuda"), ("strict-provider", "true")],
    );
    assert!(msg.contains("CUDA") && msg.contains("not usable"), "{msg}");
}

#[test]
fn unavailable_provider_falls_back_with_a_warning() {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=32,height=32 ! visionclassify model={} ort-library={} execution-provider=tensorrt ! fakesink",
        data("color3.onnx"),
        ort_library()
    ))
    .expect("pipeline");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    let mut warnings = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(20)) {
        match msg.view() {
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).expect("null");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("TensorRT") && w.contains("falling back")),
        "{warnings:?}"
    );
}

/// Counts buffers reaching the sink while the pipeline is driven through state changes.
#[test]
fn state_changes_in_any_order_neither_deadlock_nor_lose_frames() {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=60 pattern=blue ! video/x-raw,format=RGB,width=32,height=32,framerate=300/1 ! visionclassify name=c model={} ort-library={} batch-size=4 batch-timeout=20 ! fakesink name=sink sync=true signal-handoffs=true",
        data("color3.onnx"),
        ort_library()
    ))
    .expect("pipeline");
    let pipeline = pipeline.downcast::<gst::Pipeline>().expect("pipeline");
    let sink = pipeline.by_name("sink").expect("sink");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let wrong = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let (count, wrong) = (count.clone(), wrong.clone());
        sink.connect("handoff", false, move |args| {
            let buffer = args[1].get::<gst::Buffer>().expect("buffer");
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if meta::read(&buffer).map(|r| r.classification.best.label.to_string())
                != Some("blue".into())
            {
                wrong.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            None
        });
    }
    let bus = pipeline.bus().expect("bus");
    let run_to_eos = |sequence: &[gst::State]| {
        for s in sequence {
            pipeline.set_state(*s).expect("state change");
            let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
            res.expect("state change completes (no deadlock)");
            std::thread::sleep(Duration::from_millis(15));
        }
        pipeline.set_state(gst::State::Playing).expect("playing");
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("EOS within 30 s");
        assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    };
    use gst::State::*;
    run_to_eos(&[Playing, Paused, Playing, Paused, Paused, Playing, Paused]);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 60);
    // Back to READY/NULL and run again: a fresh stream, again complete.
    for seq in [&[Ready, Null][..], &[Ready, Paused, Ready][..]] {
        for s in seq {
            pipeline.set_state(*s).expect("state change");
        }
        count.store(0, std::sync::atomic::Ordering::SeqCst);
        run_to_eos(&[Paused, Playing, Paused]);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 60);
    }
    pipeline.set_state(Null).expect("null");
    assert_eq!(wrong.load(std::sync::atomic::Ordering::SeqCst), 0);
}
