//! Capture glue of `visionclassify`: the `capture-*` properties turned into a
//! [`Capture`] at start, and on the src pad task each classified frame offered to its
//! [`Policy`]; a frame to keep is scaled to `capture-max-side` as 8-bit RGB (the fused
//! preprocessing path, so every input format works) and handed to the writer thread with
//! its sidecar. The rules and the writing are in `crate::capture`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::{CAT, FrameResult, Settings, VisionClassify, lock, video};
use crate::capture::{self, Capture, CaptureConfig, CaptureStats, Decision, Policy, Reason};
use crate::preprocess::{
    ChannelOrder, Layout, Normalize, Preprocessor, ResizeMode, SlotMut, SlotSpec,
};

/// What the src pad task keeps while capturing.
pub(super) struct Capturing {
    capture: Capture,
    policy: Policy,
    max_side: u32,
    sensor: String,
    /// Scaler to RGB for the last stored size.
    scaler: Option<((usize, usize), Preprocessor)>,
}

impl Settings {
    pub(super) fn capture(&self, sensor: &str) -> Option<CaptureConfig> {
        let dir = self.capture_dir.clone()?;
        Some(CaptureConfig {
            dir,
            below: self.capture_below as f32,
            every: self.capture_every.into(),
            max_side: self.capture_max_side,
            max_bytes: self.capture_max_bytes,
            max_rate: self.capture_max_rate,
            sensor: sensor.to_string(),
        })
    }
}

impl VisionClassify {
    /// At start: the writer for `capture-dir`, when set.
    pub(super) fn start_capture(&self, settings: &Settings) -> Result<(), gst::ErrorMessage> {
        let name = self.obj().name().to_string();
        let Some(config) = settings.capture(&name) else {
            return Ok(());
        };
        if !config.is_active() {
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                (
                    "capture-dir {} is set but neither capture-below nor capture-every: nothing is captured",
                    config.dir.display()
                )
            );
            return Ok(());
        }
        let this = self.downgrade();
        let failures = AtomicU64::new(0);
        let capture = Capture::start(&config, move |e| {
            // The first failure, then every hundredth: a full disk must not flood the bus.
            let n = failures.fetch_add(1, Ordering::Relaxed);
            if let Some(this) = this.upgrade()
                && n.is_multiple_of(100)
            {
                gst::element_imp_warning!(
                    this,
                    gst::ResourceError::Write,
                    ("capture: frame not written ({} so far): {e}", n + 1)
                );
            }
        })
        .map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::OpenWrite,
                ("capture-dir {}: {e}", config.dir.display())
            )
        })?;
        gst::info!(
            CAT,
            imp = self,
            "capturing into {} ({} bytes there already)",
            config.dir.display(),
            capture.stats().bytes
        );
        *lock(&self.capturing) = Some(Capturing {
            capture,
            policy: Policy::new(&config),
            max_side: config.max_side,
            sensor: name,
            scaler: None,
        });
        Ok(())
    }

    /// On the src pad task, for a classified frame about to be pushed.
    pub(super) fn consider_capture(&self, buffer: &gst::Buffer, r: &FrameResult) {
        let decision = match lock(&self.capturing).as_mut() {
            Some(c) => c
                .policy
                .decide(r.classification.best.confidence, Instant::now()),
            None => return,
        };
        let reason = match decision {
            Decision::Skip => return,
            Decision::RateLimited => {
                if let Some(c) = lock(&self.capturing).as_ref() {
                    c.capture.rate_limited();
                }
                return;
            }
            Decision::Capture(reason) => reason,
        };
        let format = lock(&self.stream).as_ref().and_then(|s| s.format.clone());
        let Some((info, pixel_format, yuv)) = format else {
            return;
        };
        let mut capturing = lock(&self.capturing);
        let Some(c) = capturing.as_mut() else {
            return;
        };
        let (w, h) = capture::fit(info.width() as usize, info.height() as usize, c.max_side);
        let scaler = match &mut c.scaler {
            Some((size, s)) if *size == (w, h) => s,
            slot => {
                let spec = SlotSpec {
                    layout: Layout::Nhwc,
                    width: w,
                    height: h,
                    channels: ChannelOrder::Rgb,
                };
                let s = Preprocessor::new(spec, Normalize::default(), ResizeMode::Stretch);
                &mut slot.insert(((w, h), s)).1
            }
        };
        let mut rgb = vec![0u8; w * h * 3];
        let converted = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), &info)
            .map_err(|e| e.to_string())
            .and_then(|frame| {
                let view = video::frame_view(&frame, pixel_format, yuv);
                scaler
                    .run(&view, SlotMut::U8(&mut rgb))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = converted {
            gst::warning!(CAT, imp = self, "capture: cannot convert the frame: {e}");
            return;
        }
        let pts = buffer.pts().map(|t| t.nseconds());
        let shot = capture::Shot {
            label: r.classification.best.label.to_string(),
            stem: capture::stem(&c.sensor, pts, r.frame),
            image: capture::RgbImage {
                width: w,
                height: h,
                data: rgb,
            },
            sidecar: sidecar(
                r,
                reason,
                &c.sensor,
                pts,
                (info.width(), info.height()),
                (w, h),
            ),
        };
        if !c.capture.offer(shot) {
            gst::debug!(
                CAT,
                imp = self,
                "capture queue full: frame {} not captured",
                r.frame
            );
        }
    }

    pub(super) fn stop_capture(&self) {
        // Joined outside the lock: the writer finishes what is queued.
        let capturing = lock(&self.capturing).take();
        drop(capturing);
    }

    pub(super) fn capture_stats(&self) -> CaptureStats {
        lock(&self.capturing)
            .as_ref()
            .map(|c| c.capture.stats())
            .unwrap_or_default()
    }
}

/// The JSON stored next to a captured image.
fn sidecar(
    r: &FrameResult,
    reason: Reason,
    sensor: &str,
    pts_ns: Option<u64>,
    source: (u32, u32),
    stored: (usize, usize),
) -> serde_json::Value {
    let c = &r.classification;
    serde_json::json!({
        "label": c.best.label.as_ref(),
        "class_id": c.best.class_id,
        "confidence": c.best.confidence,
        "top_k": c.classes.iter().map(|k| serde_json::json!({
            "label": k.label.as_ref(),
            "class_id": k.class_id,
            "confidence": k.confidence,
        })).collect::<Vec<_>>(),
        "model": r.model.as_ref(),
        "model_version": r.model_version.as_ref(),
        "reason": reason.name(),
        "sensor": sensor,
        "frame": r.frame,
        "pts_ns": pts_ns,
        "captured_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "source_size": [source.0, source.1],
        "size": [stored.0, stored.1],
    })
}
