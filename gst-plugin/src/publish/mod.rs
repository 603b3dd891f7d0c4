//! `visionpublish`: turns the classification metadata on each buffer into JSON events on MQTT
//! (see [`crate::event`] for the format and [`crate::delivery`] for what delivery
//! guarantees); the video passes through untouched and the streaming thread never waits on
//! the network.

use std::path::{Path, PathBuf};

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct VisionPublish(ObjectSubclass<imp::VisionPublish>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// `mode`: which frames become events.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstVisionPublishMode")]
pub enum ModeChoice {
    #[default]
    #[enum_value(
        name = "Every frame that carries a label (reused results included, marked reused)",
        nick = "all"
    )]
    All = 0,
    #[enum_value(
        name = "Only when the top label differs from the last published one",
        nick = "change"
    )]
    Change = 1,
    #[enum_value(
        name = "Counts per label and mean confidence every summary-interval seconds of stream time",
        nick = "summary"
    )]
    Summary = 2,
}

/// `qos`: MQTT quality of service.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstVisionPublishQos")]
pub enum QosChoice {
    #[enum_value(name = "0: at most once (lost when the connection drops)", nick = "0")]
    AtMostOnce = 0,
    #[default]
    #[enum_value(
        name = "1: at least once (acknowledged; a duplicate is possible after a reconnection)",
        nick = "1"
    )]
    AtLeastOnce = 1,
    #[enum_value(name = "2: exactly once within a connection", nick = "2")]
    ExactlyOnce = 2,
}

/// Where the spool lives when `spool-dir` is not set:
/// `$XDG_STATE_HOME/visionpublish/<sensor-id>`, else `~/.local/state/visionpublish/<sensor-id>`
/// (a `/` in the sensor id becomes `_`). `None` when neither variable is usable.
pub fn default_spool_dir(
    sensor_id: &str,
    xdg_state_home: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    let base = match xdg_state_home.filter(|p| p.is_absolute()) {
        Some(p) => p.to_path_buf(),
        None => home.filter(|p| p.is_absolute())?.join(".local/state"),
    };
    let name = sensor_id.replace(['/', '\\', '\0'], "_");
    let name = if name.is_empty() || name == "." || name == ".." {
        "_".to_string()
    } else {
        name
    };
    Some(base.join("visionpublish").join(name))
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    crate::meta::register();
    gst::Element::register(
        Some(plugin),
        "visionpublish",
        gst::Rank::NONE,
        VisionPublish::static_type(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_dir_follows_xdg_then_home() {
        let xdg = Path::new("/var/state");
        let home = Path::new("/home/u");
        assert_eq!(
            default_spool_dir("cam-1", Some(xdg), Some(home)),
            Some(PathBuf::from("/var/state/visionpublish/cam-1"))
        );
        assert_eq!(
            default_spool_dir("site/cam-1", None, Some(home)),
            Some(PathBuf::from(
                "/home/u/.local/state/visionpublish/site_cam-1"
            ))
        );
        // A relative XDG_STATE_HOME is ignored, as the spec says.
        assert_eq!(
            default_spool_dir("..", Some(Path::new("rel")), Some(home)),
            Some(PathBuf::from("/home/u/.local/state/visionpublish/_"))
        );
        assert_eq!(default_spool_dir("c", None, None), None);
    }
}
