//! Regions of interest (`target=roi`): which regions of a frame are classified, the pixels
//! each one is cropped to, and which tracked objects reuse an earlier result
//! (`reclassify-interval`). Plain Rust: the element reads the regions from the buffer's
//! metas and hands them here.

use std::collections::HashMap;

use crate::preprocess::Rect;

/// A region as a detector described it, in frame pixels. Coordinates are signed and
/// unclamped: detectors write boxes that reach over the frame's edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// The id of the meta it came from (to attach the result to it).
    pub meta_id: i32,
    /// The region's type or label (`face`, `person`), empty when the detector gave none.
    pub label: String,
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    /// The tracker's id of the object, when the region carries one.
    pub tracking_id: Option<u64>,
    /// Among earlier regions of the same buffer with the same meta id, label and box, how
    /// many came before this one (they are told apart by their order).
    pub nth: u32,
    /// The `GstAnalyticsODMtd` the region came from (crate feature `v1_24`), instead of a
    /// `GstVideoRegionOfInterestMeta` (then `meta_id` is -1).
    pub od_id: Option<u32>,
}

/// The element's region filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Region types to classify; empty: all.
    pub classes: Vec<String>,
    /// Smallest width and height, in pixels inside the frame, of a region to classify.
    pub min_size: u32,
    /// Each side of a box moves out by this fraction of the box's width (left, right) or
    /// height (top, bottom) before cropping; the result is clamped to the frame.
    pub padding: f64,
}

impl Filter {
    /// Parses `object-class`: comma-separated names, blanks ignored.
    pub fn parse_classes(list: &str) -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Why a region is not classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its type is not in `object-class` (not worth a warning: that is the filter's job).
    Class,
    /// Smaller than `min-roi-size` inside the frame.
    TooSmall,
    /// Zero or negative width or height.
    Empty,
    /// No pixel of it is inside the frame.
    Outside,
}

impl Skip {
    /// A detector bug rather than a user's filter: worth a warning.
    pub fn is_malformed(self) -> bool {
        matches!(self, Self::Empty | Self::Outside)
    }
}

/// The pixels `region` is classified from in a `width`×`height` frame, or why it is not.
pub fn place(region: &Region, width: u32, height: u32, filter: &Filter) -> Result<Rect, Skip> {
    if !filter.classes.is_empty() && !filter.classes.contains(&region.label) {
        return Err(Skip::Class);
    }
    if region.w <= 0 || region.h <= 0 {
        return Err(Skip::Empty);
    }
    let (fw, fh) = (i64::from(width), i64::from(height));
    let clamp = |lo: i64, hi: i64, max: i64| (lo.clamp(0, max), hi.clamp(0, max));
    let (x0, x1) = clamp(region.x, region.x.saturating_add(region.w), fw);
    let (y0, y1) = clamp(region.y, region.y.saturating_add(region.h), fh);
    if x1 <= x0 || y1 <= y0 {
        return Err(Skip::Outside);
    }
    let min = i64::from(filter.min_size);
    if x1 - x0 < min || y1 - y0 < min {
        return Err(Skip::TooSmall);
    }
    let padding = if filter.padding.is_finite() {
        filter.padding.max(0.0)
    } else {
        0.0
    };
    let grow = |size: i64| (size as f64 * padding).round() as i64;
    let (px, py) = (grow(region.w), grow(region.h));
    let (x0, x1) = clamp(
        region.x.saturating_sub(px),
        region.x.saturating_add(region.w).saturating_add(px),
        fw,
    );
    let (y0, y1) = clamp(
        region.y.saturating_sub(py),
        region.y.saturating_add(region.h).saturating_add(py),
        fh,
    );
    // Inside 0..=u32::MAX after the clamps.
    Ok(Rect {
        x: x0 as usize,
        y: y0 as usize,
        width: (x1 - x0) as usize,
        height: (y1 - y0) as usize,
    })
}

/// Objects not seen for this many frames (beyond the interval) are forgotten.
const FORGET_AFTER: u64 = 300;

/// Which tracked objects are classified again on a frame (`reclassify-interval`, as DL
/// Streamer's `gvaclassify`): an object is classified when first seen and then once every
/// `interval` frames; in between it reuses its latest result. Objects without a tracking id
/// are classified on every frame. Entries of objects that left are dropped, so memory stays
/// bounded by the objects on screen.
#[derive(Debug, Default)]
pub struct Reclassify {
    interval: u64,
    frame: u64,
    /// Tracking id → (frame it was last classified, frame it was last seen).
    objects: HashMap<u64, (u64, u64)>,
}

impl Reclassify {
    /// `interval` 0 or 1: every frame.
    pub fn new(interval: u32) -> Self {
        Self {
            interval: u64::from(interval.max(1)),
            ..Self::default()
        }
    }

    /// Starts the next frame.
    pub fn next_frame(&mut self) {
        self.frame += 1;
        if self.frame.is_multiple_of(64) {
            let (frame, keep) = (self.frame, self.interval + FORGET_AFTER);
            self.objects.retain(|_, (_, seen)| frame - *seen <= keep);
        }
    }

    /// Whether the object is classified on this frame (true also for untracked objects).
    pub fn due(&mut self, tracking_id: Option<u64>) -> bool {
        let Some(id) = tracking_id else {
            return true;
        };
        let frame = self.frame;
        let interval = self.interval;
        let entry = self.objects.entry(id).or_insert((frame, frame));
        entry.1 = frame;
        if entry.0 == frame || frame - entry.0 >= interval {
            entry.0 = frame;
            true
        } else {
            false
        }
    }

    /// Objects remembered.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// After a flush: every object is new again.
    pub fn reset(&mut self) {
        self.objects.clear();
    }
}

/// The latest result of each tracked object, for the frames on which it is not
/// classified. Bounded like [`Reclassify`].
#[derive(Debug)]
pub struct Latest<R> {
    frame: u64,
    keep: u64,
    results: HashMap<u64, (R, u64)>,
}

impl<R: Clone> Latest<R> {
    pub fn new(interval: u32) -> Self {
        Self {
            frame: 0,
            keep: u64::from(interval.max(1)) + FORGET_AFTER,
            results: HashMap::new(),
        }
    }

    /// Starts the next frame.
    pub fn next_frame(&mut self) {
        self.frame += 1;
        if self.frame.is_multiple_of(64) {
            let (frame, keep) = (self.frame, self.keep);
            self.results.retain(|_, (_, seen)| frame - *seen <= keep);
        }
    }

    pub fn store(&mut self, id: u64, result: R) {
        self.results.insert(id, (result, self.frame));
    }

    /// The object's latest result, if it has one.
    pub fn get(&mut self, id: u64) -> Option<R> {
        let frame = self.frame;
        self.results.get_mut(&id).map(|(r, seen)| {
            *seen = frame;
            r.clone()
        })
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    pub fn reset(&mut self) {
        self.results.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(label: &str, x: i64, y: i64, w: i64, h: i64) -> Region {
        Region {
            meta_id: 0,
            label: label.into(),
            x,
            y,
            w,
            h,
            tracking_id: None,
            nth: 0,
            od_id: None,
        }
    }

    fn rect(x: usize, y: usize, width: usize, height: usize) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn boxes_are_clamped_to_the_frame() {
        let f = Filter::default();
        assert_eq!(
            place(&region("", 10, 20, 30, 40), 100, 100, &f),
            Ok(rect(10, 20, 30, 40))
        );
        assert_eq!(
            place(&region("", -5, -5, 20, 20), 100, 100, &f),
            Ok(rect(0, 0, 15, 15))
        );
        assert_eq!(
            place(&region("", 90, 95, 20, 20), 100, 100, &f),
            Ok(rect(90, 95, 10, 5))
        );
        assert_eq!(
            place(&region("", 0, 0, 100, 100), 100, 100, &f),
            Ok(rect(0, 0, 100, 100))
        );
        assert_eq!(
            place(&region("", i64::MAX - 1, 0, i64::MAX, 5), 100, 100, &f),
            Err(Skip::Outside)
        );
    }

    #[test]
    fn empty_and_outside_boxes_are_skipped() {
        let f = Filter::default();
        assert_eq!(
            place(&region("", 10, 10, 0, 5), 100, 100, &f),
            Err(Skip::Empty)
        );
        assert_eq!(
            place(&region("", 10, 10, 5, -1), 100, 100, &f),
            Err(Skip::Empty)
        );
        assert_eq!(
            place(&region("", 100, 10, 5, 5), 100, 100, &f),
            Err(Skip::Outside)
        );
        assert_eq!(
            place(&region("", -10, 10, 10, 5), 100, 100, &f),
            Err(Skip::Outside)
        );
        assert!(Skip::Empty.is_malformed() && Skip::Outside.is_malformed());
        assert!(!Skip::Class.is_malformed() && !Skip::TooSmall.is_malformed());
    }

    #[test]
    fn class_and_size_filters() {
        let f = Filter {
            classes: Filter::parse_classes(" face, person ,,"),
            min_size: 10,
            padding: 0.0,
        };
        assert_eq!(f.classes, ["face", "person"]);
        assert!(place(&region("face", 0, 0, 10, 10), 100, 100, &f).is_ok());
        assert_eq!(
            place(&region("car", 0, 0, 50, 50), 100, 100, &f),
            Err(Skip::Class)
        );
        assert_eq!(
            place(&region("", 0, 0, 50, 50), 100, 100, &f),
            Err(Skip::Class)
        );
        assert_eq!(
            place(&region("face", 0, 0, 9, 50), 100, 100, &f),
            Err(Skip::TooSmall)
        );
        // The size inside the frame counts.
        assert_eq!(
            place(&region("face", 95, 0, 20, 20), 100, 100, &f),
            Err(Skip::TooSmall)
        );
    }

    #[test]
    fn padding_grows_each_side_and_stays_in_the_frame() {
        let f = Filter {
            padding: 0.25,
            ..Filter::default()
        };
        assert_eq!(
            place(&region("", 40, 40, 20, 40), 100, 100, &f),
            Ok(rect(35, 30, 30, 60))
        );
        assert_eq!(
            place(&region("", 2, 90, 20, 8), 100, 100, &f),
            Ok(rect(0, 88, 27, 12))
        );
        let bad = Filter {
            padding: f64::NAN,
            ..Filter::default()
        };
        assert_eq!(
            place(&region("", 40, 40, 20, 40), 100, 100, &bad),
            Ok(rect(40, 40, 20, 40))
        );
    }

    #[test]
    fn tracked_objects_are_reclassified_every_interval_frames() {
        let mut r = Reclassify::new(3);
        let mut due = Vec::new();
        for _ in 0..7 {
            r.next_frame();
            due.push((r.due(Some(1)), r.due(None)));
        }
        assert_eq!(
            due.iter().map(|d| d.0).collect::<Vec<_>>(),
            [true, false, false, true, false, false, true]
        );
        assert!(due.iter().all(|d| d.1), "untracked objects every frame");
        // A second object seen later starts its own count.
        r.next_frame();
        assert!(r.due(Some(2)));
        assert!(!r.due(Some(1)));
        let mut every = Reclassify::new(0);
        every.next_frame();
        assert!(every.due(Some(1)));
        every.next_frame();
        assert!(every.due(Some(1)));
    }

    #[test]
    fn objects_that_left_are_forgotten() {
        let mut r = Reclassify::new(2);
        let mut l = Latest::new(2);
        for id in 0..1000 {
            r.next_frame();
            l.next_frame();
            r.due(Some(id));
            l.store(id, id);
        }
        assert!(r.len() < 400, "{} objects kept", r.len());
        assert!(l.len() < 400, "{} results kept", l.len());
        assert_eq!(l.get(999), Some(999));
        assert_eq!(l.get(0), None);
        r.reset();
        l.reset();
        assert!(r.is_empty() && l.is_empty());
    }
}
