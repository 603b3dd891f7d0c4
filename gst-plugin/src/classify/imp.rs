//! GObject glue of `visionclassify`: properties, pads, state changes, and the two threads
//! (the upstream streaming thread preprocesses and hands frames to the engine; the src pad
//! task takes them back in order and pushes). The work itself lives in the plain modules
//! `engine` (shared or private ONNX Runtime session and batching), `lane` (this stream's
//! ordered hand-over), `preprocess`, `results`, `meta`.
//!
//! Lock order: `settings`, then `running`, `stream` or `output` (one at a time), then
//! `stats`; the lane's and engine's own locks are taken inside their methods only. No lock of
//! the element is held while waiting on the lane or pushing downstream.

mod capture;
mod reload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::video;
use super::{
    ChannelChoice, ProviderChoice, ResizeChoice, ResizeFilterChoice, ScoresChoice, TargetChoice,
};
use crate::contract::{ScoreKind, read_labels_file};
use crate::engine::{self, Engine, EngineSettings};
use crate::lane::{self, Deliver, Lane, Ready, held_buffers};
use crate::meta::{self, FrameResult};
use crate::model::{self, Overrides, Provider, RunnerConfig};
use crate::preprocess::{ChannelOrder, PixelFormat, Preprocessor, ResizeMode, YuvColor};
use crate::results::{Scoring, StreamResults, StreamStats};
use crate::roi::{self, Region};
use crate::watch::Watcher;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "visionclassify",
        gst::DebugColorFlags::empty(),
        Some("ONNX Runtime image classification"),
    )
});

/// Longest inference-interval: 1000 frames (33 s at 30 fps). It multiplies the buffers the
/// element may hold, which upstream pools must allow.
const MAX_INTERVAL: u32 = 1000;

#[derive(Debug, Clone)]
struct Settings {
    model: Option<PathBuf>,
    model_instance_id: Option<String>,
    labels_file: Option<PathBuf>,
    ort_library: Option<PathBuf>,
    provider: ProviderChoice,
    device_id: i32,
    strict_provider: bool,
    threads: u32,
    trt_fp16: bool,
    trt_cache_dir: Option<PathBuf>,
    batch_size: u32,
    batch_timeout_ms: u32,
    inference_workers: u32,
    inference_interval: u32,
    top_k: u32,
    threshold: f64,
    resize: ResizeChoice,
    resize_filter: ResizeFilterChoice,
    channel_order: ChannelChoice,
    scale: f64,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    scores: ScoresChoice,
    post_messages: bool,
    target: TargetChoice,
    object_class: String,
    min_roi_size: u32,
    roi_padding: f64,
    reclassify_interval: u32,
    watch_model: bool,
    capture_dir: Option<PathBuf>,
    capture_below: f64,
    capture_every: u32,
    capture_max_side: u32,
    capture_max_bytes: u64,
    capture_max_rate: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: None,
            model_instance_id: None,
            labels_file: None,
            ort_library: None,
            provider: ProviderChoice::Cpu,
            device_id: 0,
            strict_provider: false,
            threads: 0,
            trt_fp16: false,
            trt_cache_dir: None,
            batch_size: 1,
            batch_timeout_ms: 50,
            inference_workers: 0,
            inference_interval: 1,
            top_k: 1,
            threshold: 0.0,
            resize: ResizeChoice::Model,
            resize_filter: ResizeFilterChoice::Area,
            channel_order: ChannelChoice::Model,
            scale: 0.0,
            mean: None,
            std: None,
            scores: ScoresChoice::Model,
            post_messages: false,
            target: TargetChoice::Frame,
            object_class: String::new(),
            min_roi_size: 0,
            roi_padding: 0.0,
            reclassify_interval: 1,
            watch_model: false,
            capture_dir: None,
            capture_below: 0.0,
            capture_every: 0,
            capture_max_side: 320,
            capture_max_bytes: 1 << 30,
            capture_max_rate: 5.0,
        }
    }
}

impl Settings {
    fn overrides(&self, labels: Option<Vec<String>>) -> Overrides {
        Overrides {
            labels,
            resize: match self.resize {
                ResizeChoice::Model => None,
                ResizeChoice::Stretch => Some(ResizeMode::Stretch),
                ResizeChoice::Letterbox => Some(ResizeMode::Letterbox),
                ResizeChoice::CenterCrop => Some(ResizeMode::CenterCrop),
            },
            channels: match self.channel_order {
                ChannelChoice::Model => None,
                ChannelChoice::Rgb => Some(ChannelOrder::Rgb),
                ChannelChoice::Bgr => Some(ChannelOrder::Bgr),
            },
            scale: (self.scale > 0.0).then_some(self.scale as f32),
            mean: self.mean,
            std: self.std,
            scores: match self.scores {
                ScoresChoice::Model => None,
                ScoresChoice::Logits => Some(ScoreKind::Logits),
                ScoresChoice::Probabilities => Some(ScoreKind::Probabilities),
            },
        }
    }

    fn engine(&self, model: PathBuf) -> EngineSettings {
        let (threads, workers) = crate::engine::cpu_plan(
            self.threads as usize,
            self.inference_workers as usize,
            self.provider == ProviderChoice::Cpu,
        );
        EngineSettings {
            runner: RunnerConfig {
                model,
                ort_library: self.ort_library.clone(),
                provider: match self.provider {
                    ProviderChoice::Cpu => Provider::Cpu,
                    ProviderChoice::Cuda => Provider::Cuda,
                    ProviderChoice::TensorRt => Provider::TensorRt,
                    ProviderChoice::Auto => Provider::Auto,
                },
                device_id: self.device_id,
                strict_provider: self.strict_provider,
                threads,
                trt_fp16: self.trt_fp16,
                trt_cache_dir: self.trt_cache_dir.clone(),
            },
            batch_size: self.batch_size.max(1) as usize,
            timeout: Duration::from_millis(self.batch_timeout_ms.into()),
            workers,
        }
    }
}

/// A region of the frame and whether it is classified on this frame (else it reuses its
/// tracked object's latest result).
struct Target {
    region: Region,
    /// The pixels it is classified from (padded, inside the frame).
    rect: crate::preprocess::Rect,
    classify: bool,
}

/// A queued frame: with `target=roi`, its regions in the order their tickets were given.
type Queued = (gst::Buffer, Vec<Target>);
type FrameLane = Lane<Queued, gst::Event>;

/// What `target=roi` keeps on the streaming thread.
struct RegionMode {
    filter: roi::Filter,
    reclassify: roi::Reclassify,
}

/// The engine this element is attached to and its lane in it, while running.
#[derive(Clone)]
struct Running {
    engine: Arc<Engine>,
    lane: Arc<FrameLane>,
    /// The same lane as the engine sees it.
    deliver: Arc<dyn Deliver>,
}

/// What the streaming thread owns while running.
struct Stream {
    preprocessor: Preprocessor,
    format: Option<(gst_video::VideoInfo, PixelFormat, YuvColor)>,
    frames_seen: u64,
    interval: u64,
    /// `Some` with `target=roi`.
    regions: Option<RegionMode>,
}

pub struct VisionClassify {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    running: Mutex<Option<Running>>,
    stream: Mutex<Option<Stream>>,
    output: Mutex<Option<StreamResults>>,
    /// Last result of pushing downstream, returned to upstream (as `queue` does).
    flow: Mutex<Result<gst::FlowSuccess, gst::FlowError>>,
    stats: Mutex<StreamStats>,
    /// Read at each push, so a change in PLAYING applies from the next frame.
    post_messages: AtomicBool,
    /// EOS arrived on the sink pad (a NOT_LINKED downstream is reported then, as `queue` does).
    got_eos: AtomicBool,
    /// `watch-model`, while running.
    watcher: Mutex<Option<Watcher>>,
    /// `capture-dir`, while running (used by the src pad task).
    capturing: Mutex<Option<capture::Capturing>>,
    /// Replacement models this element asked for that went live / were refused.
    reloads: AtomicU64,
    rejected_reloads: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VisionClassify {
    fn running(&self) -> Option<Running> {
        lock(&self.running).clone()
    }

    // ---- streaming thread ----------------------------------------------------------------

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        (*lock(&self.flow))?;
        let run = self.running().ok_or(gst::FlowError::Flushing)?;
        let classify = {
            let mut stream = lock(&self.stream);
            let stream = stream.as_mut().ok_or(gst::FlowError::Flushing)?;
            if stream.format.is_none() {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("received a buffer before caps")
                );
                return Err(gst::FlowError::NotNegotiated);
            }
            let classify = stream.frames_seen % stream.interval == 0;
            stream.frames_seen += 1;
            classify
        };
        gst::log!(
            CAT,
            imp = self,
            "frame {:?} classify={classify}",
            buffer.pts()
        );
        if lock(&self.stream)
            .as_ref()
            .is_some_and(|s| s.regions.is_some())
        {
            return self.chain_regions(&run, buffer, classify);
        }
        if !classify {
            run.lane
                .push_reuse((buffer, Vec::new()))
                .map_err(|_| gst::FlowError::Flushing)?;
            return *lock(&self.flow);
        }

        // Back-pressure: waits while this stream has its capacity of frames queued, then for
        // a place in the engine (shared with the other streams, first come first served).
        if !run.lane.reserve() {
            // Flushing, or downstream stopped the task: upstream gets that flow return.
            return Err((*lock(&self.flow))
                .err()
                .unwrap_or(gst::FlowError::Flushing));
        }
        let mut slot = run
            .engine
            .acquire(&run.deliver)
            .ok_or(gst::FlowError::Flushing)?;
        let result = {
            let mut stream = lock(&self.stream);
            match stream.as_mut() {
                None => Err("element stopped".to_string()),
                Some(Stream {
                    preprocessor,
                    format: Some((info, pixel_format, yuv)),
                    ..
                }) => {
                    match gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info)
                    {
                        Err(e) => Err(format!("cannot map the frame: {e}")),
                        Ok(frame) => {
                            let view = video::frame_view(&frame, *pixel_format, *yuv);
                            preprocessor
                                .run(&view, slot.as_mut())
                                .map_err(|e| e.to_string())
                        }
                    }
                }
                Some(_) => Err("no caps".to_string()),
            }
        };
        if let Err(reason) = result {
            run.engine.release(slot);
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("cannot preprocess frame {:?}: {reason}", buffer.pts())
            );
            return Err(gst::FlowError::Error);
        }
        match run.lane.push_classified((buffer, Vec::new())) {
            Ok(ticket) => run.engine.submit(&run.deliver, ticket, slot),
            Err(_) => {
                run.engine.release(slot);
                return Err(gst::FlowError::Flushing);
            }
        }
        *lock(&self.flow)
    }

    /// `target=roi`: the frame's regions that pass the filters are cropped, preprocessed and
    /// submitted one by one (a frame with more regions than a batch spans several batches);
    /// the frame leaves when all of them are answered, at once when it has none.
    fn chain_regions(
        &self,
        run: &Running,
        buffer: gst::Buffer,
        classify: bool,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (info, pixel_format, yuv, targets) = {
            let mut stream = lock(&self.stream);
            let Some(Stream {
                format: Some((info, pixel_format, yuv)),
                regions: Some(mode),
                ..
            }) = stream.as_mut()
            else {
                return Err(gst::FlowError::Flushing);
            };
            mode.reclassify.next_frame();
            let mut targets = Vec::new();
            for region in meta::regions(buffer.as_ref()) {
                match roi::place(&region, info.width(), info.height(), &mode.filter) {
                    Ok(rect) => {
                        let classify = classify && mode.reclassify.due(region.tracking_id);
                        targets.push(Target {
                            region,
                            rect,
                            classify,
                        });
                    }
                    Err(skip) if skip.is_malformed() => gst::warning!(
                        CAT,
                        imp = self,
                        "frame {:?}: region {region:?} skipped ({skip:?}: no pixel of the {}x{} frame)",
                        buffer.pts(),
                        info.width(),
                        info.height()
                    ),
                    Err(skip) => gst::log!(CAT, imp = self, "region {region:?}: {skip:?}"),
                }
            }
            (info.clone(), *pixel_format, *yuv, targets)
        };
        let rects: Vec<_> = targets
            .iter()
            .filter(|t| t.classify)
            .map(|t| t.rect)
            .collect();
        gst::log!(
            CAT,
            imp = self,
            "frame {:?}: {} regions, {} to classify",
            buffer.pts(),
            targets.len(),
            rects.len()
        );
        if !run.lane.reserve() {
            return Err((*lock(&self.flow))
                .err()
                .unwrap_or(gst::FlowError::Flushing));
        }
        // A second reference to map the frame while the lane holds the first; dropped before
        // the last region is submitted, so the frame is writable again when it leaves.
        let pixels = buffer.clone();
        let first = run
            .lane
            .push_regions((buffer, targets), rects.len())
            .map_err(|_| gst::FlowError::Flushing)?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(pixels.as_ref(), &info)
            .map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ("cannot map the frame: {e}")
                );
                gst::FlowError::Error
            })?;
        let view = video::frame_view(&frame, pixel_format, yuv);
        let mut last = None;
        for (i, rect) in rects.iter().enumerate() {
            let ticket = first + i as u64;
            let mut slot = run
                .engine
                .acquire(&run.deliver)
                .ok_or(gst::FlowError::Flushing)?;
            let result = match lock(&self.stream).as_mut() {
                None => Err("element stopped".to_string()),
                Some(stream) => view
                    .crop(*rect)
                    .and_then(|(crop, _)| stream.preprocessor.run(&crop, slot.as_mut()))
                    .map_err(|e| format!("cannot preprocess region {rect:?}: {e}")),
            };
            match result {
                Err(reason) => {
                    run.engine.release(slot);
                    run.deliver.deliver(ticket, Err(reason));
                }
                Ok(()) if i + 1 == rects.len() => last = Some((ticket, slot)),
                Ok(()) => run.engine.submit(&run.deliver, ticket, slot),
            }
        }
        drop(frame);
        drop(pixels);
        if let Some((ticket, slot)) = last {
            run.engine.submit(&run.deliver, ticket, slot);
        }
        *lock(&self.flow)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "sink event {event:?}");
        match event.view() {
            EventView::FlushStart(_) => {
                if let Some(run) = self.running() {
                    run.lane.set_flushing(true);
                    run.engine.remove(&run.deliver);
                }
                *lock(&self.flow) = Err(gst::FlowError::Flushing);
                let ret = self.srcpad.push_event(event);
                let _ = self.srcpad.pause_task();
                ret
            }
            EventView::FlushStop(_) => {
                // The task is paused: nothing else touches the lane's front or the results.
                if let Some(run) = self.running() {
                    run.lane.set_flushing(false);
                }
                if let Some(stream) = lock(&self.stream).as_mut() {
                    stream.frames_seen = 0;
                    if let Some(mode) = &mut stream.regions {
                        mode.reclassify.reset();
                    }
                }
                if let Some(output) = lock(&self.output).as_mut() {
                    output.reset();
                }
                self.got_eos.store(false, Ordering::SeqCst);
                *lock(&self.flow) = Ok(gst::FlowSuccess::Ok);
                let ret = self.srcpad.push_event(event);
                self.start_task();
                ret
            }
            EventView::Caps(c) => {
                let caps = c.caps_owned();
                if let Err(e) = self.set_caps(&caps) {
                    gst::element_imp_error!(self, gst::CoreError::Negotiation, ("{e}"));
                    return false;
                }
                self.queue_event(event)
            }
            EventView::Eos(_) => {
                self.got_eos.store(true, Ordering::SeqCst);
                let flow = *lock(&self.flow);
                if let Err(err @ (gst::FlowError::NotLinked | gst::FlowError::Error)) = flow {
                    // Downstream stopped and upstream will not report it any more.
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ("streaming stopped, reason {err:?}")
                    );
                }
                self.queue_event(event)
            }
            _ if event.is_serialized() => self.queue_event(event),
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Serialized events travel behind the frames before them; this stream's frames in the
    /// engine are hurried so the event does not wait for the batch timeout.
    fn queue_event(&self, event: gst::Event) -> bool {
        if lock(&self.flow).is_err() && event.type_() != gst::EventType::Eos {
            // Downstream stopped; keep sticky events for when it resumes.
            return event.is_sticky();
        }
        let Some(run) = self.running() else {
            return false;
        };
        let queued = run.lane.push_event(event).is_ok();
        run.engine.hurry(run.deliver.id());
        queued
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), String> {
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|e| format!("caps {caps} are not raw video: {e}"))?;
        let pixel_format = video::pixel_format(info.format())
            .ok_or_else(|| format!("video format {} is not supported", info.format().to_str()))?;
        let yuv = video::yuv_color(&info);
        gst::debug!(
            CAT,
            imp = self,
            "negotiated {}x{} {} ({yuv:?})",
            info.width(),
            info.height(),
            info.format().to_str()
        );
        let mut stream = lock(&self.stream);
        let stream = stream.as_mut().ok_or("element is not running")?;
        stream.format = Some((info, pixel_format, yuv));
        Ok(())
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if query.is_serialized() {
            // Allocation and drain queries must see everything before them pushed. A task
            // stopped on a downstream error will push nothing more: then the query fails.
            if let Some(run) = self.running() {
                run.engine.hurry(run.deliver.id());
                if !run.lane.drain() {
                    return false;
                }
            }
            let held = self.held_buffers();
            let ret = gst::Pad::query_default(pad, Some(&*self.obj()), query);
            if ret && let gst::QueryViewMut::Allocation(q) = query.view_mut() {
                // We hold up to `held` buffers: a bounded pool must allow that many more, or
                // upstream would starve waiting for a buffer we keep. Only the maximum grows:
                // raising the minimum would make pools allocate all of them up front.
                let pools: Vec<_> = q.allocation_pools().collect();
                for (i, (pool, size, min, max)) in pools.into_iter().enumerate() {
                    let max = if max == 0 {
                        0
                    } else {
                        max.saturating_add(held)
                    };
                    q.set_nth_allocation_pool(i as u32, pool.as_ref(), size, min, max);
                }
            }
            return ret;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn held_buffers(&self) -> u32 {
        let interval = lock(&self.settings).inference_interval;
        let capacity = self.running().map_or(0, |r| r.lane.capacity());
        held_buffers(capacity, interval)
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            if !self.sinkpad.peer_query(q.query_mut()) {
                return false;
            }
            let (live, min, max) = q.result();
            let added = self.running().map_or(gst::ClockTime::ZERO, |r| {
                gst::ClockTime::from_nseconds(
                    r.engine.latency().as_nanos().try_into().unwrap_or(u64::MAX),
                )
            });
            q.set(live, min + added, max.map(|m| m + added));
            gst::debug!(
                CAT,
                imp = self,
                "latency: upstream {min} + batching and inference {added}"
            );
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    // ---- src pad task ---------------------------------------------------------------------

    fn start_task(&self) {
        let Some(run) = self.running() else {
            return;
        };
        run.lane.set_stopped(false);
        let this = self.downgrade();
        let lane = run.lane.clone();
        let res = self.srcpad.start_task(move || {
            let Some(this) = this.upgrade() else {
                return;
            };
            this.task_iteration(&lane);
        });
        if let Err(e) = res {
            gst::element_imp_error!(self, gst::CoreError::Thread, ("cannot start task: {e}"));
        }
    }

    fn task_iteration(&self, lane: &FrameLane) {
        let Some(ready) = lane.next() else {
            gst::debug!(CAT, imp = self, "flushing, pausing task");
            let _ = self.srcpad.pause_task();
            return;
        };
        let mut eos = false;
        let flow = match ready {
            Ready::Event(event) => {
                eos = event.type_() == gst::EventType::Eos;
                if !self.srcpad.push_event(event) && eos {
                    gst::debug!(CAT, imp = self, "EOS was not handled downstream");
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Ready::Regions((buffer, targets), answers) => {
                self.push_regions(buffer, targets, answers)
            }
            Ready::Reuse((buffer, _)) => {
                let result = lock(&self.output).as_mut().and_then(|o| o.reused());
                lock(&self.stats).count(None, Instant::now());
                self.push_with_result(buffer, result.as_ref())
            }
            Ready::Classified((buffer, _), Err(reason)) => {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    ("inference failed: {reason}")
                );
                drop(buffer);
                Err(gst::FlowError::Error)
            }
            Ready::Classified((buffer, _), Ok(answer)) => {
                self.follow(&answer, buffer.pts());
                let result = lock(&self.output)
                    .as_mut()
                    .and_then(|o| o.classified(&answer));
                if result.is_none() {
                    gst::warning!(CAT, imp = self, "model gave no usable scores");
                }
                gst::trace!(
                    CAT,
                    imp = self,
                    "run {} of {} frames took {:?}",
                    answer.run,
                    answer.batch_fill,
                    answer.took
                );
                lock(&self.stats).count(Some(&answer), Instant::now());
                if let Some(r) = &result {
                    self.consider_capture(&buffer, r);
                }
                self.push_with_result(buffer, result.as_ref())
            }
        };
        lane.done();
        let flow = if eos { Err(gst::FlowError::Eos) } else { flow };
        if let Err(err) = flow {
            let mut stored = lock(&self.flow);
            if stored.is_ok() {
                *stored = Err(err);
            }
            drop(stored);
            gst::debug!(CAT, imp = self, "pausing task: {err:?}");
            // Not-linked goes back upstream, which decides (a demuxer may ignore it); it is
            // reported here only if EOS already came, as `queue` does.
            let report = match err {
                gst::FlowError::Flushing | gst::FlowError::Eos => false,
                gst::FlowError::NotLinked => self.got_eos.load(Ordering::SeqCst),
                _ => true,
            };
            if !eos && report {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("streaming stopped, reason {err:?}")
                );
                self.srcpad.push_event(gst::event::Eos::new());
            }
            lane.set_stopped(true);
            let _ = self.srcpad.pause_task();
        }
    }

    fn push_with_result(
        &self,
        mut buffer: gst::Buffer,
        result: Option<&FrameResult>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if let Some(r) = result {
            // Writable only for the meta: a shallow copy if shared, never a pixel copy.
            let writable = buffer.make_mut();
            if let Err(e) = meta::write(writable, r) {
                gst::warning!(CAT, imp = self, "cannot attach meta: {e}");
            }
            #[cfg(feature = "v1_24")]
            if let Err(e) = meta::analytics::write(writable, r) {
                gst::warning!(CAT, imp = self, "cannot attach analytics meta: {e}");
            }
            if !r.reused && self.post_messages.load(Ordering::SeqCst) {
                self.post_result(&buffer, r, None);
            }
        }
        self.srcpad.push(buffer)
    }

    /// A frame of regions: each classified region gets its result, each tracked region not
    /// classified on this frame its object's latest one; then the frame is pushed.
    fn push_regions(
        &self,
        mut buffer: gst::Buffer,
        targets: Vec<Target>,
        answers: Vec<lane::Outcome>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        for answer in answers.iter().flatten() {
            self.follow(answer, buffer.pts());
        }
        let mut answers = answers.into_iter();
        let mut results = Vec::new();
        let mut inferred = Vec::new();
        let mut reused = 0;
        let mut failure = None;
        {
            let mut output = lock(&self.output);
            let Some(output) = output.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            let frame = output.regions_frame();
            for t in targets {
                let result = if t.classify {
                    match answers.next() {
                        Some(Ok(a)) => {
                            let r = output.region(&a, frame, t.region.tracking_id);
                            inferred.push(a);
                            r
                        }
                        Some(Err(reason)) => {
                            failure = Some(reason);
                            break;
                        }
                        None => None,
                    }
                } else {
                    let r = t
                        .region
                        .tracking_id
                        .and_then(|id| output.region_reused(frame, id));
                    reused += usize::from(r.is_some());
                    r
                };
                if let Some(r) = result {
                    results.push((t.region, r));
                }
            }
        }
        if let Some(reason) = failure {
            gst::element_imp_error!(
                self,
                gst::LibraryError::Failed,
                ("inference failed: {reason}")
            );
            return Err(gst::FlowError::Error);
        }
        let refs: Vec<&lane::Inferred> = inferred.iter().collect();
        lock(&self.stats).count_regions(&refs, reused, Instant::now());
        if !results.is_empty() {
            let writable = buffer.make_mut();
            for (region, r) in &results {
                if !meta::write_object(writable, region, r) {
                    gst::warning!(CAT, imp = self, "region {region:?} left the buffer");
                }
            }
            if self.post_messages.load(Ordering::SeqCst) {
                for (region, r) in results.iter().filter(|(_, r)| !r.reused) {
                    self.post_result(&buffer, r, Some(region));
                }
            }
        }
        self.srcpad.push(buffer)
    }

    fn post_result(&self, buffer: &gst::Buffer, r: &FrameResult, region: Option<&Region>) {
        let mut s = gst::Structure::new_empty("visionclassify");
        meta::fill_structure(&mut s, r);
        if let Some(region) = region {
            s.set("roi-type", region.label.as_str());
            s.set("roi-x", region.x);
            s.set("roi-y", region.y);
            s.set("roi-width", region.w);
            s.set("roi-height", region.h);
            if let Some(id) = region.tracking_id {
                s.set("object-id", id);
            }
        }
        s.set("timestamp", buffer.pts());
        let segment = self.srcpad.sticky_event::<gst::event::Segment>(0);
        if let (Some(seg), Some(pts)) = (segment, buffer.pts())
            && let Some(seg) = seg.segment().downcast_ref::<gst::ClockTime>()
        {
            s.set("stream-time", seg.to_stream_time(pts));
            s.set("running-time", seg.to_running_time(pts));
        }
        let msg = gst::message::Element::builder(s).src(&*self.obj()).build();
        let _ = self.obj().post_message(msg);
    }

    fn stats_structure(&self) -> gst::Structure {
        let model = lock(&self.output)
            .as_ref()
            .map(|o| o.model())
            .unwrap_or_default();
        let capture = self.capture_stats();
        let s = lock(&self.stats).clone();
        let run = self.running();
        let queued = run.as_ref().map_or(0, |r| r.lane.queued() as u64);
        let engine = run.as_ref().map(|r| r.engine.stats()).unwrap_or_default();
        let id = run
            .as_ref()
            .and_then(|r| r.engine.instance_id().map(str::to_owned))
            .unwrap_or_default();
        gst::Structure::builder("visionclassify-stats")
            .field("frames", s.frames)
            .field("classified", s.classified)
            .field("regions", s.regions)
            .field("regions-reused", s.regions_reused)
            .field("batches", s.batches)
            .field("mean-inference-ms", s.mean_inference_ms())
            .field("max-inference-ms", s.inference_max.as_secs_f64() * 1000.0)
            .field("fps", s.fps())
            .field("queued", queued)
            .field("engine-id", id)
            .field("engine-streams", engine.streams as u64)
            .field("engine-batches", engine.batches)
            .field("engine-frames", engine.frames)
            .field("engine-mean-fill", engine.mean_fill())
            .field("engine-queued", engine.queued as u64)
            .field("engine-waiting-streams", engine.in_line as u64)
            .field("engine-slots", engine.slots as u64)
            .field("engine-reloads", engine.reloads)
            .field("engine-rejected-reloads", engine.rejected_reloads)
            .field("reloads", self.reloads.load(Ordering::SeqCst))
            .field(
                "rejected-reloads",
                self.rejected_reloads.load(Ordering::SeqCst),
            )
            .field("model", model.0)
            .field("model-version", model.1)
            .field("model-generation", model.2)
            .field("capture-saved", capture.saved)
            .field("capture-dropped", capture.dropped)
            .field("capture-rate-limited", capture.rate_limited)
            .field("capture-evicted", capture.evicted)
            .field("capture-errors", capture.errors)
            .field("capture-bytes", capture.bytes)
            .build()
    }

    // ---- lifecycle ------------------------------------------------------------------------

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let Some(model_path) = settings.model.clone() else {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                ("property `model` is not set: give the path of an .onnx classifier")
            ));
        };
        let plugin_dir = crate::plugin_dir();
        let local = plugin_dir
            .as_deref()
            .map(model::project_local_candidates)
            .unwrap_or_default();
        let lib = model::load_runtime(settings.ort_library.as_deref(), &local)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{e}")))?;
        gst::info!(
            CAT,
            imp = self,
            "ONNX Runtime loaded from {}",
            lib.path.display()
        );
        if let Some(wanted) = &settings.ort_library
            && *wanted != lib.path
        {
            let why = lib.skipped.first().cloned().unwrap_or_else(|| {
                format!("{} was loaded earlier in this process", lib.path.display())
            });
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Init,
                (
                    "ort-library {} not used: {why}; using {}",
                    wanted.display(),
                    lib.path.display()
                )
            );
        }

        let labels = match &settings.labels_file {
            None => None,
            Some(path) => Some(read_labels_file(path).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::OpenRead,
                    ("labels-file {}: {e}", path.display())
                )
            })?),
        };
        let overrides = settings.overrides(labels);
        let request = engine::Request {
            instance_id: settings.model_instance_id.clone(),
            element: self.obj().name().to_string(),
            settings: settings.engine(model_path.clone()),
            overrides: overrides.clone(),
        };
        let attached = engine::attach(&request).map_err(|e| {
            let domain = match e {
                engine::EngineError::Model(model::ModelError::Open { .. }) => {
                    gst::ResourceError::OpenRead
                }
                _ => gst::ResourceError::Settings,
            };
            gst::error_msg!(domain, ("{e}"))
        })?;
        for w in &attached.warnings {
            gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{w}"));
        }
        let spec = attached.spec;
        let engine = attached.engine;
        match (&attached.joined, engine.instance_id()) {
            (Some(owner), Some(id)) => {
                gst::info!(CAT, imp = self, "joined engine \"{id}\" opened by {owner}")
            }
            (None, Some(id)) => gst::info!(CAT, imp = self, "opened shared engine \"{id}\""),
            _ => gst::info!(CAT, imp = self, "opened a private engine"),
        }
        for a in &spec.assumed {
            gst::info!(
                CAT,
                imp = self,
                "model {}: assumed {a}",
                model_path.display()
            );
        }
        gst::info!(
            CAT,
            imp = self,
            "model {} ({}): input {} {:?} {}x{}x{:?} {:?}, {} classes, {:?}, providers {:?}, latency {:?}",
            model_path.display(),
            spec.name,
            spec.input_name,
            spec.input_type,
            spec.slot.width,
            spec.slot.height,
            spec.slot.channels,
            spec.slot.layout,
            spec.num_classes,
            spec.resize,
            spec.providers,
            engine.latency()
        );

        // As many frames as the engine admits: one stream alone can keep every worker busy.
        let capacity = engine.frames_in_flight().max(2);
        let lane = Arc::new(FrameLane::new(
            engine.attach_lane(overrides.clone()),
            capacity,
        ));
        let deliver: Arc<dyn Deliver> = lane.clone();
        *lock(&self.stream) = Some(Stream {
            preprocessor: Preprocessor::new(spec.slot, spec.normalize, spec.resize)
                .with_filter(settings.resize_filter.into()),
            format: None,
            frames_seen: 0,
            interval: settings.inference_interval.clamp(1, MAX_INTERVAL).into(),
            regions: (settings.target == TargetChoice::Roi).then(|| RegionMode {
                filter: roi::Filter {
                    classes: roi::Filter::parse_classes(&settings.object_class),
                    min_size: settings.min_roi_size,
                    padding: settings.roi_padding,
                },
                reclassify: roi::Reclassify::new(settings.reclassify_interval),
            }),
        });
        let live = engine.live();
        *lock(&self.output) = Some(StreamResults::new(
            &live,
            &spec,
            Scoring {
                overrides,
                top_k: settings.top_k as usize,
                threshold: settings.threshold as f32,
            },
            settings.reclassify_interval,
        ));
        *lock(&self.running) = Some(Running {
            engine,
            lane,
            deliver,
        });
        *lock(&self.stats) = StreamStats::default();
        *lock(&self.flow) = Ok(gst::FlowSuccess::Ok);
        self.got_eos.store(false, Ordering::SeqCst);
        self.post_messages
            .store(settings.post_messages, Ordering::SeqCst);
        if settings.watch_model {
            self.watch(live.path().to_path_buf());
        }
        if settings.target == TargetChoice::Frame {
            self.start_capture(&settings)?;
        }
        self.post_model(self.model_structure("live", &live));
        Ok(())
    }

    fn stop(&self) {
        // Joined outside the lock: a change it reported may be reloading right now.
        let watcher = lock(&self.watcher).take();
        drop(watcher);
        self.stop_capture();
        if let Some(run) = lock(&self.running).take() {
            run.lane.set_flushing(true);
            run.engine.detach(&run.deliver);
        }
        *lock(&self.stream) = None;
        *lock(&self.output) = None;
        gst::info!(CAT, imp = self, "stopped");
    }

    fn src_activate_mode(
        &self,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "only push mode is supported"));
        }
        if active {
            *lock(&self.flow) = Ok(gst::FlowSuccess::Ok);
            if let Some(run) = self.running() {
                run.lane.set_flushing(false);
            }
            self.start_task();
        } else {
            *lock(&self.flow) = Err(gst::FlowError::Flushing);
            if let Some(run) = self.running() {
                run.lane.set_flushing(true);
                run.engine.remove(&run.deliver);
            }
            self.srcpad
                .stop_task()
                .map_err(|e| gst::loggable_error!(CAT, "cannot stop task: {e}"))?;
        }
        Ok(())
    }

    fn sink_activate_mode(
        &self,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "only push mode is supported"));
        }
        if !active {
            // Unblock a streaming thread waiting for room in the lane.
            *lock(&self.flow) = Err(gst::FlowError::Flushing);
            if let Some(run) = self.running() {
                run.lane.set_flushing(true);
                run.engine.remove(&run.deliver);
            }
        }
        Ok(())
    }
}

#[glib::object_subclass]
impl ObjectSubclass for VisionClassify {
    const NAME: &'static str = "GstVisionClassify";
    type Type = super::VisionClassify;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sink_templ = klass.pad_template("sink").expect("sink template");
        let sinkpad = gst::Pad::builder_from_template(&sink_templ)
            .chain_function(|pad, parent, buffer| {
                VisionClassify::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(buffer),
                )
                .inspect_err(|e| gst::log!(CAT, obj = pad, "chain: {e:?}"))
            })
            .event_function(|pad, parent, event| {
                VisionClassify::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                VisionClassify::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_query(pad, query),
                )
            })
            .activatemode_function(|_pad, parent, mode, active| {
                VisionClassify::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic in activate")),
                    |imp| imp.sink_activate_mode(mode, active),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        let src_templ = klass.pad_template("src").expect("src template");
        let srcpad = gst::Pad::builder_from_template(&src_templ)
            .query_function(|pad, parent, query| {
                VisionClassify::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .activatemode_function(|_pad, parent, mode, active| {
                VisionClassify::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic in activate")),
                    |imp| imp.src_activate_mode(mode, active),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            running: Mutex::new(None),
            stream: Mutex::new(None),
            output: Mutex::new(None),
            flow: Mutex::new(Err(gst::FlowError::Flushing)),
            stats: Mutex::new(StreamStats::default()),
            post_messages: AtomicBool::new(false),
            got_eos: AtomicBool::new(false),
            watcher: Mutex::new(None),
            capturing: Mutex::new(None),
            reloads: AtomicU64::new(0),
            rejected_reloads: AtomicU64::new(0),
        }
    }
}

fn path_value(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.to_string_lossy().into_owned())
}

fn path_from(value: &glib::Value) -> Option<PathBuf> {
    value
        .get::<Option<String>>()
        .ok()
        .flatten()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

fn triple_value(t: &Option<[f32; 3]>) -> gst::Array {
    match t {
        Some(v) => gst::Array::new(v.iter().map(|x| f64::from(*x))),
        None => gst::Array::new(std::iter::empty::<f64>()),
    }
}

fn triple_from(value: &glib::Value) -> Result<Option<[f32; 3]>, String> {
    let arr = value.get::<gst::Array>().map_err(|e| e.to_string())?;
    if arr.is_empty() {
        return Ok(None);
    }
    let nums: Vec<f32> = arr
        .iter()
        .map(|v| {
            v.get::<f64>()
                .map(|x| x as f32)
                .or_else(|_| v.get::<f32>())
                .or_else(|_| v.get::<i32>().map(|x| x as f32))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    <[f32; 3]>::try_from(nums.as_slice())
        .map(Some)
        .map_err(|_| format!("3 values are needed, got {}", nums.len()))
}

impl ObjectImpl for VisionClassify {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("Path of the ONNX image classifier (.onnx). Input layout, size and type are read from the model; labels and preprocessing from its vision.* metadata when present. Settable while PLAYING (hot reload): the new model is loaded and checked off the streaming thread (same input type, size, layout and preprocessing as the running one, labels matching its classes, a test run on the latest frame) and takes over between two batches for every stream of the engine, dropping no frame; a model that fails the checks never goes live (a warning names the file and the reason, the running model stays and this property reads its path again). Each switch is announced by a visionclassify-model element message, and every frame's meta names the model and version that classified it")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("model-instance-id")
                    .nick("Model instance id")
                    .blurb("Share one inference engine (one ONNX Runtime session, one worker, one batch) with every visionclassify of this process that has the same id: frames of all their streams fill the same batches, oldest first. The first element to start opens it; the others must give the same model, execution-provider, device-id, strict-provider, threads, trt-fp16, trt-cache-dir, batch-size, batch-timeout and inference-workers, or fail to start. Unset: a private engine")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("labels-file")
                    .nick("Labels file")
                    .blurb("Text file with one label per line, in class order; overrides the model's vision.labels. Its count must match the model's classes. Settable while PLAYING: checked against the live model and used from the next frame (a file that does not match is refused with a warning, the old labels stay)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("ort-library")
                    .nick("ONNX Runtime library")
                    .blurb("Path of libonnxruntime.so to load. When unset: $ORT_DYLIB_PATH, then the project's .deps/onnxruntime, then the system's. One library per process: the first one loaded stays")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("execution-provider", ProviderChoice::Cpu)
                    .nick("Execution provider")
                    .blurb("Where ONNX Runtime runs the model. An unavailable provider falls back to CPU with a warning, unless strict-provider is set")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("device-id")
                    .nick("GPU device")
                    .blurb("GPU index for the CUDA and TensorRT providers")
                    .minimum(0)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("strict-provider")
                    .nick("Strict provider")
                    .blurb("Fail to start instead of falling back to CPU when the requested execution provider is not usable")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Threads")
                    .blurb("ONNX Runtime intra-op threads of each inference worker's session. 0 = automatic: the cores this process may use (physical cores under SMT) shared out among the inference workers; with one worker, one per core less one, which is left to the streaming threads that preprocess the next frames while a batch runs")
                    .maximum(256)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("trt-fp16")
                    .nick("TensorRT FP16")
                    .blurb("Let TensorRT build FP16 engines")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("trt-cache-dir")
                    .nick("TensorRT cache directory")
                    .blurb("Directory where TensorRT engines and timing caches are kept between runs (unset: no cache, engines are rebuilt at each start)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb("Frames classified together in one inference run (with model-instance-id: frames of all streams sharing the engine). Frames are held until the batch is full or batch-timeout has passed since its oldest frame. On CUDA and TensorRT every run is padded to batch-size, so the GPU sees one input shape")
                    .minimum(1)
                    .maximum(256)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-timeout")
                    .nick("Batch timeout (ms)")
                    .blurb("Longest time in milliseconds the oldest frame of a partial batch waits for more frames; 0 runs whatever is queued as soon as the model is free. The latency query reports it (when batch-size > 1) plus twice the time of one batch, measured when the model is opened")
                    .default_value(50)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("inference-workers")
                    .nick("Inference workers")
                    .blurb("Batches run at the same time, each on an ONNX Runtime session of its own (of the same model): like Triton's instance count. On a CPU, N workers with few intra-op threads keep N cores busy without threads waiting on each other at every operator, and consecutive frames of one stream run side by side (output order is kept); each worker costs one session's memory. 0 = automatic: with execution-provider=cpu one per core, at most 4 (threads=0 then gives each a share of the cores), else 1. An engine setting: equal on every element sharing a model-instance-id")
                    .maximum(64)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("inference-interval")
                    .nick("Inference interval")
                    .blurb("Classify every Nth frame (at most 1000); the frames in between carry the latest result, marked reused")
                    .minimum(1)
                    .maximum(MAX_INTERVAL)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("top-k")
                    .nick("Top K")
                    .blurb("Number of best classes kept per frame")
                    .minimum(1)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("threshold")
                    .nick("Threshold")
                    .blurb("Minimum confidence (0..1) for a class to be reported; when the best class is below it the frame gets no label (meta field below-threshold)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(0.0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("resize", ResizeChoice::Model)
                    .nick("Resize mode")
                    .blurb("How a frame is fitted to the model's input size (overrides vision.preprocess)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("resize-filter", ResizeFilterChoice::Area)
                    .nick("Resize filter")
                    .blurb("Resampling kernel of the resize. area (default): each input pixel counts, no aliasing; bilinear or nearest: for models trained with OpenCV INTER_LINEAR/INTER_NEAREST or torch's interpolate without antialias (per 1080p RGB frame about 0.68 ms of CPU for area, 0.34 ms for bilinear, 0.28 ms for nearest on a 2-core Xeon VM with AVX-512; see BENCHMARKS.md)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("channel-order", ChannelChoice::Model)
                    .nick("Channel order")
                    .blurb("Colour order of the model's input (overrides vision.preprocess); one-channel models always get luma")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("scale")
                    .nick("Scale")
                    .blurb("Pixel scale before mean/std: value = (pixel * scale - mean) / std. 0 = from the model's metadata, else 1/255 for float inputs")
                    .minimum(0.0)
                    .default_value(0.0)
                    .mutable_ready()
                    .build(),
                gst::ParamSpecArray::builder("mean")
                    .nick("Mean")
                    .blurb("Per-channel mean in the model's channel order, e.g. \"<0.485,0.456,0.406>\"; empty = from the model's metadata, else 0")
                    .element_spec(&glib::ParamSpecDouble::builder("mean-value").build())
                    .mutable_ready()
                    .build(),
                gst::ParamSpecArray::builder("std")
                    .nick("Std")
                    .blurb("Per-channel standard deviation, e.g. \"<0.229,0.224,0.225>\"; empty = from the model's metadata, else 1")
                    .element_spec(&glib::ParamSpecDouble::builder("std-value").build())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("scores", ScoresChoice::Model)
                    .nick("Scores")
                    .blurb("Whether the model outputs logits (softmax is applied) or probabilities (overrides vision.output)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post an element message named \"visionclassify\" on the bus for every classified frame, with the meta's fields plus timestamp, stream-time and running-time")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("target", TargetChoice::Frame)
                    .nick("Target")
                    .blurb("What is classified: the whole frame (result in VisionClassificationMeta), or each region of interest a detector attached as GstVideoRegionOfInterestMeta (facedetect, DL Streamer, DeepStream-style detectors): each region is cropped from the frame in its own format, classified, and gets its result as a param structure named \"visionclassify\" (the frame meta's fields) on its GstVideoRegionOfInterestMeta. The regions of a frame and of consecutive frames (and of other streams sharing the engine) fill the same batches; a frame without regions passes without waiting")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("object-class")
                    .nick("Object classes")
                    .blurb("target=roi: comma-separated region types to classify (the meta's roi-type, e.g. \"face,person\"); empty = every region")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("min-roi-size")
                    .nick("Minimum region size")
                    .blurb("target=roi: regions narrower or shorter than this many pixels (inside the frame) are not classified")
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("roi-padding")
                    .nick("Region padding")
                    .blurb("target=roi: each side of a region moves out by this fraction of its width (left, right) or height (top, bottom) before cropping, clamped to the frame; 0.1 gives 20% more context each way")
                    .minimum(0.0)
                    .maximum(10.0)
                    .default_value(0.0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("reclassify-interval")
                    .nick("Reclassify interval")
                    .blurb("target=roi: a tracked object (region param \"object_id\" with an integer field \"id\", as DL Streamer's gvatrack writes) is classified when first seen and then every Nth frame; in between it carries its latest result, marked reused. 0 or 1 = every frame. Untracked regions are classified on every frame")
                    .maximum(MAX_INTERVAL)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("watch-model")
                    .nick("Watch model")
                    .blurb("Reload the model when its file is replaced (as deployment tools do: a new file renamed over the old one, or rewritten in place): the file is looked at every 250 ms and loaded, with the same checks as setting `model` while PLAYING, once a new version has stayed unchanged for 500 ms")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("capture-dir")
                    .nick("Capture folder")
                    .blurb("Keep doubtful frames for retraining: DIR/<predicted-label>/<element-name>-<pts in ns>.png (8-bit RGB, at most capture-max-side pixels on the longer side) with a JSON sidecar of the same name (label, confidence, top-k, model and version, reason, frame, timestamps). The trainer reads the folder as labelled data (vision-trainer --extra-data folder:DIR); correct a label by moving both files. Written on a thread of its own through a queue of 8 frames: when it is full a frame is not captured (counted in stats), the stream never waits. Needs capture-below and/or capture-every; target=frame only")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("capture-below")
                    .nick("Capture below")
                    .blurb("With capture-dir: capture frames whose best confidence is below this (0 = off)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(0.0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("capture-every")
                    .nick("Capture every")
                    .blurb("With capture-dir: also capture one classified frame in N whatever its confidence, a reference sample of what the camera sees (0 = off)")
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("capture-max-side")
                    .nick("Capture size")
                    .blurb("Longest side of a captured image in pixels, aspect ratio kept (area resampling); 0 = the frame's own size")
                    .default_value(320)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("capture-max-bytes")
                    .nick("Capture budget")
                    .blurb("Disk budget of capture-dir in bytes, counting the captures already there at start: the oldest captures (image and sidecar) are removed to stay within it (0 = no limit)")
                    .default_value(1 << 30)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("capture-max-rate")
                    .nick("Capture rate")
                    .blurb("Captures per second at most (bursts of one second's worth); frames over it are not captured and counted (0 = no limit)")
                    .minimum(0.0)
                    .default_value(5.0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Read-only. This stream: frames, classified, regions (target=roi: regions classified), regions-reused (tracked regions that carried an earlier result), batches (runs that held its frames), mean-inference-ms, max-inference-ms, fps, queued. Its engine (all streams sharing it): engine-id, engine-streams, engine-batches, engine-frames, engine-mean-fill (frames per run), engine-queued (frames waiting for a batch), engine-waiting-streams (streams waiting for a place: at most (inference-workers + 1) x batch-size frames are admitted at once), engine-slots (preprocessed-frame tensors allocated). Models: model, model-version and model-generation (the model this stream's latest results came from; 1 = the first, each reload the next), reloads and rejected-reloads (replacements this element asked for that went live / were refused), engine-reloads and engine-rejected-reloads (all elements of the engine). Capture: capture-saved, capture-dropped (queue full), capture-rate-limited, capture-evicted (removed for the disk budget), capture-errors (not written), capture-bytes (the folder's captures now)")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let name = pspec.name();
        match name {
            "model" => {
                let path = path_from(value);
                match (path, self.running().is_some()) {
                    (path, false) => s.model = path,
                    (Some(path), true) => {
                        s.model = Some(path.clone());
                        self.request_reload(path);
                    }
                    (None, true) => gst::warning!(
                        CAT,
                        imp = self,
                        "model cannot be unset while running; it stays"
                    ),
                }
            }
            "model-instance-id" => {
                s.model_instance_id = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .filter(|s| !s.is_empty())
            }
            "labels-file" => {
                let path = path_from(value);
                if self.relabel(&s, path.as_deref()) {
                    s.labels_file = path;
                }
            }
            "watch-model" => s.watch_model = value.get().unwrap_or(false),
            "capture-dir" => s.capture_dir = path_from(value),
            "capture-below" => s.capture_below = value.get().unwrap_or(0.0),
            "capture-every" => s.capture_every = value.get().unwrap_or(0),
            "capture-max-side" => s.capture_max_side = value.get().unwrap_or(320),
            "capture-max-bytes" => s.capture_max_bytes = value.get().unwrap_or(1 << 30),
            "capture-max-rate" => s.capture_max_rate = value.get().unwrap_or(5.0),
            "ort-library" => s.ort_library = path_from(value),
            "execution-provider" => s.provider = value.get().unwrap_or_default(),
            "device-id" => s.device_id = value.get().unwrap_or(0),
            "strict-provider" => s.strict_provider = value.get().unwrap_or(false),
            "threads" => s.threads = value.get().unwrap_or(0),
            "trt-fp16" => s.trt_fp16 = value.get().unwrap_or(false),
            "trt-cache-dir" => s.trt_cache_dir = path_from(value),
            "batch-size" => s.batch_size = value.get().unwrap_or(1),
            "batch-timeout" => s.batch_timeout_ms = value.get().unwrap_or(50),
            "inference-workers" => s.inference_workers = value.get().unwrap_or(0),
            "inference-interval" => s.inference_interval = value.get().unwrap_or(1),
            "top-k" => s.top_k = value.get().unwrap_or(1),
            "threshold" => s.threshold = value.get().unwrap_or(0.0),
            "resize" => s.resize = value.get().unwrap_or_default(),
            "resize-filter" => s.resize_filter = value.get().unwrap_or_default(),
            "channel-order" => s.channel_order = value.get().unwrap_or_default(),
            "scale" => s.scale = value.get().unwrap_or(0.0),
            "mean" | "std" => match triple_from(value) {
                Ok(v) if name == "mean" => s.mean = v,
                Ok(v) => s.std = v,
                Err(e) => {
                    gst::error!(
                        CAT,
                        imp = self,
                        "property {name}: {e}; keeping the old value"
                    )
                }
            },
            "scores" => s.scores = value.get().unwrap_or_default(),
            "target" => s.target = value.get().unwrap_or_default(),
            "object-class" => {
                s.object_class = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }
            "min-roi-size" => s.min_roi_size = value.get().unwrap_or(0),
            "roi-padding" => s.roi_padding = value.get().unwrap_or(0.0),
            "reclassify-interval" => s.reclassify_interval = value.get().unwrap_or(1),
            "post-messages" => {
                s.post_messages = value.get().unwrap_or(false);
                self.post_messages.store(s.post_messages, Ordering::SeqCst);
            }
            _ => unimplemented!("property {name}"),
        }
        gst::debug!(CAT, imp = self, "set {name} = {value:?}");
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats_structure().to_value();
        }
        let s = lock(&self.settings);
        match pspec.name() {
            "model" => path_value(&s.model).to_value(),
            "model-instance-id" => s.model_instance_id.to_value(),
            "labels-file" => path_value(&s.labels_file).to_value(),
            "ort-library" => path_value(&s.ort_library).to_value(),
            "execution-provider" => s.provider.to_value(),
            "device-id" => s.device_id.to_value(),
            "strict-provider" => s.strict_provider.to_value(),
            "threads" => s.threads.to_value(),
            "trt-fp16" => s.trt_fp16.to_value(),
            "trt-cache-dir" => path_value(&s.trt_cache_dir).to_value(),
            "batch-size" => s.batch_size.to_value(),
            "batch-timeout" => s.batch_timeout_ms.to_value(),
            "inference-workers" => s.inference_workers.to_value(),
            "inference-interval" => s.inference_interval.to_value(),
            "top-k" => s.top_k.to_value(),
            "threshold" => s.threshold.to_value(),
            "resize" => s.resize.to_value(),
            "resize-filter" => s.resize_filter.to_value(),
            "channel-order" => s.channel_order.to_value(),
            "scale" => s.scale.to_value(),
            "mean" => triple_value(&s.mean).to_value(),
            "std" => triple_value(&s.std).to_value(),
            "scores" => s.scores.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "target" => s.target.to_value(),
            "object-class" => s.object_class.to_value(),
            "min-roi-size" => s.min_roi_size.to_value(),
            "roi-padding" => s.roi_padding.to_value(),
            "reclassify-interval" => s.reclassify_interval.to_value(),
            "watch-model" => s.watch_model.to_value(),
            "capture-dir" => path_value(&s.capture_dir).to_value(),
            "capture-below" => s.capture_below.to_value(),
            "capture-every" => s.capture_every.to_value(),
            "capture-max-side" => s.capture_max_side.to_value(),
            "capture-max-bytes" => s.capture_max_bytes.to_value(),
            "capture-max-rate" => s.capture_max_rate.to_value(),
            name => unimplemented!("property {name}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).expect("add sink pad");
        obj.add_pad(&self.srcpad).expect("add src pad");
    }
}

impl GstObjectImpl for VisionClassify {}

impl ElementImpl for VisionClassify {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Vision classifier (ONNX Runtime)",
                "Filter/Analyzer/Video",
                "Classifies video frames with an ONNX model on ONNX Runtime (CPU, CUDA or TensorRT), in batches, and attaches the result to each buffer as VisionClassificationMeta; the video passes through untouched",
                "visionclassify developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(video::FORMATS.iter().copied())
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("sink template"),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("src template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::debug!(CAT, imp = self, "state change {transition:?}");
        if transition == gst::StateChange::ReadyToPaused
            && let Err(e) = self.start()
        {
            // Whatever started before the failure (engine, watcher, capture) goes.
            self.stop();
            self.post_error_message(e);
            return Err(gst::StateChangeError);
        }
        let ret = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        ret
    }
}
