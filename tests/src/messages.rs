//! The `visionclassify` element messages (`post-messages=true`) as `gst-launch-1.0 -m` prints
//! them, parsed back into structs.
//!
//! A line looks like:
//! ```text
//! Got message #113 from element "visionclassify0" (element): visionclassify, model=(string)color3, ..., best-label=(string)red, best-confidence=(double)0.91, ..., batch-size=(uint)1, reused=(boolean)false, frame=(guint64)1, timestamp=(guint64)100000000, ...;
//! ```

use std::str::FromStr;

use anyhow::{Context, Result, anyhow};

/// One classified frame as reported on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// Name of the element that posted it (`visionclassify0` unless named).
    pub element: String,
    pub model: String,
    pub best_label: String,
    pub best_class_id: u32,
    pub best_confidence: f64,
    pub below_threshold: bool,
    /// The top-k labels and confidences at or above the threshold, best first.
    pub labels: Vec<String>,
    pub confidences: Vec<f64>,
    /// The frame's number since the element started.
    pub frame: u64,
    /// The buffer's PTS in nanoseconds, `None` when the buffer had none.
    pub timestamp: Option<u64>,
    pub reused: bool,
    /// Frames classified in the inference run that produced this result.
    pub batch_size: u32,
    pub inference_ns: u64,
}

const PREFIX: &str = "Got message #";
const ELEMENT_TAG: &str = " (element): ";

/// Every `visionclassify` message in `gst-launch-1.0 -m` output, in the order printed (the
/// bus order). Other lines and other element messages are skipped; a `visionclassify` message
/// that does not parse is an error.
pub fn parse_messages(stdout: &str) -> Result<Vec<Classified>> {
    gst::init().context("initialising GStreamer to parse messages")?;
    let mut out = Vec::new();
    for (n, line) in stdout.lines().enumerate() {
        let Some(rest) = line.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(tag_at) = rest.find(ELEMENT_TAG) else {
            continue;
        };
        let body = &rest[tag_at + ELEMENT_TAG.len()..];
        if !body.starts_with("visionclassify,") && !body.starts_with("visionclassify;") {
            continue;
        }
        let element = rest[..tag_at]
            .split_once("from element \"")
            .and_then(|(_, name)| name.strip_suffix('"'))
            .unwrap_or_default()
            .to_string();
        let s = gst::Structure::from_str(body)
            .map_err(|e| anyhow!("line {}: not a GstStructure ({e}): {line}", n + 1))?;
        let timestamp = s
            .get::<u64>("timestamp")
            .with_context(|| format!("line {}: field `timestamp`: {line}", n + 1))?;
        // GST_CLOCK_TIME_NONE is printed as the largest guint64.
        let timestamp = (timestamp != u64::MAX).then_some(timestamp);
        let message = Classified::from_structure(element, &s, timestamp)
            .with_context(|| format!("line {}: {line}", n + 1))?;
        out.push(message);
    }
    Ok(out)
}

impl Classified {
    /// Reads the fields `visionclassify` writes both into its messages and into its
    /// `VisionClassificationMeta`; `timestamp` is the message's field or the buffer's PTS.
    pub fn from_structure(
        element: String,
        s: &gst::StructureRef,
        timestamp: Option<u64>,
    ) -> Result<Self> {
        let get_str = |field: &str| -> Result<String> {
            s.get::<String>(field)
                .with_context(|| format!("field `{field}`"))
        };
        let strings = |field: &str| -> Result<Vec<String>> {
            let arr = s
                .get::<gst::Array>(field)
                .with_context(|| format!("field `{field}`"))?;
            arr.iter()
                .map(|v| {
                    v.get::<String>()
                        .with_context(|| format!("field `{field}`"))
                })
                .collect()
        };
        let doubles = |field: &str| -> Result<Vec<f64>> {
            let arr = s
                .get::<gst::Array>(field)
                .with_context(|| format!("field `{field}`"))?;
            arr.iter()
                .map(|v| v.get::<f64>().with_context(|| format!("field `{field}`")))
                .collect()
        };
        Ok(Classified {
            element,
            model: get_str("model")?,
            best_label: get_str("best-label")?,
            best_class_id: s.get("best-class-id").context("field `best-class-id`")?,
            best_confidence: s
                .get("best-confidence")
                .context("field `best-confidence`")?,
            below_threshold: s
                .get("below-threshold")
                .context("field `below-threshold`")?,
            labels: strings("labels")?,
            confidences: doubles("confidences")?,
            frame: s.get("frame").context("field `frame`")?,
            timestamp,
            reused: s.get("reused").context("field `reused`")?,
            batch_size: s.get("batch-size").context("field `batch-size`")?,
            inference_ns: s.get("inference-time").context("field `inference-time`")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"Setting pipeline to PAUSED ...
Got message #12 from element "visionclassify0" (state-changed): GstMessageStateChanged, old-state=(GstState)null, new-state=(GstState)ready, pending-state=(GstState)void-pending;
Got message #113 from element "visionclassify0" (element): visionclassify, model=(string)color3, class-ids=(uint)< 0, 1 >, labels=(string)< red, green >, confidences=(double)< 0.91090226173400879, 0.07565423846244812 >, best-class-id=(uint)0, best-label=(string)red, best-confidence=(double)0.91090226173400879, below-threshold=(boolean)false, inference-time=(guint64)101851, batch-size=(uint)4, reused=(boolean)false, frame=(guint64)1, timestamp=(guint64)100000000, stream-time=(guint64)100000000, running-time=(guint64)100000000;
Got message #114 from element "other" (element): something, a=(int)1;
Got message #115 from element "cls" (element): visionclassify, model=(string)gray2, class-ids=(uint)< >, labels=(string)< >, confidences=(double)< >, best-class-id=(uint)1, best-label=(string)dark, best-confidence=(double)0.5, below-threshold=(boolean)true, inference-time=(guint64)1, batch-size=(uint)1, reused=(boolean)false, frame=(guint64)2, timestamp=(guint64)18446744073709551615;
"#;

    #[test]
    fn parses_visionclassify_messages_only() -> Result<()> {
        let msgs = parse_messages(SAMPLE)?;
        assert_eq!(msgs.len(), 2);
        let m = &msgs[0];
        assert_eq!(m.element, "visionclassify0");
        assert_eq!(m.model, "color3");
        assert_eq!(m.best_label, "red");
        assert_eq!(m.labels, ["red", "green"]);
        assert!((m.best_confidence - 0.9109).abs() < 1e-4);
        assert_eq!(m.confidences.len(), 2);
        assert_eq!(
            (m.frame, m.timestamp, m.batch_size),
            (1, Some(100_000_000), 4)
        );
        assert!(!m.reused && !m.below_threshold);
        let m = &msgs[1];
        assert_eq!((m.element.as_str(), m.best_label.as_str()), ("cls", "dark"));
        assert!(m.below_threshold && m.labels.is_empty());
        assert_eq!(m.timestamp, None);
        Ok(())
    }

    #[test]
    fn a_broken_visionclassify_message_is_an_error() {
        let line = r#"Got message #1 from element "v" (element): visionclassify, model=(string)x;"#;
        assert!(parse_messages(line).is_err());
    }
}
