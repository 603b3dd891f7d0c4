//! The statically registered `vision` plugin and the project's test data.

use std::path::PathBuf;
use std::sync::Once;

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
