//! The statically registered `vision` plugin and the project's test data.

use std::path::PathBuf;
use std::sync::Once;

use gst::prelude::*;

/// Initialises GStreamer and registers the plugin once per test binary.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst init");
        gstvision::plugin_register_static().expect("register vision plugin");
    });
}

/// Path of a file in the workspace's `tests/data/`.
pub fn data(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(name);
    p.to_string_lossy().into_owned()
}

/// The project-local ONNX Runtime (a statically registered plugin does not know its own
/// directory, so tests name the library).
pub fn ort_library() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.deps/onnxruntime/lib/libonnxruntime.so");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// Puts `videotestsrc ! element ! fakesink` to PAUSED, which must fail; returns the text of the
/// error the element posted.
#[allow(dead_code)] // not every test binary starts elements that must fail
pub fn start_error_of(element: &gst::Element) -> String {
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc")
        .build()
        .expect("src");
    let sink = gst::ElementFactory::make("fakesink").build().expect("sink");
    pipeline.add_many([&src, element, &sink]).expect("add");
    gst::Element::link_many([&src, element, &sink]).expect("link");
    let res = pipeline.set_state(gst::State::Paused);
    let msg = pipeline
        .bus()
        .expect("bus")
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
        .expect("an error message");
    let _ = pipeline.set_state(gst::State::Null);
    assert!(res.is_err(), "the state change must fail");
    match msg.view() {
        gst::MessageView::Error(err) => err.error().to_string(),
        _ => unreachable!(),
    }
}
