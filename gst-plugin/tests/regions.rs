//! Harness tests of `visionclassify target=roi`: regions attached by the test (known boxes on
//! known pictures) classified with the colour model of `tests/data/` (`color3.onnx`: red,
//! green or blue by the dominant channel, softmax of 20 × the channel means).

use std::str::FromStr;

mod support;

use gst::prelude::*;
use gst_check::Harness;
use gst_video::VideoRegionOfInterestMeta;
use gst_video::prelude::*;
use gstvision::meta::{self, ObjectResult};
use support::plugin::{data, init, ort_library};

const RED: [u8; 3] = [220, 20, 30];
const GREEN: [u8; 3] = [10, 200, 40];
const BLUE: [u8; 3] = [30, 40, 210];
/// Red by a small margin: softmax(20 × (0.784, 0.706, 0.078)) gives red ≈ 0.83.
const YELLOW: [u8; 3] = [200, 180, 20];

fn harness(props: &[(&str, &str)], format: &str, w: u32, h: u32) -> Harness {
    init();
    let e = gst::ElementFactory::make("visionclassify")
        .property("model", data("color3.onnx"))
        .property("ort-library", ort_library())
        .property_from_str("target", "roi")
        .build()
        .expect("visionclassify");
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    let mut harness = Harness::with_element(&e, Some("sink"), Some("src"));
    harness.set_src_caps_str(&caps(format, w, h));
    harness.play();
    harness
}

fn caps(format: &str, w: u32, h: u32) -> String {
    format!("video/x-raw,format={format},width={w},height={h},framerate=30/1,colorimetry=bt601")
}

/// BT.601 limited-range Y'CbCr of an sRGB colour.
fn yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    [
        16.0 + 0.257 * r + 0.504 * g + 0.098 * b,
        128.0 - 0.148 * r - 0.291 * g + 0.439 * b,
        128.0 + 0.439 * r - 0.368 * g - 0.071 * b,
    ]
    .map(|v| v.round().clamp(0.0, 255.0) as u8)
}

/// A frame of `format` whose pixel (x, y) has colour `colour(x, y)` (YUV formats: each 2×2
/// block's chroma from its top-left pixel).
fn picture(
    format: &str,
    w: u32,
    h: u32,
    i: u64,
    colour: impl Fn(u32, u32) -> [u8; 3],
) -> gst::Buffer {
    let caps = gst::Caps::from_str(&caps(format, w, h)).expect("caps");
    let info = gst_video::VideoInfo::from_caps(&caps).expect("video info");
    let mut buffer = gst::Buffer::with_size(info.size()).expect("buffer");
    {
        let b = buffer.get_mut().expect("new buffer");
        b.set_pts(gst::ClockTime::from_mseconds(33 * i));
        b.set_duration(gst::ClockTime::from_mseconds(33));
        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).expect("map");
        let strides: Vec<usize> = frame.plane_stride().iter().map(|s| *s as usize).collect();
        match format {
            "NV12" | "I420" => {
                let y_plane = frame.plane_data_mut(0).expect("Y");
                for y in 0..h {
                    for x in 0..w {
                        y_plane[y as usize * strides[0] + x as usize] = yuv(colour(x, y))[0];
                    }
                }
                for y in 0..h.div_ceil(2) {
                    for x in 0..w.div_ceil(2) {
                        let [_, u, v] = yuv(colour(2 * x, 2 * y));
                        let (x, y) = (x as usize, y as usize);
                        if format == "NV12" {
                            let uv = frame.plane_data_mut(1).expect("UV");
                            uv[y * strides[1] + 2 * x] = u;
                            uv[y * strides[1] + 2 * x + 1] = v;
                        } else {
                            frame.plane_data_mut(1).expect("U")[y * strides[1] + x] = u;
                            frame.plane_data_mut(2).expect("V")[y * strides[2] + x] = v;
                        }
                    }
                }
            }
            packed => {
                let (bpp, offsets) = match packed {
                    "RGB" => (3, [0, 1, 2]),
                    "BGR" => (3, [2, 1, 0]),
                    "BGRx" => (4, [2, 1, 0]),
                    "xRGB" => (4, [1, 2, 3]),
                    other => panic!("no test frames for {other}"),
                };
                let plane = frame.plane_data_mut(0).expect("plane");
                for y in 0..h {
                    for x in 0..w {
                        let o = y as usize * strides[0] + x as usize * bpp;
                        for (c, v) in offsets.iter().zip(colour(x, y)) {
                            plane[o + c] = v;
                        }
                    }
                }
            }
        }
    }
    buffer
}

/// Four quadrants split at (`sx`, `sy`): red, green / blue, yellow.
fn quadrants(format: &str, w: u32, h: u32, sx: u32, sy: u32, i: u64) -> gst::Buffer {
    picture(format, w, h, i, |x, y| match (x < sx, y < sy) {
        (true, true) => RED,
        (false, true) => GREEN,
        (true, false) => BLUE,
        (false, false) => YELLOW,
    })
}

/// Attaches a region; `object_id` as DL Streamer's gvatrack writes it.
fn add_region(
    buffer: &mut gst::Buffer,
    roi_type: &str,
    rect: (u32, u32, u32, u32),
    object_id: Option<i32>,
) {
    let b = buffer.make_mut();
    let mut m = VideoRegionOfInterestMeta::add(b, roi_type, rect);
    if let Some(id) = object_id {
        m.add_param(gst::Structure::builder("object_id").field("id", id).build());
    }
}

fn labels(objects: &[ObjectResult]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            o.result
                .as_ref()
                .map_or("-".into(), |r| r.classification.best.label.to_string())
        })
        .collect()
}

fn push_eos_and_pull(h: &mut Harness, buffers: Vec<gst::Buffer>) -> Vec<gst::Buffer> {
    let n = buffers.len();
    for b in buffers {
        assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
    }
    assert!(h.push_event(gst::event::Eos::new()));
    (0..n).map(|_| h.pull().expect("output buffer")).collect()
}

#[test]
fn each_region_gets_the_label_of_its_content_in_every_format() {
    // Odd sizes and split points: boxes start on odd columns and rows, which NV12 and I420
    // crops round down to even (one column or row of the neighbour: still a clear majority).
    for format in ["RGB", "BGR", "BGRx", "xRGB", "NV12", "I420"] {
        for (w, h, sx, sy) in [(64, 48, 32, 24), (67, 51, 33, 25)] {
            let mut hx = harness(&[("batch-size", "4")], format, w, h);
            let mut b = quadrants(format, w, h, sx, sy, 0);
            add_region(&mut b, "quadrant", (0, 0, sx, sy), None);
            add_region(&mut b, "quadrant", (sx, 0, w - sx, sy), None);
            add_region(&mut b, "quadrant", (0, sy, sx, h - sy), None);
            add_region(&mut b, "quadrant", (sx, sy, w - sx, h - sy), None);
            let out = push_eos_and_pull(&mut hx, vec![b]);
            let objects = meta::objects(&out[0]);
            assert_eq!(
                labels(&objects),
                ["red", "green", "blue", "red"],
                "{format} {w}x{h}"
            );
            // The yellow quadrant is red by a margin only: its box really was yellow.
            let yellow = objects[3].result.as_ref().expect("result");
            let c = yellow.classification.best.confidence;
            assert!(c > 0.5 && c < 0.93, "{format} {w}x{h}: yellow got {c}");
            for o in &objects[..3] {
                let r = o.result.as_ref().expect("result");
                assert!(r.classification.best.confidence > 0.95, "{format}: {r:?}");
                assert_eq!((&*r.model, r.batch_size, r.reused), ("color3", 4, false));
            }
            assert!(
                meta::read(&out[0]).is_none(),
                "no whole-frame meta in roi mode"
            );
        }
    }
}

#[test]
fn regions_on_the_edge_are_clamped_and_empty_or_outside_ones_skipped() {
    let mut h = harness(&[], "RGB", 64, 48);
    let mut b = quadrants("RGB", 64, 48, 32, 24, 0);
    add_region(&mut b, "a", (40, 0, 100, 10), None); // over the right edge: green
    add_region(&mut b, "b", (0, 0, 0, 10), None); // zero width
    add_region(&mut b, "c", (0, 0, 10, 0), None); // zero height
    add_region(&mut b, "d", (64, 0, 10, 10), None); // right of the frame
    add_region(&mut b, "e", (0, 4000, 10, 10), None); // below the frame
    add_region(&mut b, "f", (u32::MAX, u32::MAX, u32::MAX, u32::MAX), None);
    add_region(&mut b, "g", (0, 40, 1, 1), None); // one pixel: blue
    let out = push_eos_and_pull(&mut h, vec![b]);
    assert_eq!(
        labels(&meta::objects(&out[0])),
        ["green", "-", "-", "-", "-", "-", "blue"]
    );
}

#[test]
fn object_class_and_min_roi_size_filter_regions() {
    let mut h = harness(
        &[("object-class", "face, person"), ("min-roi-size", "8")],
        "RGB",
        64,
        48,
    );
    let mut b = quadrants("RGB", 64, 48, 32, 24, 0);
    add_region(&mut b, "face", (0, 0, 32, 24), None);
    add_region(&mut b, "car", (32, 0, 32, 24), None);
    add_region(&mut b, "person", (0, 24, 7, 24), None); // narrower than 8
    add_region(&mut b, "person", (0, 24, 8, 8), None);
    add_region(&mut b, "face", (60, 0, 20, 20), None); // 4 pixels inside the frame
    let out = push_eos_and_pull(&mut h, vec![b]);
    assert_eq!(
        labels(&meta::objects(&out[0])),
        ["red", "-", "-", "blue", "-"]
    );
}

#[test]
fn roi_padding_takes_in_the_neighbourhood() {
    // A box on the small red square in the middle of a blue frame: with padding 1 its crop
    // is three times as wide and high, mostly blue.
    let picture = |i| {
        picture("RGB", 60, 60, i, |x, y| {
            if (25..35).contains(&x) && (25..35).contains(&y) {
                RED
            } else {
                BLUE
            }
        })
    };
    for (padding, want) in [("0", "red"), ("1", "blue")] {
        let mut h = harness(&[("roi-padding", padding)], "RGB", 60, 60);
        let mut b = picture(0);
        add_region(&mut b, "x", (25, 25, 10, 10), None);
        let out = push_eos_and_pull(&mut h, vec![b]);
        assert_eq!(labels(&meta::objects(&out[0])), [want], "padding {padding}");
        // The meta keeps the detector's box.
        assert_eq!(meta::objects(&out[0])[0].region.x, 25);
    }
}

#[test]
fn regions_of_consecutive_frames_share_batches_and_frames_keep_order() {
    // A long timeout: a batch runs only when full or when EOS hurries it, so the batches are
    // known: regions 0-3 and 4-7 of frame 0, then its regions 8, 9 with frame 2's first two,
    // then frame 2's last alone at EOS. Frame 1 has no region and must not wait for a batch.
    let mut h = harness(
        &[("batch-size", "4"), ("batch-timeout", "600000")],
        "RGB",
        64,
        48,
    );
    let mut f0 = quadrants("RGB", 64, 48, 32, 24, 0);
    for i in 0..10 {
        add_region(&mut f0, "q", (i, i, 20, 20), None); // red
    }
    let f1 = quadrants("RGB", 64, 48, 32, 24, 1);
    let mut f2 = quadrants("RGB", 64, 48, 32, 24, 2);
    add_region(&mut f2, "q", (40, 30, 20, 18), None); // yellow: red
    add_region(&mut f2, "q", (40, 0, 20, 20), None); // green
    add_region(&mut f2, "q", (0, 30, 20, 18), None); // blue
    let out = push_eos_and_pull(&mut h, vec![f0, f1, f2]);
    let pts: Vec<_> = out
        .iter()
        .map(|b| b.pts().expect("pts").mseconds())
        .collect();
    assert_eq!(pts, [0, 33, 66]);
    let o0 = meta::objects(&out[0]);
    assert_eq!(labels(&o0), vec!["red"; 10]);
    let fills: Vec<u32> = o0
        .iter()
        .chain(&meta::objects(&out[2]))
        .map(|o| o.result.as_ref().expect("result").batch_size)
        .collect();
    assert_eq!(fills, [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 1]);
    assert!(meta::objects(&out[1]).is_empty());
    assert_eq!(labels(&meta::objects(&out[2])), ["red", "green", "blue"]);
    // The results number frames as they leave.
    assert_eq!(o0[0].result.as_ref().expect("result").frame, 0);
    let o2 = meta::objects(&out[2]);
    assert_eq!(o2[0].result.as_ref().expect("result").frame, 2);
    let stats = h
        .element()
        .expect("element")
        .property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("frames").expect("frames"), 3);
    assert_eq!(stats.get::<u64>("regions").expect("regions"), 13);
    assert_eq!(stats.get::<u64>("classified").expect("classified"), 2);
    assert_eq!(stats.get::<u64>("batches").expect("batches"), 4);
}

#[test]
fn tracked_objects_are_reclassified_every_interval_and_reuse_their_result() {
    let mut h = harness(&[("reclassify-interval", "3")], "RGB", 64, 48);
    let mut frames = Vec::new();
    for i in 0..7 {
        let mut b = quadrants("RGB", 64, 48, 32, 24, i);
        add_region(&mut b, "car", (0, 0, 32, 24), Some(5)); // tracked, red
        add_region(&mut b, "car", (32, 0, 32, 24), None); // untracked, green
        if i >= 2 {
            add_region(&mut b, "car", (0, 24, 32, 24), Some(9)); // tracked from frame 2
        }
        frames.push(b);
    }
    let out = push_eos_and_pull(&mut h, frames);
    let reused = |o: &ObjectResult| o.result.as_ref().expect("result").reused;
    let mut tracked = Vec::new();
    let mut late = Vec::new();
    for b in &out {
        let objects = meta::objects(b);
        assert_eq!(labels(&objects)[..2], ["red", "green"]);
        assert_eq!(objects[0].region.tracking_id, Some(5));
        tracked.push(reused(&objects[0]));
        assert!(
            !reused(&objects[1]),
            "untracked regions are classified every frame"
        );
        if let Some(o) = objects.get(2) {
            assert_eq!(labels(&objects)[2], "blue");
            late.push(reused(o));
        }
    }
    assert_eq!(tracked, [false, true, true, false, true, true, false]);
    assert_eq!(late, [false, true, true, false, true]);
    let stats = h
        .element()
        .expect("element")
        .property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("regions").expect("regions"), 7 + 3 + 2);
    assert_eq!(stats.get::<u64>("regions-reused").expect("reused"), 4 + 3);
}

#[test]
fn inference_interval_in_roi_mode_reuses_tracked_results_only() {
    let mut h = harness(&[("inference-interval", "2")], "RGB", 64, 48);
    let mut frames = Vec::new();
    for i in 0..4 {
        let mut b = quadrants("RGB", 64, 48, 32, 24, i);
        add_region(&mut b, "car", (0, 0, 32, 24), Some(1));
        add_region(&mut b, "car", (32, 0, 32, 24), None);
        frames.push(b);
    }
    let out = push_eos_and_pull(&mut h, frames);
    let got: Vec<Vec<String>> = out.iter().map(|b| labels(&meta::objects(b))).collect();
    assert_eq!(
        got,
        [
            ["red", "green"],
            ["red", "-"],
            ["red", "green"],
            ["red", "-"]
        ]
    );
}

#[test]
fn a_flush_forgets_tracked_objects_and_drops_queued_regions() {
    let mut h = harness(
        &[
            ("batch-size", "4"),
            ("batch-timeout", "600000"),
            ("reclassify-interval", "100"),
        ],
        "RGB",
        64,
        48,
    );
    let mut b = quadrants("RGB", 64, 48, 32, 24, 0);
    add_region(&mut b, "car", (0, 0, 32, 24), Some(1));
    assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
    // The region waits for a batch that will never fill; a flush drops it.
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    let mut b = quadrants("RGB", 64, 48, 32, 24, 1);
    add_region(&mut b, "car", (0, 0, 32, 24), Some(1));
    let out = push_eos_and_pull(&mut h, vec![b]);
    let o = meta::objects(&out[0]);
    assert_eq!(labels(&o), ["red"]);
    assert!(
        !o[0].result.as_ref().expect("result").reused,
        "after a flush object 1 is new and classified"
    );
    assert_eq!(out[0].pts(), Some(gst::ClockTime::from_mseconds(33)));
    assert!(h.try_pull().is_none());
}

#[test]
fn results_are_also_posted_per_region() {
    init();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src caps=\"{}\" format=time ! visionclassify target=roi post-messages=true model={} ort-library={} ! fakesink",
        caps("RGB", 64, 48),
        data("color3.onnx"),
        ort_library()
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let src = pipeline.by_name("src").expect("appsrc");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let mut b = quadrants("RGB", 64, 48, 32, 24, 0);
    add_region(&mut b, "car", (32, 0, 32, 24), Some(4));
    let pushed = src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&b]);
    assert_eq!(pushed, gst::FlowReturn::Ok);
    let ended = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    assert_eq!(ended, gst::FlowReturn::Ok);
    let bus = pipeline.bus().expect("bus");
    let mut posted = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "visionclassify") {
                    posted.push(s.to_owned());
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).expect("null");
    assert_eq!(posted.len(), 1);
    let s = &posted[0];
    assert_eq!(s.get::<&str>("best-label").expect("label"), "green");
    assert_eq!(s.get::<&str>("roi-type").expect("type"), "car");
    assert_eq!(s.get::<i64>("roi-x").expect("x"), 32);
    assert_eq!(s.get::<u64>("object-id").expect("id"), 4);
}

#[test]
fn regions_of_two_cameras_on_one_engine_fill_the_same_batch() {
    let props = [
        ("batch-size", "4"),
        ("batch-timeout", "600000"),
        ("model-instance-id", "regions-two-cameras"),
    ];
    let mut cam1 = harness(&props, "RGB", 64, 48);
    let mut cam2 = harness(&props, "NV12", 64, 48);
    let mut a = quadrants("RGB", 64, 48, 32, 24, 0);
    add_region(&mut a, "q", (0, 0, 32, 24), None); // red
    add_region(&mut a, "q", (32, 0, 32, 24), None); // green
    let mut b = quadrants("NV12", 64, 48, 32, 24, 0);
    add_region(&mut b, "q", (0, 24, 32, 24), None); // blue
    add_region(&mut b, "q", (32, 0, 32, 24), None); // green
    // Camera 1's two regions wait (half a batch, no timeout); camera 2's complete the batch.
    assert_eq!(cam1.push(a), Ok(gst::FlowSuccess::Ok));
    assert_eq!(cam2.push(b), Ok(gst::FlowSuccess::Ok));
    let (out1, out2) = (
        cam1.pull().expect("camera 1"),
        cam2.pull().expect("camera 2"),
    );
    let (o1, o2) = (meta::objects(&out1), meta::objects(&out2));
    assert_eq!(labels(&o1), ["red", "green"]);
    assert_eq!(labels(&o2), ["blue", "green"]);
    for o in o1.iter().chain(&o2) {
        assert_eq!(o.result.as_ref().expect("result").batch_size, 4, "{o:?}");
    }
}

/// GStreamer >= 1.24 (run in the Debian 13 container: docker/dev/test-gst126.sh): object
/// detections (`GstAnalyticsODMtd`) in, a `GstAnalyticsClsMtd` related to each one out.
#[cfg(feature = "v1_24")]
#[test]
fn analytics_detections_in_related_classifications_out() {
    use gst_analytics::prelude::*;
    use gst_analytics::{
        AnalyticsClassificationMtd, AnalyticsODMtd, AnalyticsRelationMeta, RelTypes,
    };
    let mut h = harness(&[("reclassify-interval", "2")], "RGB", 64, 48);
    let mut frames = Vec::new();
    for i in 0..2 {
        let mut b = quadrants("RGB", 64, 48, 32, 24, i);
        let bm = b.make_mut();
        meta::analytics::add_detection(bm, "car", (0, 0, 32, 24), 0.9, Some(3)).expect("od");
        meta::analytics::add_detection(bm, "bus", (32, 0, 32, 24), 0.8, None).expect("od");
        // The same box as a region meta too: classified once, as the region meta.
        add_region(&mut b, "bus", (32, 0, 32, 24), None);
        frames.push(b);
    }
    let out = push_eos_and_pull(&mut h, frames);
    for (i, b) in out.iter().enumerate() {
        let rmeta = b.meta::<AnalyticsRelationMeta>().expect("relation meta");
        let mut related = Vec::new();
        for od in rmeta.iter::<AnalyticsODMtd>() {
            let kind = od.obj_type().map(|q| q.as_str().to_string());
            let labels: Vec<String> = rmeta
                .iter_direct_related::<AnalyticsClassificationMtd>(od.id(), RelTypes::RELATE_TO)
                .map(|c| c.quark(0).as_str().to_string())
                .collect();
            related.push((kind, labels));
        }
        assert_eq!(
            related,
            [
                (Some("car".to_string()), vec!["red".to_string()]),
                (Some("bus".to_string()), vec![]),
            ],
            "frame {i}: the car is classified (reused on frame 1), the bus through its region meta"
        );
        let objects = meta::objects(b);
        assert_eq!(objects.len(), 3, "{objects:?}");
        assert_eq!(labels(&objects[..1]), ["green"], "the region meta's result");
        let car = &objects[1];
        assert_eq!(
            (car.region.label.as_str(), car.region.tracking_id),
            ("car", Some(3))
        );
        assert_eq!(car.labels.first().map(|l| l.0.as_str()), Some("red"));
        assert_eq!(car.confidence, Some(0.9));
    }
}
