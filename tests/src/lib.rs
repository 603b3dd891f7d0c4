//! Shared helpers for the end-to-end tests and the demo: where the built plugin and the test
//! data are, a real test video encoded from the photos with GStreamer itself, `gst-launch-1.0`
//! runs with a timeout, the `visionclassify` bus messages parsed back into structs, and the
//! per-channel means of decoded pictures (the independent reference the tests compare with);
//! for the deployment pipelines, a local RTSP camera (`rtsp`), a private mosquitto (`broker`)
//! and the text `vision-overlay` draws (`overlay`).
//!
//! The tests run the plugin as a user would: `cargo build -p gst-plugin-vision` first, then
//! `gst-launch-1.0` with `GST_PLUGIN_PATH` pointing at `target/debug`.

pub mod broker;
pub mod inprocess;
pub mod launch;
pub mod messages;
pub mod overlay;
pub mod paths;
pub mod pixels;
pub mod rtsp;
pub mod video;

pub use launch::{Launch, command, gst_inspect, gst_launch};
pub use messages::{Classified, parse_messages};
pub use paths::{Scratch, model, photo, plugin_dir, plugin_file, repo_root};
pub use pixels::ChannelMeans;
pub use video::{
    PHOTOS, Segment, TestVideo, frame_means, gray_frame_means, picture_means, test_video,
};
