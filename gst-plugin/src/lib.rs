//! The `vision` GStreamer plugin: `visionclassify` (ONNX Runtime classification with
//! metadata), `visionpublish` (the metadata as JSON events on MQTT) and the plain modules
//! behind them.
//!
//! Register it statically in applications and tests with [`plugin_register_static`].

use gst::glib;

pub mod batch;
pub mod capture;
pub mod classify;
pub mod contract;
pub mod delivery;
pub mod engine;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod lane;
pub mod meta;
pub mod model;
pub mod preprocess;
pub mod publish;
pub mod redact;
mod resample;
pub mod results;
pub mod roi;
pub mod runtime;
pub mod scores;
pub mod watch;

static PLUGIN_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Directory of the plugin's shared library when it was loaded from a file (not when it was
/// registered statically); project-local ONNX Runtime candidates are relative to it.
pub(crate) fn plugin_dir() -> Option<std::path::PathBuf> {
    PLUGIN_DIR.get().cloned()
}

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    if let Some(dir) = plugin
        .filename()
        .and_then(|f| f.parent().map(|p| p.to_path_buf()))
    {
        let _ = PLUGIN_DIR.set(dir);
    }
    classify::register(plugin)?;
    publish::register(plugin)
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
