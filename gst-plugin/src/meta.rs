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

use crate::roi::Region;
use crate::scores::{ClassScore, Classification};

/// The registered name of the custom meta.
pub const META_NAME: &str = "VisionClassificationMeta";

/// One frame's result as carried in the meta.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameResult {
    /// The name of the model that classified the frame (`vision.model.name` or the file's stem).
    pub model: Arc<str>,
    /// That model's `vision.model.version`; empty when it states none.
    pub model_version: Arc<str>,
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
    if !r.model_version.is_empty() {
        s.set("model-version", r.model_version.as_ref());
    }
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
        model_version: Arc::from(s.get::<&str>("model-version").unwrap_or_default()),
        classification: Classification { classes, best },
        inference_ns: s.get("inference-time").ok()?,
        batch_size: s.get("batch-size").ok()?,
        reused: s.get("reused").ok()?,
        frame: s.get("frame").ok()?,
    })
}

// ---- regions of interest (`target=roi`) -------------------------------------------------

/// Name of the param structure `visionclassify` adds to each region it classified (fields as
/// in the frame meta), read by DL Streamer-style consumers from
/// `GstVideoRegionOfInterestMeta`'s params.
pub const OBJECT_PARAM: &str = "visionclassify";

/// A non-negative integer field of any integer type.
fn id_field(s: &gst::StructureRef, name: &str) -> Option<u64> {
    if let Ok(v) = s.get::<i32>(name) {
        return u64::try_from(v).ok();
    }
    if let Ok(v) = s.get::<i64>(name) {
        return u64::try_from(v).ok();
    }
    s.get::<u32>(name)
        .map(u64::from)
        .or_else(|_| s.get::<u64>(name))
        .ok()
}

/// The region a meta describes; `nth` is left at 0 (see [`regions`]).
fn region_of(m: &gst_video::VideoRegionOfInterestMeta) -> Region {
    let (x, y, w, h) = m.rect();
    Region {
        meta_id: m.id(),
        label: m.roi_type().to_owned(),
        x: i64::from(x),
        y: i64::from(y),
        w: i64::from(w),
        h: i64::from(h),
        // DL Streamer's gvatrack (and our tests): param `object_id` with an integer `id`.
        tracking_id: m.param("object_id").and_then(|s| id_field(s, "id")),
        nth: 0,
        od_id: None,
    }
}

/// Numbers regions that look alike (same meta id, label and box) in order, so each one is
/// found again on the buffer even if a copy of it lists its metas in another order.
fn number_alike(regions: &mut [Region]) {
    for i in 0..regions.len() {
        let nth = regions[..i]
            .iter()
            .filter(|r| same_place(r, &regions[i]))
            .count();
        regions[i].nth = u32::try_from(nth).unwrap_or(u32::MAX);
    }
}

fn same_place(a: &Region, b: &Region) -> bool {
    (a.meta_id, &a.label, a.x, a.y, a.w, a.h) == (b.meta_id, &b.label, b.x, b.y, b.w, b.h)
}

/// The buffer's regions of interest: its `GstVideoRegionOfInterestMeta`s in meta order, then
/// (crate feature `v1_24`) the `GstAnalyticsODMtd`s that no region meta already describes
/// (same type and box).
pub fn regions(buffer: &gst::BufferRef) -> Vec<Region> {
    let mut regions: Vec<Region> = buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| region_of(&m))
        .collect();
    #[cfg(feature = "v1_24")]
    {
        let detected = analytics::detections(buffer);
        let new: Vec<Region> = detected
            .into_iter()
            .map(|d| d.region)
            .filter(|od| {
                !regions
                    .iter()
                    .any(|r| (&r.label, r.x, r.y, r.w, r.h) == (&od.label, od.x, od.y, od.w, od.h))
            })
            .collect();
        regions.extend(new);
    }
    number_alike(&mut regions);
    regions
}

/// Attaches `r` to `region` on the buffer: as the [`OBJECT_PARAM`] param of its region meta,
/// or (a region from a `GstAnalyticsODMtd`) as a `GstAnalyticsClsMtd` related to it. False
/// when the buffer has no such region any more.
pub fn write_object(buffer: &mut gst::BufferRef, region: &Region, r: &FrameResult) -> bool {
    if let Some(_od) = region.od_id {
        #[cfg(feature = "v1_24")]
        return analytics::classify_detection(buffer, _od, r).is_ok();
        #[cfg(not(feature = "v1_24"))]
        return false;
    }
    let mut seen: Vec<Region> = Vec::new();
    for mut m in buffer.iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>() {
        let mut here = region_of(&m);
        here.nth =
            u32::try_from(seen.iter().filter(|s| same_place(s, &here)).count()).unwrap_or(u32::MAX);
        if same_place(&here, region) && here.nth == region.nth {
            let mut s = gst::Structure::new_empty(OBJECT_PARAM);
            fill_structure(&mut s, r);
            m.add_param(s);
            return true;
        }
        seen.push(here);
    }
    false
}

/// A region of a buffer with what the detector and `visionclassify` said about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectResult {
    pub region: Region,
    /// The detector's confidence, when it wrote one (param `detection`, field `confidence`,
    /// as DL Streamer's detectors do).
    pub confidence: Option<f32>,
    /// The classification `visionclassify` added; `None` for a region it did not classify
    /// (filtered out, or no result to reuse), and for a region from a `GstAnalyticsODMtd`.
    pub result: Option<FrameResult>,
    /// A region from a `GstAnalyticsODMtd` (feature `v1_24`): the classes of the
    /// `GstAnalyticsClsMtd`s related to it, as (label, confidence), best first.
    pub labels: Vec<(String, f32)>,
}

/// Every region of interest on the buffer with its classification, in meta order.
pub fn objects(buffer: &gst::BufferRef) -> Vec<ObjectResult> {
    let mut objects: Vec<ObjectResult> = buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|m| ObjectResult {
            region: region_of(&m),
            confidence: m
                .param("detection")
                .and_then(|s| s.get::<f64>("confidence").ok())
                .map(|c| c as f32),
            // The latest, should several classifiers have written one.
            result: m
                .params()
                .filter(|s| s.name() == OBJECT_PARAM)
                .last()
                .and_then(from_structure),
            labels: Vec::new(),
        })
        .collect();
    #[cfg(feature = "v1_24")]
    objects.extend(
        analytics::detections(buffer)
            .into_iter()
            .map(|d| ObjectResult {
                region: d.region,
                confidence: Some(d.confidence),
                result: None,
                labels: d.labels,
            }),
    );
    let mut regions: Vec<Region> = objects.iter().map(|o| o.region.clone()).collect();
    number_alike(&mut regions);
    for (o, r) in objects.iter_mut().zip(regions) {
        o.region.nth = r.nth;
    }
    objects
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

    use gst_analytics::{
        AnalyticsODMtd, AnalyticsTrackingMtd, RelTypes, prelude::AnalyticsRelationMetaODExt,
    };

    use super::FrameResult;
    use crate::roi::Region;

    /// The classification mtd of `r` (its reported classes), or `None` when no class
    /// reached the threshold.
    fn classes(r: &FrameResult) -> Option<(Vec<f32>, Vec<glib::Quark>)> {
        let classes = &r.classification.classes;
        if classes.is_empty() {
            return None;
        }
        Some((
            classes.iter().map(|c| c.confidence).collect(),
            classes
                .iter()
                .map(|c| glib::Quark::from_str(c.label.as_ref()))
                .collect(),
        ))
    }

    /// An object detection (`GstAnalyticsODMtd`) read as a region.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Detection {
        /// Its type, box, and the tracking id of a `GstAnalyticsTrackingMtd` related to it.
        pub region: Region,
        /// The detector's confidence.
        pub confidence: f32,
        /// The classes of the classifications related to it, best first.
        pub labels: Vec<(String, f32)>,
    }

    /// Every object detection on the buffer.
    pub fn detections(buffer: &gst::BufferRef) -> Vec<Detection> {
        let Some(meta) = buffer.meta::<AnalyticsRelationMeta>() else {
            return Vec::new();
        };
        meta.iter::<AnalyticsODMtd>()
            .filter_map(|od| {
                let loc = od.location().ok()?;
                let tracking_id = meta
                    .iter_direct_related::<AnalyticsTrackingMtd>(od.id(), RelTypes::ANY)
                    .next()
                    .map(|t| t.info().0);
                let mut labels: Vec<(String, f32)> = meta
                    .iter_direct_related::<AnalyticsClassificationMtd>(od.id(), RelTypes::ANY)
                    .flat_map(|cls| {
                        (0..cls.len())
                            .map(|i| (cls.quark(i).as_str().to_string(), cls.level(i)))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                labels.sort_by(|a, b| b.1.total_cmp(&a.1));
                let region = Region {
                    meta_id: -1,
                    label: od
                        .obj_type()
                        .map(|q| q.as_str().to_string())
                        .unwrap_or_default(),
                    x: i64::from(loc.x),
                    y: i64::from(loc.y),
                    w: i64::from(loc.w),
                    h: i64::from(loc.h),
                    tracking_id,
                    nth: 0,
                    od_id: Some(od.id()),
                };
                Some(Detection {
                    region,
                    confidence: loc.loc_conf_lvl,
                    labels,
                })
            })
            .collect()
    }

    /// Adds the classification of the object detection `od` as a `GstAnalyticsClsMtd`
    /// related to it (`RELATE_TO`); nothing when no class reached the threshold.
    pub fn classify_detection(
        buffer: &mut gst::BufferRef,
        od: u32,
        r: &FrameResult,
    ) -> Result<(), glib::BoolError> {
        let Some((levels, quarks)) = classes(r) else {
            return Ok(());
        };
        let mut meta = buffer
            .meta_mut::<AnalyticsRelationMeta>()
            .ok_or_else(|| glib::bool_error!("the buffer lost its analytics meta"))?;
        let cls = meta.add_cls_mtd(&levels, &quarks)?.id();
        meta.set_relation(RelTypes::RELATE_TO, od, cls)
    }

    /// Creates a detection (for tests and producers in Rust): an `AnalyticsODMtd` of `type_`
    /// at `rect` with `confidence`, and a tracking mtd related to it when `tracking_id` is set.
    pub fn add_detection(
        buffer: &mut gst::BufferRef,
        type_: &str,
        rect: (i32, i32, i32, i32),
        confidence: f32,
        tracking_id: Option<u64>,
    ) -> Result<u32, glib::BoolError> {
        use gst_analytics::prelude::AnalyticsRelationMetaTrackingExt;
        let mut meta = match buffer.meta::<AnalyticsRelationMeta>() {
            Some(_) => buffer
                .meta_mut::<AnalyticsRelationMeta>()
                .ok_or_else(|| glib::bool_error!("analytics meta vanished"))?,
            None => AnalyticsRelationMeta::add(buffer),
        };
        let (x, y, w, h) = rect;
        let od = meta
            .add_od_mtd(glib::Quark::from_str(type_), x, y, w, h, confidence)?
            .id();
        if let Some(id) = tracking_id {
            let t = meta.add_tracking_mtd(id, gst::ClockTime::ZERO)?.id();
            meta.set_relation(RelTypes::RELATE_TO, od, t)?;
        }
        Ok(od)
    }

    pub fn write(buffer: &mut gst::BufferRef, r: &FrameResult) -> Result<(), glib::BoolError> {
        let Some((levels, quarks)) = classes(r) else {
            return Ok(());
        };
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
            model_version: Arc::from("1.0.0"),
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
