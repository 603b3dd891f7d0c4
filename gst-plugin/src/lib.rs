//! The `vision` GStreamer plugin: `visionclassify` (ONNX Runtime classification with
//! metadata) and the plain modules behind it.
//!
//! Register it statically in applications and tests with [`plugin_register_static`].

use gst::glib;

pub mod batch;
pub mod classify;
pub mod contract;
pub mod meta;
pub mod model;
pub mod preprocess;
pub mod scores;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    classify::register(plugin)
}

gst::plugin_define!(
    vision,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
