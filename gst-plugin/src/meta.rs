//! The classification metadata `visionclassify` attaches to every buffer: a GStreamer custom
//! meta named [`META_NAME`] whose structure holds the fields below. Consumers read it with
//! `gst_buffer_get_custom_meta(buffer, "VisionClassificationMeta")` (C) or [`read`] (Rust).
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `model` | string | model name |
//! | `class-ids` | array of uint | top-k class ids at or above the threshold, best first |
//! | `labels` | array of string | their labels |
//! | `confidences` | array of double | their confidences (0..1) |
//! | `best-class-id`, `best-label`, `best-confidence` | uint, string, double | the best class even when below the threshold |
//! | `below-threshold` | boolean | true when no class reached the threshold (the arrays are empty) |
//! | `inference-time` | guint64 | nanoseconds of the inference run that produced the result |
//! | `batch-size` | uint | frames classified in that run |
//! | `reused` | boolean | the frame was not classified itself (inference-interval) and carries the latest earlier result |
//! | `frame` | guint64 | the frame's number since the element started |

use std::sync::Arc;

use gst::glib;

use crate::scores::{ClassScore, Classification};

/// The registered name of the custom meta.
pub const META_NAME: &str = "VisionClassificationMeta";

/// One frame's result as carried in the meta.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameResult {
    pub model: Arc<str>,
    pub classification: Classification,
    pub inference_ns: u64,
    pub batch_size: u32,
    pub reused: bool,
    pub frame: u64,
}

/// Registers the custom meta (idempotent). No tags: the result describes the picture, not
/// its pixel layout, so transforms such as videoconvert/videoscale keep it.
pub fn register() {
    if !gst::meta::CustomMeta::is_registered(META_NAME) {
        gst::meta::CustomMeta::register(META_NAME, &[]);
    }
}

/// Fills `s` with the result's fields (shared by the meta and the bus messages).
pub fn fill_structure(s: &mut gst::StructureRef, r: &FrameResult) {
    let c = &r.classification;
    s.set("model", r.model.as_ref());
    s.set(
        "class-ids",
        gst::Array::new(c.classes.iter().map(|c| c.class_id)),
    );
    s.set(
        "labels",
        gst::Array::new(c.classes.iter().map(|c| c.label.as_ref())),
    );
    s.set(
        "confidences",
        gst::Array::new(c.classes.iter().map(|c| f64::from(c.confidence))),
    );
    s.set("best-class-id", c.best.class_id);
    s.set("best-label", c.best.label.as_ref());
    s.set("best-confidence", f64::from(c.best.confidence));
    s.set("below-threshold", c.below_threshold());
    s.set("inference-time", r.inference_ns);
    s.set("batch-size", r.batch_size);
    s.set("reused", r.reused);
    s.set("frame", r.frame);
}

/// Attaches the result to a writable buffer.
pub fn write(buffer: &mut gst::BufferRef, r: &FrameResult) -> Result<(), glib::BoolError> {
    let mut meta = gst::meta::CustomMeta::add(buffer, META_NAME)?;
    fill_structure(meta.mut_structure(), r);
    Ok(())
}

/// Reads the result back from a buffer; `None` when the buffer has no (valid) meta.
pub fn read(buffer: &gst::BufferRef) -> Option<FrameResult> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, META_NAME).ok()?;
    from_structure(meta.structure())
}

/// Parses the fields written by [`fill_structure`].
pub fn from_structure(s: &gst::StructureRef) -> Option<FrameResult> {
    let ids = s.get::<gst::Array>("class-ids").ok()?;
    let labels = s.get::<gst::Array>("labels").ok()?;
    let confs = s.get::<gst::Array>("confidences").ok()?;
    let classes = ids
        .iter()
        .zip(labels.iter())
        .zip(confs.iter())
        .map(|((id, label), conf)| {
            Some(ClassScore {
                class_id: id.get::<u32>().ok()?,
                label: Arc::from(label.get::<&str>().ok()?),
                confidence: conf.get::<f64>().ok()? as f32,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let best = ClassScore {
        class_id: s.get("best-class-id").ok()?,
        label: Arc::from(s.get::<&str>("best-label").ok()?),
        confidence: s.get::<f64>("best-confidence").ok()? as f32,
    };
    Some(FrameResult {
        model: Arc::from(s.get::<&str>("model").ok()?),
        classification: Classification { classes, best },
        inference_ns: s.get("inference-time").ok()?,
        batch_size: s.get("batch-size").ok()?,
        reused: s.get("reused").ok()?,
        frame: s.get("frame").ok()?,
    })
}

/// GStreamer's own analytics representation (GStreamer >= 1.24, crate feature `v1_24`): one
/// classification (`GstAnalyticsClsMtd`) per result, holding the reported classes with their
/// confidences and labels as quarks, in a `GstAnalyticsRelationMeta`. Nothing is added when no
/// class reached the threshold.
#[cfg(feature = "v1_24")]
pub mod analytics {
    use gst::glib;
    use gst_analytics::{
        AnalyticsClassificationMtd, AnalyticsMetaRefExt, AnalyticsRelationMeta,
        AnalyticsRelationMetaClassificationExt,
    };

    use super::FrameResult;

    pub fn write(buffer: &mut gst::BufferRef, r: &FrameResult) -> Result<(), glib::BoolError> {
        let classes = &r.classification.classes;
        if classes.is_empty() {
            return Ok(());
        }
        let levels: Vec<f32> = classes.iter().map(|c| c.confidence).collect();
        let quarks: Vec<glib::Quark> = classes
            .iter()
            .map(|c| glib::Quark::from_str(c.label.as_ref()))
            .collect();
        let mut meta = match buffer.meta::<AnalyticsRelationMeta>() {
            Some(_) => buffer
                .meta_mut::<AnalyticsRelationMeta>()
                .ok_or_else(|| glib::bool_error!("analytics meta vanished"))?,
            None => AnalyticsRelationMeta::add(buffer),
        };
        meta.add_cls_mtd(&levels, &quarks)?;
        Ok(())
    }

    /// Every classification on the buffer as (label, confidence) lists, one per mtd.
    pub fn read(buffer: &gst::BufferRef) -> Vec<Vec<(String, f32)>> {
        let Some(meta) = buffer.meta::<AnalyticsRelationMeta>() else {
            return Vec::new();
        };
        meta.iter::<AnalyticsClassificationMtd>()
            .map(|cls| {
                (0..cls.len())
                    .map(|i| (cls.quark(i).as_str().to_string(), cls.level(i)))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_a_buffer() {
        gst::init().expect("gst init");
        register();
        let label: Arc<str> = Arc::from("red");
        let r = FrameResult {
            model: Arc::from("color3"),
            classification: Classification {
                classes: vec![ClassScore {
                    class_id: 0,
                    label: label.clone(),
                    confidence: 0.75,
                }],
                best: ClassScore {
                    class_id: 0,
                    label,
                    confidence: 0.75,
                },
            },
            inference_ns: 1234,
            batch_size: 4,
            reused: true,
            frame: 17,
        };
        let mut buffer = gst::Buffer::new();
        write(buffer.get_mut().expect("writable"), &r).expect("meta added");
        assert_eq!(read(&buffer), Some(r.clone()));
        assert_eq!(read(&gst::Buffer::new()), None);
        #[cfg(feature = "v1_24")]
        {
            analytics::write(buffer.get_mut().expect("writable"), &r).expect("analytics");
            assert_eq!(
                analytics::read(&buffer),
                vec![vec![("red".to_string(), 0.75)]]
            );
        }
    }
}
