//! Classification results → JSON events for MQTT, in the shape that consumers of Intel DL
//! Streamer's `gvametaconvert` already parse, plus the health message and topic templates.
//!
//! An event is one JSON object:
//! - from `gvametaconvert`: `objects` (one full-frame object with `x`, `y`, `w`, `h` and the
//!   attribute `classification` = `{label, label_id, confidence, model: {name}}`),
//!   `resolution {width, height}`, `source`, `timestamp` (stream time, ns), `system_timestamp`
//!   (wall clock, ISO-8601 UTC with milliseconds) and `tags`;
//! - ours: `version` ([`SCHEMA_VERSION`]), `sensorId` (as DeepStream/Metropolis name it),
//!   `run` (one start of the element), `sequence` (0, 1, 2, … per run, without gaps, so a
//!   consumer sees a lost event), `mode`, `model`, `frame`, the top-k `classes`,
//!   `below_threshold`, `reused`, and for the modes `change` and `summary` the fields
//!   `previous_label` and `summary`.
//!
//! With `visionclassify target=roi` an event holds one entry of `objects` per classified
//! region, as `gvametaconvert` writes detections: `x`, `y`, `w`, `h` (pixels), `detection`
//! (`bounding_box` normalised to 0..1, the detector's `label` and `confidence`), `id` (the
//! tracking id) and `roi_type`, plus the classification fields above.
//!
//! `gst-plugin/schema/event.schema.json` and `health.schema.json` are the JSON Schemas; the
//! tests validate every published message against them. Nothing here knows GStreamer or MQTT.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::meta::FrameResult;

/// Version of the event and health message format. The major number changes when a field is
/// removed or changes meaning; new optional fields raise the minor number.
pub const SCHEMA_VERSION: &str = "1.1";

/// Name of the full-frame attribute in `objects[0]` (DL Streamer names an attribute after the
/// model-proc `attribute_name` or the output layer).
pub const ATTRIBUTE: &str = "classification";

/// Bins of the confidence histograms in health messages: `[0, 0.1)`, …, `[0.9, 1.0]`.
pub const HISTOGRAM_BINS: usize = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("{setting} \"{template}\": {reason}")]
    Topic {
        setting: &'static str,
        template: String,
        reason: String,
    },
    #[error("sensor-id \"{0}\" cannot be part of an MQTT topic: it contains '+', '#' or NUL")]
    SensorId(String),
    #[error("tags must be a JSON object such as {{\"site\":\"north\"}}: {0}")]
    Tags(String),
}

// ---- input ---------------------------------------------------------------------------------

/// One class of a result as the publisher sees it. `id` is `None` for classifications from
/// other producers (GstAnalytics meta) that carry only labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub label: Arc<str>,
    pub id: Option<u32>,
    pub confidence: f32,
}

/// One frame's classification, whichever meta it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub model: Arc<str>,
    /// Classes that passed the producer's threshold, best first (empty when none did).
    pub classes: Vec<Class>,
    /// The best class, whether or not it passed.
    pub best: Class,
    pub reused: bool,
    pub inference_ns: Option<u64>,
    pub frame: Option<u64>,
}

impl From<&FrameResult> for Observation {
    fn from(r: &FrameResult) -> Self {
        let class = |c: &crate::scores::ClassScore| Class {
            label: c.label.clone(),
            id: Some(c.class_id),
            confidence: c.confidence,
        };
        Self {
            model: r.model.clone(),
            classes: r.classification.classes.iter().map(class).collect(),
            best: class(&r.classification.best),
            reused: r.reused,
            inference_ns: Some(r.inference_ns),
            frame: Some(r.frame),
        }
    }
}

impl Observation {
    /// From `(label, confidence)` pairs (GstAnalytics classification meta), best first after
    /// sorting; `None` when there is no class at all.
    pub fn from_labels(model: Arc<str>, mut labels: Vec<(String, f32)>) -> Option<Self> {
        labels.sort_by(|a, b| b.1.total_cmp(&a.1));
        let classes: Vec<Class> = labels
            .into_iter()
            .map(|(label, confidence)| Class {
                label: Arc::from(label),
                id: None,
                confidence,
            })
            .collect();
        Some(Self {
            model,
            best: classes.first()?.clone(),
            classes,
            reused: false,
            inference_ns: None,
            frame: None,
        })
    }

    /// The label this frame stands for under `min_confidence`: the best class when it passed
    /// the producer's threshold and reaches `min_confidence`, else `None`.
    pub fn label(&self, min_confidence: f32) -> Option<&Class> {
        let best = self.classes.first()?;
        (best.confidence >= min_confidence).then_some(best)
    }
}

/// A region of a frame (`visionclassify target=roi`) and its classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// The detector's box in pixels (as on the meta: it may reach past the frame's edge).
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// The detector's label (the region's type), empty when it gave none.
    pub label: String,
    /// The detector's confidence, when it wrote one.
    pub confidence: Option<f32>,
    /// The tracker's id of the object.
    pub id: Option<u64>,
    pub observation: Observation,
}

/// Where and when a frame was seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameContext {
    /// Stream time of the frame (ns), when it has a timestamp.
    pub timestamp: Option<u64>,
    /// Clock of the summary windows (ns): the stream time, or the time since start for
    /// frames without timestamps.
    pub clock: u64,
    pub resolution: Option<Resolution>,
    pub system_time: SystemTime,
}

/// Who publishes: the same in every event of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub sensor_id: String,
    pub source: Option<String>,
    pub tags: Option<serde_json::Map<String, serde_json::Value>>,
    pub run: String,
}

/// Parses the `tags` setting: empty means none; anything else must be a JSON object.
pub fn parse_tags(
    s: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, EventError> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        Ok(other) => Err(EventError::Tags(format!("got {other}"))),
        Err(e) => Err(EventError::Tags(e.to_string())),
    }
}

/// A run identifier: the start time in milliseconds since the epoch and the process id, in
/// hexadecimal. Two starts of the same sensor never share one.
pub fn run_id(start: SystemTime, pid: u32) -> String {
    let ms = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("{ms:x}-{pid:x}")
}

/// Wall-clock time as ISO-8601 UTC with milliseconds, e.g. `2025-05-01T12:00:00.123Z`.
pub fn iso8601(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---- output --------------------------------------------------------------------------------

/// A confidence read from JSON: a number float32 can hold. Without the check `1e39` would read
/// as infinity and write back as `null`, which no reader accepts (found by fuzzing).
fn finite_f32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    narrow_confidence(f64::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn finite_f32_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    Option::<f64>::deserialize(d)?
        .map(narrow_confidence)
        .transpose()
        .map_err(serde::de::Error::custom)
}

fn narrow_confidence(v: f64) -> Result<f32, String> {
    let narrow = v as f32;
    if narrow.is_finite() {
        Ok(narrow)
    } else {
        Err(format!("{v} is out of the range of a float32 confidence"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Every frame that carries a label.
    #[default]
    All,
    /// Only when the frame's label differs from the last published one.
    Change,
    /// Counts per label and mean confidence every `summary-interval`.
    Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelName {
    pub name: String,
}

/// A class as DL Streamer writes a classification attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_id: Option<u32>,
    #[serde(deserialize_with = "finite_f32")]
    pub confidence: f32,
    pub model: ModelName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassEntry {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_id: Option<u32>,
    #[serde(deserialize_with = "finite_f32")]
    pub confidence: f32,
}

impl From<&Class> for ClassEntry {
    fn from(c: &Class) -> Self {
        Self {
            label: c.label.to_string(),
            label_id: c.id,
            confidence: c.confidence,
        }
    }
}

/// A box normalised to the frame (0..1), as `gvametaconvert` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    pub x_min: f64,
    pub y_min: f64,
    pub x_max: f64,
    pub y_max: f64,
}

/// What the detector said about a region (`gvametaconvert`'s `detection`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub bounding_box: BoundingBox,
    pub label: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "finite_f32_option"
    )]
    pub confidence: Option<f32>,
}

/// An object of an event: the full frame, or (`target=roi`) a region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameObject {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// A region's detection; absent for the full-frame object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
    /// A region's tracking id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// A region's type (the detector's label), as `gvametaconvert`'s `roi_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi_type: Option<String>,
    /// The frame's label; absent when it is below the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Attribute>,
    /// Top-k classes that passed the threshold, best first (in a summary: every label seen,
    /// most frequent first, with its mean confidence).
    pub classes: Vec<ClassEntry>,
    pub below_threshold: bool,
    /// The frame was not classified itself and carries an earlier frame's result.
    pub reused: bool,
    /// The best class when it did not reach the threshold, to show how far below it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<ClassEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSummary {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_id: Option<u32>,
    pub count: u64,
    #[serde(deserialize_with = "finite_f32")]
    pub mean_confidence: f32,
    #[serde(deserialize_with = "finite_f32")]
    pub min_confidence: f32,
    #[serde(deserialize_with = "finite_f32")]
    pub max_confidence: f32,
}

/// A summary window: `[start, end)` in stream time (ns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub start: u64,
    pub end: u64,
    pub frames: u64,
    pub reused: u64,
    pub below_threshold: u64,
    /// Most frequent first.
    pub labels: Vec<LabelSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub version: String,
    #[serde(rename = "sensorId")]
    pub sensor_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub run: String,
    pub sequence: u64,
    pub mode: PublishMode,
    pub model: String,
    /// Stream time of the frame (of the window's start for a summary), ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    pub system_timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Map<String, serde_json::Value>>,
    pub objects: Vec<FrameObject>,
    /// The frame's number since `visionclassify` started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    /// `change` mode: the label of the previous event (absent on the first event of a run
    /// and after an event without label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

impl Event {
    /// The event's label (for the `{label}` topic placeholder), `None` below the threshold.
    pub fn label(&self) -> Option<&str> {
        self.objects
            .first()?
            .classification
            .as_ref()
            .map(|a| a.label.as_str())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

// ---- the policy ----------------------------------------------------------------------------

/// What to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub mode: PublishMode,
    /// A frame whose best class is below this (or below the producer's threshold) has no
    /// label: not published in `all`, a change to "no label" in `change`, counted under
    /// `below_threshold` in `summary`.
    pub min_confidence: f32,
    pub summary_interval: Duration,
}

#[derive(Debug, Default)]
struct LabelAcc {
    id: Option<u32>,
    count: u64,
    sum: f64,
    min: f32,
    max: f32,
}

#[derive(Debug)]
struct Window {
    start: u64,
    first_timestamp: Option<u64>,
    frames: u64,
    reused: u64,
    below: u64,
    labels: BTreeMap<Arc<str>, LabelAcc>,
    model: Arc<str>,
    resolution: Option<Resolution>,
}

/// Turns observations into events under a [`Policy`], numbering them.
#[derive(Debug)]
pub struct EventBuilder {
    identity: Identity,
    policy: Policy,
    sequence: u64,
    /// `change` mode: the label of the last published event (`Some(None)`: no label).
    last_label: Option<Option<Arc<str>>>,
    /// `change` mode with regions: the label of each object in the last published event.
    last_objects: BTreeMap<ObjectKey, Option<Arc<str>>>,
    window: Option<Window>,
}

/// How an object is recognised from frame to frame: its tracking id, else its type and its
/// place among the untracked objects of that type in the frame.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ObjectKey {
    Tracked(u64),
    Untracked(String, usize),
}

fn object_keys(regions: &[Region]) -> Vec<ObjectKey> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    regions
        .iter()
        .map(|r| match r.id {
            Some(id) => ObjectKey::Tracked(id),
            None => {
                let n = seen.entry(r.label.as_str()).or_default();
                *n += 1;
                ObjectKey::Untracked(r.label.clone(), *n - 1)
            }
        })
        .collect()
}

impl EventBuilder {
    pub fn new(identity: Identity, policy: Policy) -> Self {
        Self {
            identity,
            policy,
            sequence: 0,
            last_label: None,
            last_objects: BTreeMap::new(),
            window: None,
        }
    }

    /// Sets the `source` of the events from now on (found upstream after start).
    pub fn set_source(&mut self, source: Option<String>) {
        self.identity.source = source;
    }

    /// Sequence number of the next event.
    pub fn next_sequence(&self) -> u64 {
        self.sequence
    }

    /// The events this frame causes: none, one, or (summary mode, when the frame starts a
    /// new window) the finished window's summary.
    pub fn frame(&mut self, ctx: &FrameContext, obs: &Observation) -> Option<Event> {
        match self.policy.mode {
            PublishMode::All => {
                let label = obs.label(self.policy.min_confidence)?.clone();
                Some(self.frame_event(ctx, obs, Some(&label), None))
            }
            PublishMode::Change => {
                let label = obs.label(self.policy.min_confidence).cloned();
                let key = label.as_ref().map(|c| c.label.clone());
                if self.last_label.as_ref() == Some(&key) {
                    return None;
                }
                let previous = self.last_label.replace(key).flatten();
                Some(self.frame_event(ctx, obs, label.as_ref(), previous))
            }
            PublishMode::Summary => self.summarise(ctx, &[obs]),
        }
    }

    /// The events a frame of classified regions causes (`visionclassify target=roi`):
    /// `all`: one event per frame where some object has a label; `change`: one when an
    /// object's label differs from the last published one for that object (or the object
    /// is new); `summary`: each object's label counts in the window. The event holds every
    /// classified region of the frame, those without label marked `below_threshold`.
    pub fn regions(&mut self, ctx: &FrameContext, regions: &[Region]) -> Option<Event> {
        if regions.is_empty() {
            return None;
        }
        let min = self.policy.min_confidence;
        match self.policy.mode {
            PublishMode::All => {
                regions
                    .iter()
                    .find(|r| r.observation.label(min).is_some())?;
                Some(self.regions_event(ctx, regions))
            }
            PublishMode::Change => {
                let now: BTreeMap<ObjectKey, Option<Arc<str>>> = object_keys(regions)
                    .into_iter()
                    .zip(regions)
                    .map(|(k, r)| (k, r.observation.label(min).map(|c| c.label.clone())))
                    .collect();
                let changed = now
                    .iter()
                    .any(|(k, label)| self.last_objects.get(k) != Some(label));
                // Objects that left are forgotten: one coming back is news again.
                self.last_objects = now;
                changed.then(|| self.regions_event(ctx, regions))
            }
            PublishMode::Summary => {
                let observations: Vec<&Observation> =
                    regions.iter().map(|r| &r.observation).collect();
                self.summarise(ctx, &observations)
            }
        }
    }

    fn regions_event(&mut self, ctx: &FrameContext, regions: &[Region]) -> Event {
        let (fw, fh) = ctx.resolution.map_or((0, 0), |r| (r.width, r.height));
        let norm = |v: u32, size: u32| {
            if size == 0 {
                0.0
            } else {
                (f64::from(v) / f64::from(size)).clamp(0.0, 1.0)
            }
        };
        let objects = regions
            .iter()
            .map(|r| {
                let label = r.observation.label(self.policy.min_confidence).cloned();
                let mut o = self.object(&r.observation, label.as_ref(), r.w, r.h);
                o.x = r.x;
                o.y = r.y;
                o.detection = Some(Detection {
                    bounding_box: BoundingBox {
                        x_min: norm(r.x, fw),
                        y_min: norm(r.y, fh),
                        x_max: norm(r.x.saturating_add(r.w), fw),
                        y_max: norm(r.y.saturating_add(r.h), fh),
                    },
                    label: r.label.clone(),
                    confidence: r.confidence,
                });
                o.id = r.id;
                o.roi_type = Some(r.label.clone());
                o
            })
            .collect();
        let model = regions[0].observation.model.clone();
        let mut event = self.envelope(
            &model,
            ctx.timestamp,
            ctx.resolution,
            ctx.system_time,
            objects,
        );
        event.frame = regions[0].observation.frame;
        event
    }

    /// Ends the current summary window (end of stream, stop): its event, if it saw frames.
    pub fn flush(&mut self, ctx: &FrameContext) -> Option<Event> {
        let w = self.window.take()?;
        let end = ctx.clock.max(w.start);
        Some(self.summary_event(w, end, ctx.system_time))
    }

    fn envelope(
        &mut self,
        model: &str,
        timestamp: Option<u64>,
        resolution: Option<Resolution>,
        system_time: SystemTime,
        objects: Vec<FrameObject>,
    ) -> Event {
        let sequence = self.sequence;
        self.sequence += 1;
        Event {
            version: SCHEMA_VERSION.to_string(),
            sensor_id: self.identity.sensor_id.clone(),
            source: self.identity.source.clone(),
            run: self.identity.run.clone(),
            sequence,
            mode: self.policy.mode,
            model: model.to_string(),
            timestamp,
            system_timestamp: iso8601(system_time),
            resolution,
            tags: self.identity.tags.clone(),
            objects,
            frame: None,
            previous_label: None,
            summary: None,
        }
    }

    fn frame_event(
        &mut self,
        ctx: &FrameContext,
        obs: &Observation,
        label: Option<&Class>,
        previous: Option<Arc<str>>,
    ) -> Event {
        let (w, h) = ctx.resolution.map_or((0, 0), |r| (r.width, r.height));
        let object = self.object(obs, label, w, h);
        let mut event = self.envelope(
            &obs.model,
            ctx.timestamp,
            ctx.resolution,
            ctx.system_time,
            vec![object],
        );
        event.frame = obs.frame;
        event.previous_label = previous.map(|p| p.to_string());
        event
    }

    /// The object of an observation, at 0, 0 with size `w`×`h`.
    fn object(&self, obs: &Observation, label: Option<&Class>, w: u32, h: u32) -> FrameObject {
        FrameObject {
            x: 0,
            y: 0,
            w,
            h,
            detection: None,
            id: None,
            roi_type: None,
            classification: label.map(|c| Attribute {
                label: c.label.to_string(),
                label_id: c.id,
                confidence: c.confidence,
                model: ModelName {
                    name: obs.model.to_string(),
                },
            }),
            classes: obs
                .classes
                .iter()
                .filter(|c| label.is_some() && c.confidence >= self.policy.min_confidence)
                .map(ClassEntry::from)
                .collect(),
            below_threshold: label.is_none(),
            reused: obs.reused,
            best: label.is_none().then(|| ClassEntry::from(&obs.best)),
        }
    }

    /// Counts a frame in the summary window: its observation (the frame), or one per
    /// classified region.
    fn summarise(&mut self, ctx: &FrameContext, observations: &[&Observation]) -> Option<Event> {
        let obs = observations.first()?;
        let interval = (self.policy.summary_interval.as_nanos() as u64).max(1);
        let mut done = None;
        if let Some(w) = &self.window {
            // A window ends when a frame reaches its end, or when time went backwards (seek).
            if ctx.clock >= w.start.saturating_add(interval) || ctx.clock < w.start {
                let w = self.window.take()?;
                let end = if ctx.clock < w.start {
                    ctx.clock.max(w.start)
                } else {
                    w.start + interval
                };
                done = Some(self.summary_event(w, end, ctx.system_time));
            }
        }
        let start = match &done {
            // Windows stay aligned to the first one unless frames skipped whole windows.
            Some(ev) => {
                let end = ev.summary.as_ref().map_or(ctx.clock, |s| s.end);
                if ctx.clock >= end && ctx.clock < end.saturating_add(interval) {
                    end
                } else {
                    ctx.clock
                }
            }
            None => ctx.clock,
        };
        let w = self.window.get_or_insert_with(|| Window {
            start,
            first_timestamp: ctx.timestamp,
            frames: 0,
            reused: 0,
            below: 0,
            labels: BTreeMap::new(),
            model: obs.model.clone(),
            resolution: ctx.resolution,
        });
        w.frames += 1;
        w.model = obs.model.clone();
        w.resolution = ctx.resolution.or(w.resolution);
        for obs in observations {
            w.reused += u64::from(obs.reused);
            match obs.label(self.policy.min_confidence) {
                None => w.below += 1,
                Some(c) => {
                    let acc = w.labels.entry(c.label.clone()).or_insert(LabelAcc {
                        id: c.id,
                        min: f32::INFINITY,
                        max: f32::NEG_INFINITY,
                        ..LabelAcc::default()
                    });
                    acc.count += 1;
                    acc.sum += f64::from(c.confidence);
                    acc.min = acc.min.min(c.confidence);
                    acc.max = acc.max.max(c.confidence);
                }
            }
        }
        done
    }

    fn summary_event(&mut self, w: Window, end: u64, system_time: SystemTime) -> Event {
        let mut labels: Vec<LabelSummary> = w
            .labels
            .iter()
            .map(|(label, acc)| LabelSummary {
                label: label.to_string(),
                label_id: acc.id,
                count: acc.count,
                mean_confidence: (acc.sum / acc.count.max(1) as f64) as f32,
                min_confidence: acc.min,
                max_confidence: acc.max,
            })
            .collect();
        // Most frequent first; ties by label for a stable order.
        labels.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
        let (width, height) = w.resolution.map_or((0, 0), |r| (r.width, r.height));
        let object = FrameObject {
            x: 0,
            y: 0,
            w: width,
            h: height,
            classification: labels.first().map(|l| Attribute {
                label: l.label.clone(),
                label_id: l.label_id,
                confidence: l.mean_confidence,
                model: ModelName {
                    name: w.model.to_string(),
                },
            }),
            classes: labels
                .iter()
                .map(|l| ClassEntry {
                    label: l.label.clone(),
                    label_id: l.label_id,
                    confidence: l.mean_confidence,
                })
                .collect(),
            below_threshold: labels.is_empty(),
            reused: false,
            best: None,
            detection: None,
            id: None,
            roi_type: None,
        };
        let timestamp = w.first_timestamp.map(|_| w.start);
        let mut event = self.envelope(&w.model, timestamp, w.resolution, system_time, vec![object]);
        event.summary = Some(Summary {
            start: w.start,
            end,
            frames: w.frames,
            reused: w.reused,
            below_threshold: w.below,
            labels,
        });
        event
    }
}

// ---- topics --------------------------------------------------------------------------------

/// A topic placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Sensor,
    Model,
    Label,
}

impl Placeholder {
    fn name(self) -> &'static str {
        match self {
            Self::Sensor => "{sensor}",
            Self::Model => "{model}",
            Self::Label => "{label}",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A topic with placeholders, e.g. `vision/{sensor}/classifications`, checked once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

/// What placeholders stand for when a topic is rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicValues<'a> {
    pub sensor: &'a str,
    pub model: &'a str,
    pub label: Option<&'a str>,
}

impl TopicTemplate {
    /// Parses `template`, allowing only the `allowed` placeholders; errors name `setting`.
    pub fn parse(
        setting: &'static str,
        template: &str,
        allowed: &[Placeholder],
    ) -> Result<Self, EventError> {
        let err = |reason: String| EventError::Topic {
            setting,
            template: template.to_string(),
            reason,
        };
        if template.is_empty() {
            return Err(err("an MQTT topic cannot be empty".into()));
        }
        if template.contains(['+', '#', '\0']) {
            return Err(err(
                "a topic to publish to cannot contain the wildcards '+' or '#' (or NUL)".into(),
            ));
        }
        let known = || {
            allowed
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if let Some(close) = rest[..open].find('}') {
                return Err(err(format!("unmatched '}}' at \"{}\"", &rest[close..])));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(len) = rest[open..].find('}') else {
                return Err(err(format!("unclosed '{{' at \"{}\"", &rest[open..])));
            };
            let name = &rest[open..open + len + 1];
            let placeholder = [Placeholder::Sensor, Placeholder::Model, Placeholder::Label]
                .into_iter()
                .find(|p| p.name() == name)
                .filter(|p| allowed.contains(p))
                .ok_or_else(|| {
                    err(format!(
                        "unknown placeholder {name}; this setting knows {}",
                        known()
                    ))
                })?;
            parts.push(Part::Value(placeholder));
            rest = &rest[open + len + 1..];
        }
        if rest.contains('}') {
            return Err(err(format!("unmatched '}}' in \"{rest}\"")));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    pub fn uses(&self, p: Placeholder) -> bool {
        self.parts.contains(&Part::Value(p))
    }

    /// The topic. A label's '/', '+' and '#' become '_' (a label is one topic level); a
    /// missing label is `none`.
    pub fn render(&self, v: &TopicValues<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value(Placeholder::Sensor) => out.push_str(v.sensor),
                Part::Value(Placeholder::Model) => out.push_str(&level(v.model)),
                Part::Value(Placeholder::Label) => out.push_str(&level(v.label.unwrap_or("none"))),
            }
        }
        out
    }
}

fn level(s: &str) -> String {
    s.replace(['/', '+', '#', '\0'], "_")
}

/// Checks that a sensor id can stand in a topic ('/' is allowed: `site/camera-1`).
pub fn check_sensor_id(sensor: &str) -> Result<(), EventError> {
    if sensor.contains(['+', '#', '\0']) {
        return Err(EventError::SensorId(sensor.to_string()));
    }
    Ok(())
}

// ---- health --------------------------------------------------------------------------------

/// Running confidence distribution of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: u64,
    pub mean: f32,
    pub min: f32,
    pub max: f32,
    /// Counts in [`HISTOGRAM_BINS`] equal bins over `[0, 1]`.
    pub histogram: Vec<u64>,
}

#[derive(Debug, Clone, Default)]
struct DistAcc {
    count: u64,
    sum: f64,
    min: f32,
    max: f32,
    bins: [u64; HISTOGRAM_BINS],
}

impl DistAcc {
    fn add(&mut self, confidence: f32) {
        if self.count == 0 {
            self.min = confidence;
            self.max = confidence;
        }
        self.count += 1;
        self.sum += f64::from(confidence);
        self.min = self.min.min(confidence);
        self.max = self.max.max(confidence);
        let bin = (confidence.clamp(0.0, 1.0) * HISTOGRAM_BINS as f32) as usize;
        self.bins[bin.min(HISTOGRAM_BINS - 1)] += 1;
    }

    fn out(&self) -> Distribution {
        Distribution {
            count: self.count,
            mean: (self.sum / self.count.max(1) as f64) as f32,
            min: self.min,
            max: self.max,
            histogram: self.bins.to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InferenceTime {
    pub mean_ms: f64,
    pub max_ms: f64,
}

/// The delivery layer's counters, as the health message reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Events waiting in memory for the connection.
    pub queue_depth: u64,
    pub spooled: u64,
    pub sent: u64,
    pub acked: u64,
    pub dropped: u64,
    pub connected: bool,
}

/// The periodic health message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    #[serde(rename = "sensorId")]
    pub sensor_id: String,
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub system_timestamp: String,
    pub uptime_s: f64,
    /// Length of the window the `*_window` figures cover.
    pub window_s: f64,
    pub frames: u64,
    pub frames_window: u64,
    /// Frames per second over the window.
    pub fps: f64,
    /// Inference time of the frames classified in the window (`null` when none was).
    pub inference: Option<InferenceTime>,
    /// Events made since start (published or waiting).
    pub events: u64,
    pub delivery: DeliveryCounts,
    /// Best-class confidence per label since start (classified frames, reused ones excluded).
    pub confidence: BTreeMap<String, Distribution>,
    /// The same over the window only: compare with `confidence` to see drift.
    pub confidence_window: BTreeMap<String, Distribution>,
}

impl Health {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Counts what the health message reports; time is an argument.
#[derive(Debug, Default)]
pub struct HealthTracker {
    model: Option<Arc<str>>,
    frames: u64,
    frames_window: u64,
    inference_total_ns: u128,
    inference_max_ns: u64,
    inferences: u64,
    total: BTreeMap<Arc<str>, DistAcc>,
    window: BTreeMap<Arc<str>, DistAcc>,
    window_start: Duration,
}

impl HealthTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A frame without classification.
    pub fn record_frame(&mut self) {
        self.frames += 1;
        self.frames_window += 1;
    }

    pub fn record(&mut self, obs: &Observation) {
        self.record_frame();
        self.result(obs);
    }

    /// A frame of classified regions: one frame, each region's result in the confidences.
    pub fn record_regions<'a>(&mut self, observations: impl IntoIterator<Item = &'a Observation>) {
        self.record_frame();
        for obs in observations {
            self.result(obs);
        }
    }

    fn result(&mut self, obs: &Observation) {
        self.model = Some(obs.model.clone());
        if obs.reused {
            return;
        }
        if let Some(ns) = obs.inference_ns {
            self.inferences += 1;
            self.inference_total_ns += u128::from(ns);
            self.inference_max_ns = self.inference_max_ns.max(ns);
        }
        let c = obs.best.confidence;
        if c.is_finite() {
            for map in [&mut self.total, &mut self.window] {
                map.entry(obs.best.label.clone()).or_default().add(c);
            }
        }
    }

    /// The message for the window that ends at `uptime` (time since start); starts a new one.
    pub fn snapshot(
        &mut self,
        identity: &Identity,
        uptime: Duration,
        events: u64,
        delivery: DeliveryCounts,
        system_time: SystemTime,
    ) -> Health {
        let window = uptime.saturating_sub(self.window_start);
        let secs = window.as_secs_f64();
        let dist = |m: &BTreeMap<Arc<str>, DistAcc>| {
            m.iter()
                .map(|(k, v)| (k.to_string(), v.out()))
                .collect::<BTreeMap<_, _>>()
        };
        let health = Health {
            version: SCHEMA_VERSION.to_string(),
            sensor_id: identity.sensor_id.clone(),
            run: identity.run.clone(),
            model: self.model.as_ref().map(|m| m.to_string()),
            system_timestamp: iso8601(system_time),
            uptime_s: uptime.as_secs_f64(),
            window_s: secs,
            frames: self.frames,
            frames_window: self.frames_window,
            fps: if secs > 0.0 {
                self.frames_window as f64 / secs
            } else {
                0.0
            },
            inference: (self.inferences > 0).then(|| InferenceTime {
                mean_ms: self.inference_total_ns as f64 / self.inferences as f64 / 1e6,
                max_ms: self.inference_max_ns as f64 / 1e6,
            }),
            events,
            delivery,
            confidence: dist(&self.total),
            confidence_window: dist(&self.window),
        };
        self.window.clear();
        self.frames_window = 0;
        self.inferences = 0;
        self.inference_total_ns = 0;
        self.inference_max_ns = 0;
        self.window_start = uptime;
        health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn class(label: &str, id: u32, confidence: f32) -> Class {
        Class {
            label: Arc::from(label),
            id: Some(id),
            confidence,
        }
    }

    /// A result whose best class is `label`; `passed` = it passed the producer's threshold.
    fn obs(label: &str, confidence: f32, passed: bool) -> Observation {
        let id = match label {
            "red" => 0,
            "green" => 1,
            _ => 2,
        };
        let best = class(label, id, confidence);
        let mut classes = Vec::new();
        if passed {
            classes.push(best.clone());
            classes.push(class("other", 9, (1.0 - confidence) / 2.0));
        }
        Observation {
            model: Arc::from("color3"),
            classes,
            best,
            reused: false,
            inference_ns: Some(2 * MS),
            frame: Some(0),
        }
    }

    fn ctx(t: u64) -> FrameContext {
        FrameContext {
            timestamp: Some(t),
            clock: t,
            resolution: Some(Resolution {
                width: 64,
                height: 48,
            }),
            system_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_746_100_800_123),
        }
    }

    fn identity() -> Identity {
        Identity {
            sensor_id: "cam-1".into(),
            source: Some("file:///v.webm".into()),
            tags: parse_tags(r#"{"site":"north"}"#).unwrap(),
            run: "r1".into(),
        }
    }

    fn builder(mode: PublishMode, min_confidence: f32) -> EventBuilder {
        EventBuilder::new(
            identity(),
            Policy {
                mode,
                min_confidence,
                summary_interval: Duration::from_secs(1),
            },
        )
    }

    fn region(label: &str, id: Option<u64>, observation: Observation) -> Region {
        Region {
            x: 16,
            y: 12,
            w: 32,
            h: 48,
            label: label.into(),
            confidence: id.map(|_| 0.75),
            id,
            observation,
        }
    }

    #[test]
    fn region_events_hold_one_gvametaconvert_object_per_region() {
        let mut b = builder(PublishMode::All, 0.5);
        let ev = b
            .regions(
                &ctx(7),
                &[
                    region("face", Some(3), obs("red", 0.9, true)),
                    region("face", None, obs("green", 0.4, true)),
                ],
            )
            .expect("an object has a label");
        let v: serde_json::Value = serde_json::from_slice(&ev.to_json()).unwrap();
        let o = &v["objects"];
        assert_eq!(o.as_array().unwrap().len(), 2);
        assert_eq!(
            (o[0]["x"].as_u64(), o[0]["h"].as_u64()),
            (Some(16), Some(48))
        );
        let bbox = &o[0]["detection"]["bounding_box"];
        assert_eq!(bbox["x_min"], 0.25);
        assert_eq!(bbox["y_min"], 0.25);
        assert_eq!(bbox["x_max"], 0.75);
        assert_eq!(bbox["y_max"], 1.0, "clamped to the frame");
        assert_eq!(o[0]["detection"]["label"], "face");
        assert_eq!(o[0]["detection"]["confidence"], 0.75);
        assert_eq!(o[0]["id"], 3);
        assert_eq!(o[0]["roi_type"], "face");
        assert_eq!(o[0]["classification"]["label"], "red");
        assert_eq!(o[1]["below_threshold"], true, "below min-confidence");
        assert_eq!(o[1]["best"]["label"], "green");
        assert!(o[1].get("id").is_none() && o[1]["detection"].get("confidence").is_none());
        assert_eq!(ev.label(), Some("red"));
        // No object with a label: nothing in `all` mode; no region: nothing at all.
        assert!(
            b.regions(&ctx(8), &[region("face", None, obs("red", 0.2, false))])
                .is_none()
        );
        assert!(b.regions(&ctx(9), &[]).is_none());
    }

    #[test]
    fn change_mode_with_regions_follows_each_object() {
        let mut b = builder(PublishMode::Change, 0.5);
        let red = || obs("red", 0.9, true);
        let green = || obs("green", 0.9, true);
        let mut published = Vec::new();
        let frames = [
            vec![region("car", Some(1), red())], // new: yes
            vec![region("car", Some(1), red())], // same: no
            vec![
                region("car", Some(1), red()),
                region("car", Some(2), green()),
            ], // 2 new: yes
            vec![
                region("car", Some(2), green()),
                region("car", Some(1), red()),
            ], // reordered: no
            vec![
                region("car", Some(1), green()),
                region("car", Some(2), green()),
            ], // 1 changed
            vec![region("car", Some(2), green())], // 1 left: no
            vec![
                region("car", Some(1), green()),
                region("car", Some(2), green()),
            ], // 1 back
            vec![region("bus", None, red())],    // untracked
            vec![region("bus", None, red())],    // same: no
        ];
        for (i, f) in frames.iter().enumerate() {
            published.push(b.regions(&ctx(i as u64), f).is_some());
        }
        assert_eq!(
            published,
            [true, false, true, false, true, false, true, true, false]
        );
    }

    #[test]
    fn summary_mode_with_regions_counts_objects() {
        let mut b = builder(PublishMode::Summary, 0.5);
        let frame = [
            region("car", Some(1), obs("red", 0.9, true)),
            region("car", Some(2), obs("red", 0.7, true)),
            region("car", Some(3), obs("green", 0.2, false)),
        ];
        assert!(b.regions(&ctx(0), &frame).is_none());
        assert!(b.regions(&ctx(MS), &frame[..1]).is_none());
        let ev = b.flush(&ctx(S)).expect("window");
        let s = ev.summary.expect("summary");
        assert_eq!((s.frames, s.below_threshold), (2, 1));
        assert_eq!((s.labels[0].label.as_str(), s.labels[0].count), ("red", 3));
    }

    #[test]
    fn a_frame_event_has_the_gvametaconvert_fields_and_ours() {
        let mut b = builder(PublishMode::All, 0.0);
        let mut o = obs("red", 0.9, true);
        o.frame = Some(7);
        let e = b.frame(&ctx(40 * MS), &o).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["version"], SCHEMA_VERSION);
        assert_eq!(v["sensorId"], "cam-1");
        assert_eq!(v["source"], "file:///v.webm");
        assert_eq!(v["run"], "r1");
        assert_eq!(v["sequence"], 0);
        assert_eq!(v["mode"], "all");
        assert_eq!(v["model"], "color3");
        assert_eq!(v["timestamp"], 40 * MS);
        assert_eq!(v["system_timestamp"], "2025-05-01T12:00:00.123Z");
        assert_eq!(v["resolution"]["width"], 64);
        assert_eq!(v["resolution"]["height"], 48);
        assert_eq!(v["tags"]["site"], "north");
        assert_eq!(v["frame"], 7);
        let obj = &v["objects"][0];
        assert_eq!((obj["x"].clone(), obj["w"].clone()), (0.into(), 64.into()));
        assert_eq!(obj["h"], 48);
        let attr = &obj[ATTRIBUTE];
        assert_eq!(attr["label"], "red");
        assert_eq!(attr["label_id"], 0);
        assert!((attr["confidence"].as_f64().unwrap() - 0.9).abs() < 1e-6);
        assert_eq!(attr["model"]["name"], "color3");
        assert_eq!(obj["classes"].as_array().unwrap().len(), 2);
        assert_eq!(obj["below_threshold"], false);
        assert_eq!(obj["reused"], false);
        assert!(obj.get("best").is_none());
        assert!(v.get("summary").is_none() && v.get("previous_label").is_none());
        // Round trip.
        let back: Event = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.label(), Some("red"));
        // A confidence float32 cannot hold is an error, not an infinity written back as null
        // (found by fuzzing).
        for (path, value) in [
            ("/objects/0/classes/0/confidence", serde_json::json!(1e39)),
            (
                "/objects/0/classification/confidence",
                serde_json::json!(-1e300),
            ),
        ] {
            let mut bad = v.clone();
            *bad.pointer_mut(path).unwrap() = value;
            let err = serde_json::from_value::<Event>(bad).expect_err(path);
            assert!(err.to_string().contains("range of a float32"), "{err}");
        }
    }

    #[test]
    fn tags_read_back_as_they_were_written() {
        // Found by fuzzing: without serde_json's float_roundtrip a long number read back one
        // ulp off after it was written.
        let long = format!(r#"{{"n": {}0.25, "k": [1, "x", true]}}"#, "4".repeat(108));
        let tags = parse_tags(&long).unwrap().unwrap();
        let written = serde_json::Value::Object(tags.clone()).to_string();
        assert_eq!(parse_tags(&written).unwrap(), Some(tags));
    }

    #[test]
    fn all_mode_numbers_every_labelled_frame_and_skips_those_below_min_confidence() {
        let mut b = builder(PublishMode::All, 0.5);
        let seq: Vec<Option<u64>> = [0.9, 0.4, 0.8, 0.5, 0.49]
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                b.frame(&ctx(i as u64 * 33 * MS), &obs("red", c, true))
                    .map(|e| e.sequence)
            })
            .collect();
        assert_eq!(seq, vec![Some(0), None, Some(1), Some(2), None]);
        // Below the producer's threshold: not published either.
        assert!(b.frame(&ctx(0), &obs("red", 0.99, false)).is_none());
        assert_eq!(b.next_sequence(), 3);
        // Reused frames are published and say so.
        let mut o = obs("green", 0.7, true);
        o.reused = true;
        let e = b.frame(&ctx(0), &o).unwrap();
        assert!(e.objects[0].reused);
        assert_eq!(e.sequence, 3);
    }

    #[test]
    fn top_k_classes_below_min_confidence_are_left_out() {
        let mut b = builder(PublishMode::All, 0.3);
        let e = b.frame(&ctx(0), &obs("red", 0.5, true)).unwrap();
        // "other" has 0.25 < 0.3.
        let labels: Vec<_> = e.objects[0].classes.iter().map(|c| &*c.label).collect();
        assert_eq!(labels, vec!["red"]);
    }

    #[test]
    fn change_mode_publishes_only_when_the_label_changes() {
        let mut b = builder(PublishMode::Change, 0.5);
        let frames = [
            ("red", 0.9),
            ("red", 0.8),
            ("green", 0.9),
            ("green", 0.95),
            ("green", 0.3), // below min-confidence: "no label"
            ("green", 0.2),
            ("green", 0.9),
            ("red", 0.9),
        ];
        let out: Vec<(u64, Option<String>, Option<String>, bool)> = frames
            .iter()
            .enumerate()
            .filter_map(|(i, (l, c))| b.frame(&ctx(i as u64 * 33 * MS), &obs(l, *c, true)))
            .map(|e| {
                (
                    e.sequence,
                    e.label().map(str::to_string),
                    e.previous_label.clone(),
                    e.objects[0].below_threshold,
                )
            })
            .collect();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            out,
            vec![
                (0, s("red"), None, false),
                (1, s("green"), s("red"), false),
                (2, None, s("green"), true),
                (3, s("green"), None, false),
                (4, s("red"), s("green"), false),
            ]
        );
    }

    #[test]
    fn below_threshold_events_carry_the_best_class_and_no_label() {
        let mut b = builder(PublishMode::Change, 0.0);
        let e = b.frame(&ctx(0), &obs("blue", 0.2, false)).unwrap();
        let o = &e.objects[0];
        assert!(o.below_threshold);
        assert!(o.classification.is_none());
        assert!(o.classes.is_empty());
        assert_eq!(o.best.as_ref().map(|c| c.label.as_str()), Some("blue"));
        assert_eq!(e.label(), None);
    }

    #[test]
    fn summary_mode_counts_labels_per_window_and_flushes_the_last_one() {
        let mut b = builder(PublishMode::Summary, 0.5);
        let mut events = Vec::new();
        // 0..1 s: 3 red, 1 green, 1 below; 1..2 s: 2 green; then a flush at 2.5 s.
        let frames = [
            (0, "red", 0.9),
            (200, "red", 0.7),
            (400, "green", 0.6),
            (600, "red", 0.8),
            (800, "red", 0.3),
            (1000, "green", 0.9),
            (1500, "green", 0.7),
        ];
        for (ms, label, c) in frames {
            events.extend(b.frame(&ctx(ms * MS), &obs(label, c, true)));
        }
        assert_eq!(events.len(), 1, "the first window ends at the frame at 1 s");
        events.extend(b.flush(&ctx(2500 * MS)));
        assert!(b.flush(&ctx(3 * S)).is_none(), "nothing left to flush");
        assert_eq!(events.len(), 2);

        let s0 = events[0].summary.as_ref().unwrap();
        assert_eq!((s0.start, s0.end), (0, S));
        assert_eq!((s0.frames, s0.below_threshold, s0.reused), (5, 1, 0));
        assert_eq!(s0.labels[0].label, "red");
        assert_eq!(s0.labels[0].count, 3);
        assert!((s0.labels[0].mean_confidence - 0.8).abs() < 1e-6);
        assert!((s0.labels[0].min_confidence - 0.7).abs() < 1e-6);
        assert!((s0.labels[0].max_confidence - 0.9).abs() < 1e-6);
        assert_eq!(s0.labels[1].label, "green");
        assert_eq!(s0.labels[1].count, 1);
        assert_eq!(events[0].label(), Some("red"), "most frequent label");
        assert_eq!(events[0].timestamp, Some(0));
        assert_eq!(events[0].sequence, 0);
        assert_eq!(events[0].mode, PublishMode::Summary);

        let s1 = events[1].summary.as_ref().unwrap();
        assert_eq!((s1.start, s1.end, s1.frames), (S, 2500 * MS, 2));
        assert_eq!(s1.labels.len(), 1);
        assert!((s1.labels[0].mean_confidence - 0.8).abs() < 1e-6);
        assert_eq!(events[1].sequence, 1);
        assert_eq!(events[1].timestamp, Some(S));
    }

    #[test]
    fn summary_windows_skip_empty_stretches_and_restart_after_a_seek() {
        let mut b = builder(PublishMode::Summary, 0.0);
        assert!(b.frame(&ctx(100 * MS), &obs("red", 0.9, true)).is_none());
        // Nothing for 5 s: the next window starts at the frame, not on the old grid.
        let e = b.frame(&ctx(5300 * MS), &obs("red", 0.9, true)).unwrap();
        let s = e.summary.unwrap();
        assert_eq!((s.start, s.end, s.frames), (100 * MS, 1100 * MS, 1));
        // A seek back to 0 ends the window early.
        let e = b.frame(&ctx(0), &obs("green", 0.9, true)).unwrap();
        let s = e.summary.unwrap();
        assert_eq!((s.start, s.end, s.frames), (5300 * MS, 5300 * MS, 1));
        let e = b.flush(&ctx(10 * MS)).unwrap();
        assert_eq!(e.label(), Some("green"));
    }

    #[test]
    fn a_summary_of_frames_all_below_threshold_has_no_label() {
        let mut b = builder(PublishMode::Summary, 0.0);
        assert!(b.frame(&ctx(0), &obs("red", 0.2, false)).is_none());
        let e = b.flush(&ctx(S)).unwrap();
        assert!(e.objects[0].below_threshold);
        assert_eq!(e.summary.as_ref().map(|s| s.below_threshold), Some(1));
        assert_eq!(e.label(), None);
    }

    #[test]
    fn analytics_labels_become_an_observation_without_ids() {
        let o = Observation::from_labels(
            Arc::from("other-producer"),
            vec![("cat".into(), 0.2), ("dog".into(), 0.7)],
        )
        .unwrap();
        assert_eq!(&*o.best.label, "dog");
        assert_eq!(o.best.id, None);
        assert_eq!(o.classes.len(), 2);
        assert!(Observation::from_labels(Arc::from("m"), vec![]).is_none());
        let mut b = builder(PublishMode::All, 0.0);
        let v: serde_json::Value =
            serde_json::from_slice(&b.frame(&ctx(0), &o).unwrap().to_json()).unwrap();
        assert!(v["objects"][0][ATTRIBUTE].get("label_id").is_none());
    }

    #[test]
    fn observation_from_the_visionclassify_meta() {
        use crate::scores::{ClassScore, Classification};
        let red = ClassScore {
            class_id: 0,
            label: Arc::from("red"),
            confidence: 0.75,
        };
        let r = FrameResult {
            model: Arc::from("color3"),
            model_version: Arc::from(""),
            classification: Classification {
                classes: vec![red.clone()],
                best: red,
            },
            inference_ns: 1234,
            batch_size: 1,
            reused: true,
            frame: 17,
        };
        let o = Observation::from(&r);
        assert_eq!(
            o.label(0.0).map(|c| (&*c.label, c.id)),
            Some(("red", Some(0)))
        );
        assert_eq!(o.label(0.8), None);
        assert!(o.reused);
        assert_eq!((o.frame, o.inference_ns), (Some(17), Some(1234)));
    }

    #[test]
    fn every_kind_of_event_and_the_health_message_follow_the_schemas() {
        let load = |text: &str| {
            let schema: serde_json::Value = serde_json::from_str(text).unwrap();
            jsonschema::validator_for(&schema).unwrap()
        };
        let event_schema = load(include_str!("../schema/event.schema.json"));
        let health_schema = load(include_str!("../schema/health.schema.json"));
        let check = |v: &jsonschema::Validator, json: Vec<u8>| {
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{value}");
        };
        let mut events = Vec::new();
        let mut all = builder(PublishMode::All, 0.0);
        events.extend(all.frame(&ctx(0), &obs("red", 0.9, true)));
        let mut reused = obs("red", 0.9, true);
        reused.reused = true;
        events.extend(all.frame(&ctx(33 * MS), &reused));
        let analytics =
            Observation::from_labels(Arc::from("other"), vec![("cat".into(), 0.4)]).unwrap();
        events.extend(all.frame(&ctx(66 * MS), &analytics));
        let mut change = builder(PublishMode::Change, 0.5);
        events.extend(change.frame(&ctx(0), &obs("red", 0.9, true)));
        events.extend(change.frame(&ctx(S), &obs("red", 0.2, false)));
        let mut summary = builder(PublishMode::Summary, 0.5);
        events.extend(summary.frame(&ctx(0), &obs("red", 0.9, true)));
        events.extend(summary.frame(&ctx(2 * S), &obs("red", 0.1, false)));
        events.extend(summary.flush(&ctx(3 * S)));
        let mut bare = builder(PublishMode::All, 0.0);
        bare.identity.source = None;
        bare.identity.tags = None;
        let no_caps = FrameContext {
            timestamp: None,
            resolution: None,
            ..ctx(0)
        };
        events.extend(bare.frame(&no_caps, &obs("red", 0.9, true)));
        let mut objects = builder(PublishMode::All, 0.5);
        events.extend(objects.regions(
            &ctx(0),
            &[
                region("face", Some(3), obs("red", 0.9, true)),
                region("", None, obs("blue", 0.3, false)),
            ],
        ));
        let mut objects = builder(PublishMode::Summary, 0.5);
        objects.regions(&ctx(0), &[region("face", None, obs("red", 0.9, true))]);
        events.extend(objects.flush(&ctx(S)));
        assert_eq!(events.len(), 10);
        for e in &events {
            check(&event_schema, e.to_json());
        }
        // The schema does reject what a consumer could not rely on.
        let good: serde_json::Value = serde_json::from_slice(&events[0].to_json()).unwrap();
        let breaks = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            !event_schema.is_valid(&v)
        };
        assert!(breaks(&|v| {
            v.as_object_mut().unwrap().remove("sequence");
        }));
        assert!(breaks(&|v| v["objects"][0]["below_threshold"] = true.into()));
        assert!(breaks(
            &|v| v["objects"][0]["classification"]["confidence"] = 1.5.into()
        ));
        assert!(breaks(&|v| v["mode"] = "summary".into()));
        assert!(breaks(&|v| v["system_timestamp"] = "yesterday".into()));
        let mut h = HealthTracker::new();
        check(
            &health_schema,
            h.snapshot(
                &identity(),
                Duration::ZERO,
                0,
                DeliveryCounts::default(),
                SystemTime::UNIX_EPOCH,
            )
            .to_json(),
        );
        h.record(&obs("red", 0.9, true));
        check(
            &health_schema,
            h.snapshot(
                &identity(),
                Duration::from_secs(1),
                1,
                DeliveryCounts::default(),
                SystemTime::UNIX_EPOCH,
            )
            .to_json(),
        );
    }

    #[test]
    fn topic_templates() {
        use Placeholder::*;
        let all = [Sensor, Model, Label];
        let t = TopicTemplate::parse("topic", "vision/{sensor}/{model}/{label}", &all).unwrap();
        let v = TopicValues {
            sensor: "site/cam-1",
            model: "color3",
            label: Some("a/b+c#"),
        };
        assert_eq!(t.render(&v), "vision/site/cam-1/color3/a_b_c_");
        assert_eq!(
            t.render(&TopicValues { label: None, ..v }),
            "vision/site/cam-1/color3/none"
        );
        assert!(t.uses(Label));
        let plain = TopicTemplate::parse("topic", "plain", &all).unwrap();
        assert_eq!(plain.render(&v), "plain");
        assert!(!plain.uses(Sensor));

        let err = TopicTemplate::parse("topic", "vision/{camera}/x", &all).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("topic \"vision/{camera}/x\""), "{msg}");
        assert!(msg.contains("unknown placeholder {camera}"), "{msg}");
        assert!(msg.contains("{sensor}, {model}, {label}"), "{msg}");

        let err = TopicTemplate::parse("status-topic", "s/{label}", &[Sensor]).unwrap_err();
        assert!(err.to_string().starts_with("status-topic"), "{err}");
        assert!(err.to_string().contains("knows {sensor}"), "{err}");

        for bad in ["", "a/+/b", "a/#", "a/{sensor", "a/sensor}", "a}/{sensor}"] {
            let e = TopicTemplate::parse("topic", bad, &all).unwrap_err();
            assert!(
                matches!(
                    e,
                    EventError::Topic {
                        setting: "topic",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        assert!(check_sensor_id("site/cam-1").is_ok());
        assert!(check_sensor_id("cam+1").is_err());
    }

    #[test]
    fn tags_must_be_a_json_object() {
        assert_eq!(parse_tags("  ").unwrap(), None);
        assert_eq!(parse_tags(r#"{"a":1}"#).unwrap().unwrap()["a"], 1);
        assert!(parse_tags("[1]").is_err());
        assert!(parse_tags("{nope").is_err());
    }

    #[test]
    fn run_ids_and_timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(0x1234);
        assert_eq!(run_id(t, 0x42), "1234-42");
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn health_reports_counts_fps_inference_and_confidence_distributions() {
        let mut h = HealthTracker::new();
        for c in [0.95, 0.85, 1.0] {
            h.record(&obs("red", c, true));
        }
        h.record(&obs("green", 0.05, false));
        let mut reused = obs("red", 0.1, true);
        reused.reused = true;
        h.record(&reused); // counted as a frame, not in the distribution
        h.record_frame();
        let delivery = DeliveryCounts {
            queue_depth: 2,
            spooled: 1,
            sent: 5,
            acked: 4,
            dropped: 0,
            connected: true,
        };
        let m = h.snapshot(
            &identity(),
            Duration::from_secs(2),
            6,
            delivery,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!((m.frames, m.frames_window), (6, 6));
        assert!((m.fps - 3.0).abs() < 1e-9);
        assert!((m.window_s - 2.0).abs() < 1e-9);
        assert_eq!(m.model.as_deref(), Some("color3"));
        let inf = m.inference.unwrap();
        assert!((inf.mean_ms - 2.0).abs() < 1e-9 && (inf.max_ms - 2.0).abs() < 1e-9);
        assert_eq!(m.delivery, delivery);
        assert_eq!(m.events, 6);
        let red = &m.confidence["red"];
        assert_eq!(red.count, 3);
        assert!((red.mean - 0.9333333).abs() < 1e-5);
        assert!((red.min - 0.85).abs() < 1e-6 && (red.max - 1.0).abs() < 1e-6);
        let mut bins = vec![0; HISTOGRAM_BINS];
        bins[8] = 1; // 0.85
        bins[9] = 2; // 0.95 and 1.0 (the last bin is closed)
        assert_eq!(red.histogram, bins);
        assert_eq!(m.confidence["green"].histogram[0], 1);
        assert_eq!(m.confidence_window, m.confidence);

        // The next window only has what came after.
        h.record(&obs("red", 0.45, true));
        let m = h.snapshot(
            &identity(),
            Duration::from_secs(3),
            7,
            delivery,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!((m.frames, m.frames_window), (7, 1));
        assert!((m.window_s - 1.0).abs() < 1e-9);
        assert_eq!(m.confidence["red"].count, 4);
        assert_eq!(m.confidence_window["red"].count, 1);
        assert!(!m.confidence_window.contains_key("green"));
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(v["sensorId"], "cam-1");
        assert_eq!(v["confidence_window"]["red"]["histogram"][4], 1);

        let empty = HealthTracker::new().snapshot(
            &identity(),
            Duration::ZERO,
            0,
            DeliveryCounts::default(),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(empty.fps, 0.0);
        assert!(empty.inference.is_none());
    }
}
