//! GObject glue of `visionclassify`: properties, pads, state changes, and the two threads
//! (the upstream streaming thread preprocesses; the src pad task infers and pushes). The
//! work itself lives in the plain modules `model`, `preprocess`, `batch`, `scores`, `meta`.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::video;
use super::{ChannelChoice, ProviderChoice, ResizeChoice, ScoresChoice};
use crate::batch::{BatchTensor, Batcher, Entry, Flow, Work};
use crate::contract::{ScoreKind, read_labels_file};
use crate::meta::{self, FrameResult};
use crate::model::{self, Overrides, Provider, Runner, RunnerConfig};
use crate::preprocess::{ChannelOrder, PixelFormat, Preprocessor, ResizeMode, YuvColor};
use crate::scores::Scorer;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "visionclassify",
        gst::DebugColorFlags::empty(),
        Some("ONNX Runtime image classification"),
    )
});

/// Batch tensors in the pool: one being filled, one being inferred, one queued.
const TENSOR_POOL: usize = 3;

#[derive(Debug, Clone)]
struct Settings {
    model: Option<PathBuf>,
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
    inference_interval: u32,
    top_k: u32,
    threshold: f64,
    resize: ResizeChoice,
    channel_order: ChannelChoice,
    scale: f64,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    scores: ScoresChoice,
    post_messages: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: None,
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
            inference_interval: 1,
            top_k: 1,
            threshold: 0.0,
            resize: ResizeChoice::Model,
            channel_order: ChannelChoice::Model,
            scale: 0.0,
            mean: None,
            std: None,
            scores: ScoresChoice::Model,
            post_messages: false,
        }
    }
}

/// What the streaming thread owns while running.
struct Stream {
    preprocessor: Preprocessor,
    format: Option<(gst_video::VideoInfo, PixelFormat, YuvColor)>,
    frames_seen: u64,
    interval: u64,
}

/// What the src pad task owns while running.
struct Worker {
    runner: Runner,
    scorer: Scorer,
    model: Arc<str>,
    scores: Vec<f32>,
    last: Option<FrameResult>,
    frames_out: u64,
    post_messages: bool,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    frames: u64,
    classified: u64,
    batches: u64,
    inference_total: Duration,
    inference_max: Duration,
    first_frame: Option<Instant>,
    last_frame: Option<Instant>,
}

type FrameBatcher = Batcher<gst::Buffer, gst::Event>;

pub struct VisionClassify {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    batcher: Mutex<Option<Arc<FrameBatcher>>>,
    stream: Mutex<Option<Stream>>,
    worker: Mutex<Option<Worker>>,
    /// Last result of pushing downstream, returned to upstream (as `queue` does).
    flow: Mutex<Result<gst::FlowSuccess, gst::FlowError>>,
    stats: Mutex<Stats>,
    /// Latency added by batching, for the latency query.
    batch_latency: Mutex<gst::ClockTime>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VisionClassify {
    fn batcher(&self) -> Option<Arc<FrameBatcher>> {
        lock(&self.batcher).clone()
    }

    // ---- streaming thread ----------------------------------------------------------------

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        (*lock(&self.flow))?;
        let batcher = self.batcher().ok_or(gst::FlowError::Flushing)?;
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
        if !classify {
            if batcher.push_reuse(buffer).is_some() {
                return Err(gst::FlowError::Flushing);
            }
            return *lock(&self.flow);
        }

        // Waits while every batch tensor is in use: back-pressure from the worker.
        let mut batch = batcher.acquire().ok_or(gst::FlowError::Flushing)?;
        let slot = batch.slots;
        let result = {
            let mut stream = lock(&self.stream);
            match stream.as_mut() {
                None => Err("element stopped".to_string()),
                Some(stream) => {
                    let Stream {
                        preprocessor,
                        format,
                        ..
                    } = stream;
                    match format {
                        None => Err("no caps".to_string()),
                        Some((info, pixel_format, yuv)) => {
                            match gst_video::VideoFrameRef::from_buffer_ref_readable(
                                buffer.as_ref(),
                                info,
                            ) {
                                Err(e) => Err(format!("cannot map the frame: {e}")),
                                Ok(frame) => {
                                    let view = video::frame_view(&frame, *pixel_format, *yuv);
                                    preprocessor
                                        .run(&view, batch.tensor.slot_mut(slot))
                                        .map_err(|e| e.to_string())
                                }
                            }
                        }
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                if batcher.release(batch, Some(buffer)).is_some() {
                    return Err(gst::FlowError::Flushing);
                }
                *lock(&self.flow)
            }
            Err(reason) => {
                batcher.release(batch, None);
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ("cannot preprocess frame {:?}: {reason}", buffer.pts())
                );
                Err(gst::FlowError::Error)
            }
        }
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "sink event {event:?}");
        match event.view() {
            EventView::FlushStart(_) => {
                if let Some(b) = self.batcher() {
                    b.set_flushing(true);
                }
                *lock(&self.flow) = Err(gst::FlowError::Flushing);
                let ret = self.srcpad.push_event(event);
                let _ = self.srcpad.pause_task();
                ret
            }
            EventView::FlushStop(_) => {
                if let Some(b) = self.batcher() {
                    b.set_flushing(false);
                }
                if let Some(stream) = lock(&self.stream).as_mut() {
                    stream.frames_seen = 0;
                }
                if let Some(worker) = lock(&self.worker).as_mut() {
                    worker.last = None;
                }
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
            _ if event.is_serialized() => self.queue_event(event),
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Serialized events travel behind the frames before them.
    fn queue_event(&self, event: gst::Event) -> bool {
        if lock(&self.flow).is_err() && event.type_() != gst::EventType::Eos {
            // Downstream stopped; keep sticky events for when it resumes.
            return event.is_sticky();
        }
        match self.batcher() {
            Some(b) => b.push_event(event).is_none(),
            None => false,
        }
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
            // Allocation and drain queries must see everything before them pushed.
            if let Some(b) = self.batcher()
                && !b.drain()
            {
                return false;
            }
            let held = self.held_buffers();
            let ret = gst::Pad::query_default(pad, Some(&*self.obj()), query);
            if ret && let gst::QueryViewMut::Allocation(q) = query.view_mut() {
                // We hold up to `held` buffers: pools must allow that many more, or
                // upstream would starve waiting for a buffer we keep.
                let pools: Vec<_> = q.allocation_pools().collect();
                for (i, (pool, size, min, max)) in pools.into_iter().enumerate() {
                    let max = if max == 0 { 0 } else { max + held };
                    q.set_nth_allocation_pool(i as u32, pool.as_ref(), size, min + held, max);
                }
            }
            return ret;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn held_buffers(&self) -> u32 {
        let s = lock(&self.settings);
        let interval = s.inference_interval.max(1);
        (TENSOR_POOL as u32) * s.batch_size * interval
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            if !self.sinkpad.peer_query(q.query_mut()) {
                return false;
            }
            let (live, min, max) = q.result();
            let added = *lock(&self.batch_latency);
            q.set(live, min + added, max.map(|m| m + added));
            gst::debug!(
                CAT,
                imp = self,
                "latency: upstream {min} + batching {added}"
            );
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    // ---- src pad task ---------------------------------------------------------------------

    fn start_task(&self) {
        let Some(batcher) = self.batcher() else {
            return;
        };
        let this = self.downgrade();
        let res = self.srcpad.start_task(move || {
            let Some(this) = this.upgrade() else {
                return;
            };
            this.task_iteration(&batcher);
        });
        if let Err(e) = res {
            gst::element_imp_error!(self, gst::CoreError::Thread, ("cannot start task: {e}"));
        }
    }

    fn task_iteration(&self, batcher: &FrameBatcher) {
        let Some(work) = batcher.next() else {
            gst::debug!(CAT, imp = self, "flushing, pausing task");
            let _ = self.srcpad.pause_task();
            return;
        };
        let (flow, tensor, eos) = match work {
            Work::Event(event) => {
                let eos = event.type_() == gst::EventType::Eos;
                if !self.srcpad.push_event(event) && eos {
                    gst::debug!(CAT, imp = self, "EOS was not handled downstream");
                }
                (Ok(gst::FlowSuccess::Ok), None, eos)
            }
            Work::Pass(buffer) => (self.push_reused(buffer), None, false),
            Work::Batch(batch) => {
                let (flow, tensor) = self.infer_and_push(batch);
                (flow, Some(tensor), false)
            }
        };
        batcher.done(tensor);
        let flow = if eos { Err(gst::FlowError::Eos) } else { flow };
        if let Err(err) = flow {
            let mut stored = lock(&self.flow);
            if stored.is_ok() {
                *stored = Err(err);
            }
            drop(stored);
            if err != gst::FlowError::Eos || !eos {
                gst::debug!(CAT, imp = self, "pausing task: {err:?}");
            }
            let fatal = !matches!(err, gst::FlowError::Flushing | gst::FlowError::Eos);
            if !eos && fatal {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("streaming stopped, reason {err:?}")
                );
                self.srcpad.push_event(gst::event::Eos::new());
            }
            let _ = self.srcpad.pause_task();
        }
    }

    fn push_reused(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (result, post) = {
            let mut worker = lock(&self.worker);
            let Some(w) = worker.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            let frame = w.frames_out;
            w.frames_out += 1;
            let result = w.last.clone().map(|mut r| {
                r.reused = true;
                r.frame = frame;
                r
            });
            (result, w.post_messages)
        };
        self.count_frames(1, 0, None);
        self.push_with_result(buffer, result.as_ref(), post)
    }

    fn infer_and_push(
        &self,
        batch: crate::batch::Batch<gst::Buffer>,
    ) -> (Result<gst::FlowSuccess, gst::FlowError>, BatchTensor) {
        let crate::batch::Batch {
            entries,
            tensor,
            slots,
            ..
        } = batch;
        // The runner leaves its mutex for the run: nothing else may wait on a lock across it.
        let Some(mut worker) = lock(&self.worker).take() else {
            return (Err(gst::FlowError::Flushing), tensor);
        };
        let started = Instant::now();
        let run = if slots > 0 {
            worker.runner.run(tensor.input(), slots, &mut worker.scores)
        } else {
            Ok(())
        };
        let elapsed = started.elapsed();
        if let Err(e) = run {
            *lock(&self.worker) = Some(worker);
            gst::element_imp_error!(self, gst::LibraryError::Failed, ("{e}"));
            return (Err(gst::FlowError::Error), tensor);
        }
        gst::trace!(CAT, imp = self, "inferred {slots} frames in {elapsed:?}");
        let classes = worker.scorer.num_classes();
        let mut results = Vec::with_capacity(entries.len());
        for entry in &entries {
            let frame = worker.frames_out;
            worker.frames_out += 1;
            let result = match entry {
                Entry::Classify { slot, .. } => {
                    let scores = worker
                        .scores
                        .get(slot * classes..(slot + 1) * classes)
                        .unwrap_or(&[]);
                    let r = worker
                        .scorer
                        .classify(scores)
                        .map(|classification| FrameResult {
                            model: worker.model.clone(),
                            classification,
                            inference_ns: elapsed.as_nanos() as u64,
                            batch_size: slots as u32,
                            reused: false,
                            frame,
                        });
                    if r.is_none() {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "model gave no usable scores for frame {frame}"
                        );
                    }
                    worker.last.clone_from(&r);
                    r
                }
                Entry::Reuse(_) => worker.last.clone().map(|mut r| {
                    r.reused = true;
                    r.frame = frame;
                    r
                }),
            };
            results.push(result);
        }
        let post = worker.post_messages;
        *lock(&self.worker) = Some(worker);
        self.count_frames(
            entries.len() as u64,
            slots as u64,
            (slots > 0).then_some(elapsed),
        );

        let mut flow = Ok(gst::FlowSuccess::Ok);
        for (entry, result) in entries.into_iter().zip(results) {
            let buffer = match entry {
                Entry::Classify { item, .. } | Entry::Reuse(item) => item,
            };
            flow = self.push_with_result(buffer, result.as_ref(), post);
            if flow.is_err() {
                break;
            }
        }
        (flow, tensor)
    }

    fn push_with_result(
        &self,
        mut buffer: gst::Buffer,
        result: Option<&FrameResult>,
        post: bool,
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
            if post && !r.reused {
                self.post_result(&buffer, r);
            }
        }
        self.srcpad.push(buffer)
    }

    fn post_result(&self, buffer: &gst::Buffer, r: &FrameResult) {
        let mut s = gst::Structure::new_empty("visionclassify");
        meta::fill_structure(&mut s, r);
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

    fn count_frames(&self, frames: u64, classified: u64, inference: Option<Duration>) {
        let now = Instant::now();
        let mut s = lock(&self.stats);
        s.frames += frames;
        s.classified += classified;
        s.first_frame.get_or_insert(now);
        s.last_frame = Some(now);
        if let Some(t) = inference {
            s.batches += 1;
            s.inference_total += t;
            s.inference_max = s.inference_max.max(t);
        }
    }

    fn stats_structure(&self) -> gst::Structure {
        let s = lock(&self.stats).clone();
        let mean = if s.batches > 0 {
            s.inference_total.as_secs_f64() * 1000.0 / s.batches as f64
        } else {
            0.0
        };
        let fps = match (s.first_frame, s.last_frame) {
            (Some(a), Some(b)) if b > a && s.frames > 1 => {
                (s.frames - 1) as f64 / (b - a).as_secs_f64()
            }
            _ => 0.0,
        };
        let queued = self.batcher().map_or(0, |b| b.lock().queued() as u64);
        gst::Structure::builder("visionclassify-stats")
            .field("frames", s.frames)
            .field("classified", s.classified)
            .field("batches", s.batches)
            .field("mean-inference-ms", mean)
            .field("max-inference-ms", s.inference_max.as_secs_f64() * 1000.0)
            .field("fps", fps)
            .field("queued", queued)
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
        let overrides = Overrides {
            labels,
            resize: match settings.resize {
                ResizeChoice::Model => None,
                ResizeChoice::Stretch => Some(ResizeMode::Stretch),
                ResizeChoice::Letterbox => Some(ResizeMode::Letterbox),
                ResizeChoice::CenterCrop => Some(ResizeMode::CenterCrop),
            },
            channels: match settings.channel_order {
                ChannelChoice::Model => None,
                ChannelChoice::Rgb => Some(ChannelOrder::Rgb),
                ChannelChoice::Bgr => Some(ChannelOrder::Bgr),
            },
            scale: (settings.scale > 0.0).then_some(settings.scale as f32),
            mean: settings.mean,
            std: settings.std,
            scores: match settings.scores {
                ScoresChoice::Model => None,
                ScoresChoice::Logits => Some(ScoreKind::Logits),
                ScoresChoice::Probabilities => Some(ScoreKind::Probabilities),
            },
        };
        let config = RunnerConfig {
            model: model_path.clone(),
            ort_library: settings.ort_library.clone(),
            provider: match settings.provider {
                ProviderChoice::Cpu => Provider::Cpu,
                ProviderChoice::Cuda => Provider::Cuda,
                ProviderChoice::TensorRt => Provider::TensorRt,
                ProviderChoice::Auto => Provider::Auto,
            },
            device_id: settings.device_id,
            strict_provider: settings.strict_provider,
            threads: settings.threads as usize,
            trt_fp16: settings.trt_fp16,
            trt_cache_dir: settings.trt_cache_dir.clone(),
        };
        let mut opened = Runner::open(&config, &overrides).map_err(|e| {
            let domain = match e {
                model::ModelError::Open { .. } => gst::ResourceError::OpenRead,
                _ => gst::ResourceError::Settings,
            };
            gst::error_msg!(domain, ("{e}"))
        })?;
        for w in &opened.warnings {
            gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{w}"));
        }
        let spec = opened.runner.spec().clone();
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
            "model {} ({}): input {} {:?} {}x{}x{:?} {:?}, {} classes, {:?}, providers {:?}",
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
            spec.providers
        );

        let batch_size = settings.batch_size as usize;
        if let Some(fixed) = spec.fixed_batch
            && batch_size > fixed
        {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                (
                    "batch-size {batch_size} is larger than the fixed batch dimension {fixed} of model {}",
                    model_path.display()
                )
            ));
        }
        let capacity = spec.fixed_batch.unwrap_or(batch_size).max(batch_size);
        if opened.runner.on_gpu() && batch_size > 1 && spec.fixed_batch.is_none() {
            gst::info!(
                CAT,
                imp = self,
                "GPU provider: partial batches are padded to batch-size {batch_size}"
            );
            opened.runner.pad_batches_to(batch_size);
        }
        let tensors = (0..TENSOR_POOL)
            .map(|_| BatchTensor::new(spec.input_type, spec.slot.len(), capacity))
            .collect();
        let timeout = Duration::from_millis(settings.batch_timeout_ms.into());
        let batcher = Arc::new(Batcher::new(Flow::new(batch_size, timeout, tensors)));
        *lock(&self.batch_latency) = if batch_size > 1 {
            gst::ClockTime::from_mseconds(settings.batch_timeout_ms.into())
        } else {
            gst::ClockTime::ZERO
        };

        *lock(&self.stream) = Some(Stream {
            preprocessor: Preprocessor::new(spec.slot, spec.normalize, spec.resize),
            format: None,
            frames_seen: 0,
            interval: settings.inference_interval.max(1).into(),
        });
        *lock(&self.worker) = Some(Worker {
            scorer: Scorer::new(
                spec.scores,
                &spec.labels,
                settings.top_k as usize,
                settings.threshold as f32,
            ),
            model: Arc::from(spec.name.as_str()),
            scores: Vec::with_capacity(capacity * spec.num_classes),
            runner: opened.runner,
            last: None,
            frames_out: 0,
            post_messages: settings.post_messages,
        });
        *lock(&self.batcher) = Some(batcher);
        *lock(&self.stats) = Stats::default();
        *lock(&self.flow) = Ok(gst::FlowSuccess::Ok);
        Ok(())
    }

    fn stop(&self) {
        *lock(&self.batcher) = None;
        *lock(&self.stream) = None;
        *lock(&self.worker) = None;
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
            if let Some(b) = self.batcher() {
                b.set_flushing(false);
            }
            self.start_task();
        } else {
            *lock(&self.flow) = Err(gst::FlowError::Flushing);
            if let Some(b) = self.batcher() {
                b.set_flushing(true);
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
            // Unblock a streaming thread waiting for a free batch tensor.
            *lock(&self.flow) = Err(gst::FlowError::Flushing);
            if let Some(b) = self.batcher() {
                b.set_flushing(true);
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
            batcher: Mutex::new(None),
            stream: Mutex::new(None),
            worker: Mutex::new(None),
            flow: Mutex::new(Err(gst::FlowError::Flushing)),
            stats: Mutex::new(Stats::default()),
            batch_latency: Mutex::new(gst::ClockTime::ZERO),
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
                    .blurb("Path of the ONNX image classifier (.onnx). Input layout, size and type are read from the model; labels and preprocessing from its vision.* metadata when present")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("labels-file")
                    .nick("Labels file")
                    .blurb("Text file with one label per line, in class order; overrides the model's vision.labels. Its count must match the model's classes")
                    .mutable_ready()
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
                    .blurb("ONNX Runtime intra-op threads for the CPU provider (0 = ONNX Runtime's default: one per physical core)")
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
                    .blurb("Frames classified together in one inference run. Frames are held until the batch is full or batch-timeout has passed since its first frame. On CUDA and TensorRT every run is padded to batch-size, so the GPU sees one input shape")
                    .minimum(1)
                    .maximum(256)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-timeout")
                    .nick("Batch timeout (ms)")
                    .blurb("Longest time in milliseconds the first frame of a partial batch waits for more frames; 0 runs whatever is queued as soon as the model is free. Added to the latency when batch-size > 1")
                    .default_value(50)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("inference-interval")
                    .nick("Inference interval")
                    .blurb("Classify every Nth frame; the frames in between carry the latest result, marked reused")
                    .minimum(1)
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
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Read-only: frames, classified, batches, mean-inference-ms, max-inference-ms, fps, queued")
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
            "model" => s.model = path_from(value),
            "labels-file" => s.labels_file = path_from(value),
            "ort-library" => s.ort_library = path_from(value),
            "execution-provider" => s.provider = value.get().unwrap_or_default(),
            "device-id" => s.device_id = value.get().unwrap_or(0),
            "strict-provider" => s.strict_provider = value.get().unwrap_or(false),
            "threads" => s.threads = value.get().unwrap_or(0),
            "trt-fp16" => s.trt_fp16 = value.get().unwrap_or(false),
            "trt-cache-dir" => s.trt_cache_dir = path_from(value),
            "batch-size" => s.batch_size = value.get().unwrap_or(1),
            "batch-timeout" => s.batch_timeout_ms = value.get().unwrap_or(50),
            "inference-interval" => s.inference_interval = value.get().unwrap_or(1),
            "top-k" => s.top_k = value.get().unwrap_or(1),
            "threshold" => s.threshold = value.get().unwrap_or(0.0),
            "resize" => s.resize = value.get().unwrap_or_default(),
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
            "post-messages" => {
                s.post_messages = value.get().unwrap_or(false);
                if let Some(w) = lock(&self.worker).as_mut() {
                    w.post_messages = s.post_messages;
                }
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
            "inference-interval" => s.inference_interval.to_value(),
            "top-k" => s.top_k.to_value(),
            "threshold" => s.threshold.to_value(),
            "resize" => s.resize.to_value(),
            "channel-order" => s.channel_order.to_value(),
            "scale" => s.scale.to_value(),
            "mean" => triple_value(&s.mean).to_value(),
            "std" => triple_value(&s.std).to_value(),
            "scores" => s.scores.to_value(),
            "post-messages" => s.post_messages.to_value(),
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
