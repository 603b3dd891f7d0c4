//! The inference engine: one or more workers, each with its ONNX Runtime session and batch
//! tensor, shared by every `visionclassify` of a process that names the same
//! `model-instance-id` (an element without one gets a private engine of its own).
//!
//! Streams attach a [`Lane`](crate::lane::Lane) each: they preprocess on their own threads
//! into slots from the engine's pool ([`Engine::acquire`]: at most (workers + 1) × batch-size
//! frames are admitted at once across all streams, first come first served) and
//! [`Engine::submit`] them; a free worker takes the next batch from the [`Plan`] (frames of
//! any stream, oldest first, full or after `batch-timeout`), copies the slots into its batch
//! tensor, runs its session with no lock held, and delivers each frame's scores to its own
//! lane. The engine never pushes downstream, so a stream whose downstream is blocked, paused
//! or flushing cannot hold up the others.
//!
//! Each worker owns its session: no lock is held across a run. Lock order: the registry, then
//! an engine's `queue` or `stats` (never both), then a lane's state (only through
//! [`Deliver`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batch::{Admission, BatchTensor, LaneId, Next, Plan, Slot};
use crate::lane::{Deliver, Inferred};
use crate::model::{Generation, InputType, ModelError, ModelSpec, Overrides, Runner, RunnerConfig};

/// Settings that belong to the engine: every element sharing it must give the same.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub runner: RunnerConfig,
    pub batch_size: usize,
    pub timeout: Duration,
    /// Batches run at once, each on a session of its own (at least 1).
    pub workers: usize,
}

/// Most workers `inference-workers=0` starts: each is one session's memory.
pub const MAX_AUTO_WORKERS: usize = 4;

/// ONNX Runtime intra-op threads per session and the number of inference workers, for the
/// `threads` and `inference-workers` properties (0 = automatic) on this machine.
pub fn cpu_plan(threads: usize, workers: usize, cpu_provider: bool) -> (usize, usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let smt = std::fs::read_to_string("/sys/devices/system/cpu/smt/active")
        .is_ok_and(|s| s.trim() == "1");
    plan_for(
        if smt { cpus.div_ceil(2) } else { cpus },
        threads,
        workers,
        cpu_provider,
    )
}

/// [`cpu_plan`] for `cores` physical cores.
///
/// On the CPU provider, automatic workers are one per core (at most [`MAX_AUTO_WORKERS`]),
/// each with a share of the cores as intra-op threads: batches of one stream, or of several,
/// run side by side on sessions of their own. ONNX Runtime's intra-op pool waits for its slowest
/// thread at every operator, and on a small model at batch 1 two sessions of one thread each
/// ran 1.28× the frames of one session of two threads (issue 16). A GPU provider gets one
/// worker. With one worker, automatic threads are one per core less one, left to the
/// streaming threads that preprocess the next frames while a batch runs.
fn plan_for(cores: usize, threads: usize, workers: usize, cpu_provider: bool) -> (usize, usize) {
    let cores = cores.max(1);
    let workers = match workers {
        0 if !cpu_provider => 1,
        0 if threads > 0 => (cores / threads).clamp(1, MAX_AUTO_WORKERS),
        0 => cores.min(MAX_AUTO_WORKERS),
        w => w,
    };
    let threads = match threads {
        0 if workers == 1 => cores.saturating_sub(1).max(1),
        0 => (cores / workers).max(1),
        t => t,
    };
    (threads, workers)
}

impl EngineSettings {
    /// The first setting (property name, this value, the other's value) in which `other`
    /// differs. The ONNX Runtime library is not compared: one is loaded per process.
    pub fn conflict(&self, other: &Self) -> Option<(&'static str, String, String)> {
        let (a, b) = (&self.runner, &other.runner);
        let same_model = a.model == b.model
            || matches!(
                (a.model.canonicalize(), b.model.canonicalize()),
                (Ok(x), Ok(y)) if x == y
            );
        let model = (!same_model).then(|| {
            (
                "model",
                a.model.display().to_string(),
                b.model.display().to_string(),
            )
        });
        model
            .or_else(|| {
                let name = |p: &crate::model::Provider| format!("{p:?}").to_lowercase();
                differ("execution-provider", &name(&a.provider), &name(&b.provider))
            })
            .or_else(|| differ("device-id", &a.device_id, &b.device_id))
            .or_else(|| differ("strict-provider", &a.strict_provider, &b.strict_provider))
            .or_else(|| differ("threads", &a.threads, &b.threads))
            .or_else(|| differ("trt-fp16", &a.trt_fp16, &b.trt_fp16))
            .or_else(|| differ("trt-cache-dir", &a.trt_cache_dir, &b.trt_cache_dir))
            .or_else(|| differ("batch-size", &self.batch_size, &other.batch_size))
            .or_else(|| {
                let (x, y) = (self.timeout.as_millis(), other.timeout.as_millis());
                differ("batch-timeout", &x, &y)
            })
            .or_else(|| differ("inference-workers", &self.workers, &other.workers))
    }
}

/// `Some((name, a, b))` when `a` and `b` differ.
fn differ<T: PartialEq + std::fmt::Debug>(
    name: &'static str,
    a: &T,
    b: &T,
) -> Option<(&'static str, String, String)> {
    (a != b).then(|| (name, format!("{a:?}"), format!("{b:?}")))
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Conflict(Box<Conflict>),
    #[error("model {path}: batch-size {batch}: {reason}")]
    TooLarge {
        path: PathBuf,
        batch: usize,
        reason: String,
    },
    #[error("model {path} fails on its first run (a test batch of zeros): {reason}")]
    FirstRun { path: PathBuf, reason: String },
    #[error("cannot start the inference thread: {0}")]
    Thread(String),
    #[error("model {path} cannot replace {live} while streaming: {reason}")]
    Incompatible {
        path: PathBuf,
        live: PathBuf,
        reason: String,
    },
    #[error("model {path} fails on a test run: {reason}")]
    TestRun { path: PathBuf, reason: String },
}

/// A later element's engine settings differ from those the engine was opened with.
#[derive(Debug, thiserror::Error)]
#[error(
    "model-instance-id \"{id}\": element {owner} opened this engine with {setting}={theirs}, element {element} asks for {setting}={ours}; give both the same {setting} or another model-instance-id"
)]
pub struct Conflict {
    pub id: String,
    pub setting: &'static str,
    pub owner: String,
    pub theirs: String,
    pub element: String,
    pub ours: String,
}

/// What an element asks for when it starts.
#[derive(Debug, Clone)]
pub struct Request {
    /// `None`: a private engine.
    pub instance_id: Option<String>,
    /// The element's name, for messages.
    pub element: String,
    pub settings: EngineSettings,
    /// The element's own labels, preprocessing and score overrides.
    pub overrides: Overrides,
}

/// An element's view of the engine it attached to.
pub struct Attached {
    pub engine: Arc<Engine>,
    /// The model with this element's overrides.
    pub spec: ModelSpec,
    /// Provider fallback warnings (for the element that opened the engine).
    pub warnings: Vec<String>,
    /// The element that opened the engine, when this one joined an existing engine.
    pub joined: Option<String>,
}

/// Counters of the engine (all streams together).
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub batches: u64,
    pub frames: u64,
    pub run_total: Duration,
    pub run_max: Duration,
    /// Streams attached now.
    pub streams: usize,
    /// Frames waiting for a batch now.
    pub queued: usize,
    /// Streams waiting for a place in the engine now.
    pub in_line: usize,
    /// Preprocessed-frame tensors allocated (the pool never shrinks).
    pub slots: usize,
    /// Models that replaced the running one (hot reload).
    pub reloads: u64,
    /// Replacement models refused by the checks (the running model stayed).
    pub rejected_reloads: u64,
}

impl EngineStats {
    pub fn mean_fill(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.frames as f64 / self.batches as f64
        }
    }
}

/// A frame in the plan: where its answer goes.
struct Pending {
    lane: Arc<dyn Deliver>,
    ticket: u64,
    slot: Slot,
}

/// What the streams and the worker share under one lock.
struct Queue {
    plan: Plan<Pending>,
    admission: Admission,
    /// Slots not in use; slots are made on demand, so at most the admitted frames plus one
    /// batch being copied exist.
    spare: Vec<Slot>,
    allocated: usize,
    /// A replacement model per worker, which it takes before its next batch.
    incoming: Vec<Option<(Arc<Generation>, Runner)>>,
    /// The first frame of the latest batch, kept (not copied) for a replacement's test run.
    probe: Option<Slot>,
}

struct Shared {
    queue: Mutex<Queue>,
    cond: Condvar,
    stats: Mutex<EngineStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a poisoned lock stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One session and its worker; dropped (worker joined) when its last element lets go.
pub struct Engine {
    id: Option<String>,
    owner: String,
    settings: EngineSettings,
    /// The model the workers run (or take before their next batch) apart from its sessions,
    /// for each element's own overrides.
    live: Mutex<Arc<Generation>>,
    /// Each attached stream's overrides, which a replacement model must accept.
    lanes: Mutex<HashMap<LaneId, Overrides>>,
    /// Held while a replacement is opened and checked: one reload at a time.
    reloading: Mutex<()>,
    /// Images in a batch tensor (the batch size, or the model's fixed batch dimension).
    capacity: usize,
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    input_type: InputType,
    slot_len: usize,
    /// One full-batch run, measured at opening (after a warm-up run).
    run_estimate: Duration,
    next_lane: AtomicU64,
    streams: AtomicUsize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("settings", &self.settings)
            .finish()
    }
}

static ENGINES: LazyLock<Mutex<HashMap<String, Weak<Engine>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Attaches an element to the engine of its `model-instance-id` (opening it if none is
/// open), or to a new private engine. The ONNX Runtime library must be loaded already.
pub fn attach(request: &Request) -> Result<Attached, EngineError> {
    let Some(id) = &request.instance_id else {
        return open(request);
    };
    // Held while opening, so two elements starting together open one engine.
    let mut engines = lock(&ENGINES);
    engines.retain(|_, e| e.strong_count() > 0);
    if let Some(engine) = engines.get(id).and_then(Weak::upgrade) {
        let live = engine.live();
        let mut current = engine.settings.clone();
        current.runner.model = live.path().to_path_buf();
        if let Some((setting, theirs, ours)) = current.conflict(&request.settings) {
            return Err(EngineError::Conflict(Box::new(Conflict {
                id: id.clone(),
                setting,
                owner: engine.owner.clone(),
                theirs,
                element: request.element.clone(),
                ours,
            })));
        }
        let spec = live.description.spec(&request.overrides)?;
        let joined = Some(engine.owner.clone());
        return Ok(Attached {
            engine,
            spec,
            warnings: Vec::new(),
            joined,
        });
    }
    let attached = open(request)?;
    engines.insert(id.clone(), Arc::downgrade(&attached.engine));
    Ok(attached)
}

fn open(request: &Request) -> Result<Attached, EngineError> {
    let settings = request.settings.clone();
    let path = settings.runner.model.clone();
    let opened = Runner::open(&settings.runner, &request.overrides)?;
    let spec = opened.runner.spec().clone();
    let description = opened.runner.description().clone();
    let batch_size = settings.batch_size.max(1);
    if let Some(fixed) = spec.fixed_batch
        && batch_size > fixed
    {
        return Err(ModelError::NotImage {
            path,
            reason: format!(
                "batch-size {batch_size} is larger than the model's fixed batch dimension {fixed}"
            ),
        }
        .into());
    }
    let capacity = spec.fixed_batch.unwrap_or(batch_size).max(batch_size);
    let slot_len = spec.slot.len();
    let too_large = |reason: String| EngineError::TooLarge {
        path: path.clone(),
        batch: capacity,
        reason,
    };
    // Before any session or tensor of the batch's size exists.
    spec.check_batch(capacity).map_err(too_large)?;
    let first_run = |e: ModelError| EngineError::FirstRun {
        path: path.clone(),
        reason: e.to_string(),
    };

    // One session and batch tensor per worker (more workers: batches run side by side).
    let workers = settings.workers.max(1);
    let zeros = BatchTensor::new(spec.input_type, slot_len, capacity)
        .map_err(|e| too_large(e.to_string()))?;
    let mut scores = Vec::new();
    let mut runners = vec![opened.runner];
    for _ in 1..workers {
        runners.push(Runner::open(&settings.runner, &request.overrides)?.runner);
    }
    // Warm-up: the first run allocates and (on GPUs) picks kernels. A model that fails here
    // never streams.
    for runner in &mut runners {
        prepare(runner, &spec, batch_size);
        runner
            .run(zeros.input(), batch_size, &mut scores)
            .map_err(first_run)?;
    }
    // What a batch costs once warm, which the latency query reports.
    let started = Instant::now();
    if let Some(runner) = runners.first_mut() {
        runner
            .run(zeros.input(), batch_size, &mut scores)
            .map_err(first_run)?;
    }
    let run_estimate = started.elapsed();
    drop(zeros);
    let mut prepared = Vec::with_capacity(workers);
    for runner in runners {
        let tensor = BatchTensor::new(spec.input_type, slot_len, capacity)
            .map_err(|e| too_large(e.to_string()))?;
        prepared.push((runner, tensor));
    }
    let generation = Arc::new(Generation {
        number: 1,
        description,
        name: spec.name.clone(),
    });

    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            plan: Plan::new(batch_size, settings.timeout),
            admission: Admission::new(in_flight(batch_size, workers)),
            spare: Vec::new(),
            allocated: 0,
            incoming: (0..workers).map(|_| None).collect(),
            probe: None,
        }),
        cond: Condvar::new(),
        stats: Mutex::new(EngineStats::default()),
    });
    let mut handles = Vec::with_capacity(workers);
    for (index, (runner, tensor)) in prepared.into_iter().enumerate() {
        let for_worker = shared.clone();
        let model = generation.clone();
        let handle = std::thread::Builder::new()
            .name(format!(
                "vc-engine-{}-{index}",
                request.instance_id.as_deref().unwrap_or(&request.element)
            ))
            .spawn(move || work(&for_worker, index, runner, tensor, model));
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                lock(&shared.queue).plan.shut_down();
                shared.cond.notify_all();
                for h in handles {
                    let _ = h.join();
                }
                return Err(EngineError::Thread(e.to_string()));
            }
        }
    }
    let engine = Arc::new(Engine {
        id: request.instance_id.clone(),
        owner: request.element.clone(),
        settings,
        live: Mutex::new(generation),
        lanes: Mutex::new(HashMap::new()),
        reloading: Mutex::new(()),
        capacity,
        shared,
        workers: Mutex::new(handles),
        input_type: spec.input_type,
        slot_len,
        run_estimate,
        next_lane: AtomicU64::new(0),
        streams: AtomicUsize::new(0),
    });
    Ok(Attached {
        engine,
        spec,
        warnings: opened.warnings,
        joined: None,
    })
}

/// A batch on every worker and one more being filled: with fewer, a worker that finishes
/// waits for the streams to preprocess its next frames (one stream and two workers at batch 1
/// left a fifth of the CPU idle, issue 16).
fn in_flight(batch_size: usize, workers: usize) -> usize {
    batch_size.saturating_mul(workers.max(1).saturating_add(1))
}

/// Session options that follow from the spec: GPU providers see one input shape.
fn prepare(runner: &mut Runner, spec: &ModelSpec, batch_size: usize) {
    if runner.on_gpu() && batch_size > 1 && spec.fixed_batch.is_none() {
        runner.pad_batches_to(batch_size);
    }
}

/// The worker thread: batches from the plan, runs, answers. Before each batch it takes the
/// replacement model waiting for it, if any.
fn work(
    shared: &Shared,
    index: usize,
    mut runner: Runner,
    mut tensor: BatchTensor,
    mut model: Arc<Generation>,
) {
    let mut scores = Vec::new();
    let mut answers = Vec::new();
    let mut slots = Vec::new();
    loop {
        let (jobs, replaced) = {
            let mut queue = lock(&shared.queue);
            let jobs = loop {
                match queue.plan.next(Instant::now()) {
                    Next::Run(jobs) => break jobs,
                    Next::Shutdown => return,
                    Next::Wait => {
                        queue = shared.cond.wait(queue).unwrap_or_else(|e| e.into_inner())
                    }
                    Next::WaitUntil(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        queue = shared
                            .cond
                            .wait_timeout(queue, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            };
            // Taken with the batch, under the same lock as the reload installs it: every
            // frame submitted after a reload was accepted runs on the new model.
            let replaced = queue.incoming.get_mut(index).and_then(Option::take);
            (jobs, replaced)
        };
        if let Some((next_model, next_runner)) = replaced {
            // The old session is dropped here, outside the lock.
            runner = next_runner;
            model = next_model;
        }
        let classes = runner.spec().num_classes;
        // Places in the plan are free: streams may preprocess the next frames meanwhile.
        shared.cond.notify_all();
        let n = jobs.len();
        let mut gathered = true;
        for (i, job) in jobs.into_iter().enumerate() {
            let Pending { lane, ticket, slot } = job.payload;
            gathered &= tensor.put(i, &slot);
            slots.push(slot);
            answers.push((lane, ticket));
        }
        // The slots are copied: back to the pool before the run; the first is kept as the
        // latest real frame for a reload's test run.
        {
            let mut queue = lock(&shared.queue);
            if !slots.is_empty() {
                let newest = slots.swap_remove(0);
                if let Some(old) = queue.probe.replace(newest) {
                    queue.spare.push(old);
                }
            }
            queue.spare.append(&mut slots);
        }
        shared.cond.notify_all();
        let started = Instant::now();
        let run = if gathered {
            runner
                .run(tensor.input(), n, &mut scores)
                .map_err(|e| e.to_string())
        } else {
            Err("a frame's tensor does not match the model's input".to_string())
        };
        let took = started.elapsed();
        let run_number = {
            let mut s = lock(&shared.stats);
            s.batches += 1;
            s.frames += n as u64;
            s.run_total += took;
            s.run_max = s.run_max.max(took);
            s.batches
        };
        for (i, (lane, ticket)) in answers.drain(..).enumerate() {
            let outcome = match &run {
                Ok(()) => scores
                    .get(i * classes..(i + 1) * classes)
                    .map(|s| Inferred {
                        scores: s.to_vec(),
                        took,
                        batch_fill: n,
                        run: run_number,
                        model: model.clone(),
                    })
                    .ok_or_else(|| format!("the model gave no scores for image {i} of {n}")),
                Err(e) => Err(e.clone()),
            };
            lane.deliver(ticket, outcome);
        }
    }
}

/// A replacement model that passed the checks, before the workers take it.
struct Replacement {
    generation: Arc<Generation>,
    /// One session per worker, warmed up.
    runners: Vec<Runner>,
    warnings: Vec<String>,
    real_frame: bool,
}

/// What an accepted reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub model: Arc<Generation>,
    /// From the call to the model waiting for the workers (opened, checked, warmed up).
    pub took: Duration,
    /// Provider fallback warnings of the new sessions.
    pub warnings: Vec<String>,
    /// Whether the test run had a real frame (else a frame of zeros: nothing streamed yet).
    pub real_frame: bool,
}

impl Engine {
    /// A new stream's id; the stream counts as attached until [`Engine::detach`]. A model
    /// that replaces the running one must accept the stream's `overrides`.
    pub fn attach_lane(&self, overrides: Overrides) -> LaneId {
        self.streams.fetch_add(1, Ordering::SeqCst);
        let id = self.next_lane.fetch_add(1, Ordering::SeqCst);
        lock(&self.lanes).insert(id, overrides);
        id
    }

    /// The stream leaves: its waiting frames are dropped.
    pub fn detach(&self, lane: &Arc<dyn Deliver>) {
        self.remove(lane);
        lock(&self.lanes).remove(&lane.id());
        self.streams.fetch_sub(1, Ordering::SeqCst);
    }

    /// The model the workers run now, or take before their next batch.
    pub fn live(&self) -> Arc<Generation> {
        lock(&self.live).clone()
    }

    /// Changes a stream's overrides (its labels-file changed while streaming) after checking
    /// them against the live model; returns the stream's new spec.
    pub fn set_overrides(
        &self,
        lane: LaneId,
        overrides: Overrides,
    ) -> Result<ModelSpec, ModelError> {
        // Under the reload lock: a replacement checked meanwhile sees the new overrides.
        let _one = lock(&self.reloading);
        let spec = self.live().description.spec(&overrides)?;
        lock(&self.lanes).insert(lane, overrides);
        Ok(spec)
    }

    /// Opens `model` with the engine's settings, checks it can take the running model's place
    /// for every attached stream (the same input type, size, layout and preprocessing; each
    /// stream's labels match its classes; batch size fits), runs it on the latest real frame
    /// and warms up one session per worker; then each worker takes it before its next batch.
    /// No frame is dropped and none waits for the loading. On an error the running model
    /// stays and nothing changes.
    pub fn reload(&self, model: &Path) -> Result<Reloaded, EngineError> {
        let _one = lock(&self.reloading);
        let started = Instant::now();
        let result = self.open_replacement(model);
        let mut stats = lock(&self.shared.stats);
        match &result {
            Ok(_) => stats.reloads += 1,
            Err(_) => stats.rejected_reloads += 1,
        }
        drop(stats);
        let new = result?;
        let mut queue = lock(&self.shared.queue);
        for (waiting, runner) in queue.incoming.iter_mut().zip(new.runners) {
            // A replacement not yet taken is replaced in turn (dropped after the lock).
            let _older = waiting.replace((new.generation.clone(), runner));
        }
        *lock(&self.live) = new.generation.clone();
        drop(queue);
        self.shared.cond.notify_all();
        Ok(Reloaded {
            model: new.generation,
            took: started.elapsed(),
            warnings: new.warnings,
            real_frame: new.real_frame,
        })
    }

    fn open_replacement(&self, path: &Path) -> Result<Replacement, EngineError> {
        let live = self.live();
        let mut config = self.settings.runner.clone();
        config.model = path.to_path_buf();
        let opened = Runner::open(&config, &Overrides::default())?;
        let description = opened.runner.description().clone();
        let incompatible = |reason: String| EngineError::Incompatible {
            path: path.to_path_buf(),
            live: live.path().to_path_buf(),
            reason,
        };
        let mut lanes: Vec<Overrides> = lock(&self.lanes).values().cloned().collect();
        if lanes.is_empty() {
            lanes.push(Overrides::default());
        }
        let batch_size = self.batch_size();
        let mut new_spec = None;
        for overrides in &lanes {
            let old = live.description.spec(overrides)?;
            let new = description
                .spec(overrides)
                .map_err(|e| incompatible(e.to_string()))?;
            compatible(&old, &new, batch_size, self.capacity).map_err(&incompatible)?;
            new_spec.get_or_insert(new);
        }
        let Some(spec) = new_spec else {
            return Err(incompatible("no stream to check it for".into()));
        };
        let test_run = |e: ModelError| EngineError::TestRun {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        // The latest real frame, at image 0 of a full batch (the rest zeros).
        let mut tensor = BatchTensor::new(spec.input_type, spec.slot.len(), self.capacity)
            .map_err(|e| incompatible(e.to_string()))?;
        let probe = lock(&self.shared.queue).probe.take();
        let real_frame = probe.as_ref().is_some_and(|p| tensor.put(0, p));
        if let Some(p) = probe {
            let mut queue = lock(&self.shared.queue);
            if queue.probe.is_none() {
                queue.probe = Some(p);
            } else {
                queue.spare.push(p);
            }
        }
        let mut runners = vec![opened.runner];
        let mut warnings = opened.warnings;
        for _ in 1..self.settings.workers.max(1) {
            let more = Runner::open(&config, &Overrides::default())?;
            warnings.extend(more.warnings);
            runners.push(more.runner);
        }
        let mut scores = Vec::new();
        for runner in &mut runners {
            prepare(runner, &spec, batch_size);
            runner
                .run(tensor.input(), batch_size, &mut scores)
                .map_err(test_run)?;
            let first = scores.get(..spec.num_classes).unwrap_or_default();
            if first.len() != spec.num_classes || first.iter().any(|v| !v.is_finite()) {
                return Err(test_run(ModelError::Run(format!(
                    "its scores for {} are not {} finite numbers: {first:?}",
                    if real_frame {
                        "the latest frame"
                    } else {
                        "a frame of zeros"
                    },
                    spec.num_classes
                ))));
            }
        }
        let generation = Arc::new(Generation {
            number: live.number + 1,
            description,
            name: spec.name.clone(),
        });
        Ok(Replacement {
            generation,
            runners,
            warnings,
            real_frame,
        })
    }

    /// Waits for a place in the engine (first come, first served across streams) and returns
    /// a slot to preprocess one frame into. `None` when the lane is flushing.
    pub fn acquire(&self, lane: &Arc<dyn Deliver>) -> Option<Slot> {
        let id = lane.id();
        let mut queue = lock(&self.shared.queue);
        loop {
            if lane.is_flushing() {
                queue.admission.cancel(id);
                drop(queue);
                self.shared.cond.notify_all();
                return None;
            }
            let pending = queue.plan.queued();
            if queue.admission.try_admit(id, pending) {
                let slot = match queue.spare.pop() {
                    Some(slot) => slot,
                    None => {
                        queue.allocated += 1;
                        Slot::new(self.input_type, self.slot_len)
                    }
                };
                return Some(slot);
            }
            queue = self
                .shared
                .cond
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Gives back an admitted slot that will not be submitted (preprocessing failed or the
    /// stream started flushing).
    pub fn release(&self, slot: Slot) {
        let mut queue = lock(&self.shared.queue);
        queue.admission.returned();
        queue.spare.push(slot);
        drop(queue);
        self.shared.cond.notify_all();
    }

    /// Hands over one preprocessed frame of `lane`, answered under `ticket`.
    pub fn submit(&self, lane: &Arc<dyn Deliver>, ticket: u64, slot: Slot) {
        let pending = Pending {
            lane: lane.clone(),
            ticket,
            slot,
        };
        let mut queue = lock(&self.shared.queue);
        queue.admission.submitted();
        queue.plan.submit(lane.id(), pending, Instant::now());
        drop(queue);
        self.shared.cond.notify_all();
    }

    /// The stream's waiting frames run now (a serialized event or query is behind them).
    pub fn hurry(&self, lane: LaneId) {
        lock(&self.shared.queue).plan.hurry(lane);
        self.shared.cond.notify_all();
    }

    /// Drops the stream's waiting frames (flush) and wakes it if it waits for a place.
    pub fn remove(&self, lane: &Arc<dyn Deliver>) {
        let mut queue = lock(&self.shared.queue);
        let gone = queue.plan.remove(lane.id());
        queue.spare.extend(gone.into_iter().map(|p| p.slot));
        drop(queue);
        self.shared.cond.notify_all();
    }

    /// Frames admitted at once (across streams), and the bound on each stream's queue.
    pub fn frames_in_flight(&self) -> usize {
        in_flight(self.batch_size(), self.settings.workers)
    }

    pub fn batch_size(&self) -> usize {
        self.settings.batch_size.max(1)
    }

    /// The shared id, `None` for a private engine.
    pub fn instance_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Longest a frame is expected to wait in the engine: the batch timeout (when batches
    /// hold more than one frame), a batch already running, then its own batch's run.
    pub fn latency(&self) -> Duration {
        let wait = if self.batch_size() > 1 {
            self.settings.timeout
        } else {
            Duration::ZERO
        };
        wait + self.run_estimate * 2
    }

    pub fn stats(&self) -> EngineStats {
        let mut s = lock(&self.shared.stats).clone();
        s.streams = self.streams.load(Ordering::SeqCst);
        let queue = lock(&self.shared.queue);
        s.queued = queue.plan.queued();
        s.in_line = queue.admission.in_line();
        s.slots = queue.allocated;
        s
    }
}

/// Whether `new` can take `old`'s place for a stream without changing what the stream
/// preprocesses into its slots (frames already preprocessed may run on either). Labels that
/// do not match the classes are refused earlier, by `Description::spec`.
fn compatible(
    old: &ModelSpec,
    new: &ModelSpec,
    batch_size: usize,
    capacity: usize,
) -> Result<(), String> {
    let input = |s: &ModelSpec| {
        format!(
            "{:?} {}x{} {:?} {:?}",
            s.input_type, s.slot.width, s.slot.height, s.slot.channels, s.slot.layout
        )
    };
    if old.input_type != new.input_type || old.slot != new.slot {
        return Err(format!(
            "its input is {}, the stream's frames are preprocessed for {}",
            input(new),
            input(old)
        ));
    }
    if old.resize != new.resize {
        return Err(format!(
            "it asks for resize {:?}, the stream uses {:?}",
            new.resize, old.resize
        ));
    }
    if old.normalize != new.normalize {
        return Err(format!(
            "its normalisation {:?} differs from the stream's {:?}",
            new.normalize, old.normalize
        ));
    }
    if let Some(fixed) = new.fixed_batch
        && fixed != capacity
    {
        return Err(format!(
            "its fixed batch dimension {fixed} differs from the engine's batch tensor of {capacity} images (batch-size {batch_size})"
        ));
    }
    new.check_batch(capacity)
}

impl Drop for Engine {
    fn drop(&mut self) {
        lock(&self.shared.queue).plan.shut_down();
        self.shared.cond.notify_all();
        for worker in lock(&self.workers).drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Provider;

    #[test]
    fn automatic_threads_and_workers() {
        // (cores, threads, workers, cpu) -> (threads, workers)
        for (input, want) in [
            // Both automatic on the CPU: one worker per core (at most 4), cores shared out.
            ((1, 0, 0, true), (1, 1)),
            ((2, 0, 0, true), (1, 2)),
            ((3, 0, 0, true), (1, 3)),
            ((8, 0, 0, true), (2, 4)),
            ((16, 0, 0, true), (4, 4)),
            // Threads given: workers fill the cores.
            ((8, 2, 0, true), (2, 4)),
            ((8, 8, 0, true), (8, 1)),
            ((2, 4, 0, true), (4, 1)),
            // One worker given: threads leave a core to preprocessing.
            ((2, 0, 1, true), (1, 1)),
            ((8, 0, 1, true), (7, 1)),
            ((8, 0, 3, true), (2, 3)),
            // A GPU provider: one worker unless asked.
            ((8, 0, 0, false), (7, 1)),
            ((8, 0, 2, false), (4, 2)),
            // Both given: taken as they are.
            ((2, 3, 5, true), (3, 5)),
            ((0, 0, 0, true), (1, 1)),
        ] {
            let (cores, threads, workers, cpu) = input;
            assert_eq!(plan_for(cores, threads, workers, cpu), want, "{input:?}");
        }
        let (threads, workers) = cpu_plan(0, 0, true);
        assert!(threads >= 1 && (1..=MAX_AUTO_WORKERS).contains(&workers));
    }

    fn settings(model: &str, batch: usize) -> EngineSettings {
        EngineSettings {
            runner: RunnerConfig {
                model: model.into(),
                ..Default::default()
            },
            batch_size: batch,
            timeout: Duration::from_millis(50),
            workers: 1,
        }
    }

    #[test]
    fn equal_settings_do_not_conflict() {
        assert_eq!(settings("m.onnx", 4).conflict(&settings("m.onnx", 4)), None);
    }

    #[test]
    fn the_first_differing_setting_is_named_with_both_values() {
        let a = settings("m.onnx", 4);
        assert_eq!(
            a.conflict(&settings("m.onnx", 8)),
            Some(("batch-size", "4".into(), "8".into()))
        );
        assert_eq!(
            a.conflict(&settings("n.onnx", 8)).map(|c| c.0),
            Some("model")
        );
        let mut b = a.clone();
        b.runner.provider = Provider::Cuda;
        assert_eq!(a.conflict(&b).map(|c| c.0), Some("execution-provider"));
        let mut b = a.clone();
        b.timeout = Duration::ZERO;
        assert_eq!(
            a.conflict(&b),
            Some(("batch-timeout", "50".into(), "0".into()))
        );
        let mut b = a.clone();
        b.runner.ort_library = Some("/other/libonnxruntime.so".into());
        assert_eq!(a.conflict(&b), None, "one library per process anyway");
    }

    #[test]
    fn the_same_file_by_another_path_is_the_same_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("m.onnx");
        std::fs::write(&file, b"x").expect("write");
        let other = dir.path().join(".").join("m.onnx");
        let a = settings(&file.to_string_lossy(), 1);
        let b = settings(&other.to_string_lossy(), 1);
        assert_eq!(a.conflict(&b), None);
    }

    #[test]
    fn conflict_message_names_both_elements_and_the_setting() {
        let e = EngineError::Conflict(Box::new(Conflict {
            id: "lite0".into(),
            setting: "batch-size",
            owner: "cam0".into(),
            theirs: "8".into(),
            element: "cam1".into(),
            ours: "4".into(),
        }));
        let m = e.to_string();
        for part in ["lite0", "cam0", "cam1", "batch-size=8", "batch-size=4"] {
            assert!(m.contains(part), "{m}");
        }
    }
}
