//! The model runner: loads ONNX Runtime's library, opens a session with the requested
//! execution provider (falling back to CPU unless strict), reads the model's input/output
//! description and contract into a [`ModelSpec`], and runs batches.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::{Session, builder::SessionBuilder};
use ort::value::{Shape, SymbolicDimensions, TensorElementType, TensorRef, ValueType};

use crate::contract::{Contract, ContractError, ScoreKind};
use crate::preprocess::{ChannelOrder, Layout, Normalize, ResizeMode, SlotSpec};

/// The ONNX Runtime release the set-up step installs next to the project.
pub const ORT_VERSION: &str = "1.31.1";

/// The most values (height × width × channels) one image of a model's input may have: 2^26,
/// which holds 4096 × 4096 RGB (50 M values, 192 MiB as float32) and 8192 × 8192 grey. A
/// model declaring more is refused before anything is allocated for it.
pub const MAX_IMAGE_VALUES: usize = 1 << 26;

/// The most values one run's input (images × values per image) or output (images × classes)
/// may have: 2^28, 1 GiB as float32.
pub const MAX_BATCH_VALUES: usize = 1 << 28;

/// The most classes a model may output (or labels it may have): 2^20 = 1 048 576. ImageNet-21k
/// has 21 841.
pub const MAX_CLASSES: usize = 1 << 20;

/// Where a project-local library may be, relative to the directory of the plugin's own
/// shared library: installed next to it (`onnxruntime/`, as the Docker images do), or in the
/// source tree's `.deps/` when the plugin runs from `target/{debug,release}/`.
pub fn project_local_candidates(plugin_dir: &Path) -> Vec<PathBuf> {
    vec![
        plugin_dir.join("onnxruntime/libonnxruntime.so"),
        plugin_dir.join("../../.deps/onnxruntime/lib/libonnxruntime.so"),
    ]
}

/// The library loaded in this process and what failed before it was found.
#[derive(Debug, Clone)]
pub struct LoadedRuntime {
    pub path: PathBuf,
    /// Candidates tried before `path`, each with the reason it failed.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
    /// The best provider the loaded library has: TensorRT, then CUDA, then CPU.
    Auto,
}

/// Everything needed to open a model; copied out of the element's settings.
#[derive(Debug, Clone, Default)]
pub struct RunnerConfig {
    pub model: PathBuf,
    pub ort_library: Option<PathBuf>,
    pub provider: Provider,
    pub device_id: i32,
    pub strict_provider: bool,
    /// Intra-op threads; 0 lets ONNX Runtime choose.
    pub threads: usize,
    pub trt_fp16: bool,
    pub trt_cache_dir: Option<PathBuf>,
}

/// User overrides of what the model's contract says (unset = take the contract's value).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub labels: Option<Vec<String>>,
    pub resize: Option<ResizeMode>,
    pub channels: Option<ChannelOrder>,
    pub scale: Option<f32>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub scores: Option<ScoreKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    F32,
    U8,
}

/// What the element needs to know about a model, merged from the graph, its contract and the
/// user's overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub input_name: String,
    pub output_name: String,
    pub input_type: InputType,
    pub slot: SlotSpec,
    pub normalize: Normalize,
    pub resize: ResizeMode,
    /// `Some(n)` when the model's batch dimension is fixed (partial batches are padded).
    pub fixed_batch: Option<usize>,
    pub num_classes: usize,
    pub labels: Vec<String>,
    pub scores: ScoreKind,
    /// Human-readable notes on values that were assumed because neither the model nor the
    /// user gave them; the element logs them.
    pub assumed: Vec<String>,
    /// Execution providers in the order the session uses them.
    pub providers: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "could not load the ONNX Runtime library; tried: {tried}. Install it with `scripts/setup.sh`, set the `ort-library` property or the ORT_DYLIB_PATH variable to libonnxruntime.so (ONNX Runtime >= 1.22)"
    )]
    Library { tried: String },
    #[error("cannot open model {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("model {path} is not an image classifier: {reason}")]
    NotImage { path: PathBuf, reason: String },
    #[error("model {path}: {0}", path = .1.display())]
    Contract(ContractError, PathBuf),
    #[error("model {path}: {reason}")]
    Labels { path: PathBuf, reason: String },
    #[error("execution provider {provider} is not usable: {reason}")]
    Provider {
        provider: &'static str,
        reason: String,
    },
    #[error("inference failed: {0}")]
    Run(String),
}

/// Loads the ONNX Runtime library once per process, trying in order: the explicit path, the
/// `ORT_DYLIB_PATH` variable, the project-local candidates, then the system's search path.
/// Later calls return the library already loaded.
pub fn load_runtime(
    explicit: Option<&Path>,
    project_local: &[PathBuf],
) -> Result<LoadedRuntime, ModelError> {
    static LOADED: Mutex<Option<LoadedRuntime>> = Mutex::new(None);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(done) = loaded.as_ref() {
        return Ok(done.clone());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        candidates.push(PathBuf::from(p));
    }
    candidates.extend(project_local.iter().cloned());
    candidates.push(PathBuf::from("libonnxruntime.so.1"));
    candidates.push(PathBuf::from("libonnxruntime.so"));

    let mut tried = Vec::new();
    for candidate in candidates {
        // A relative name is looked up by the dynamic loader; an absolute one must exist
        // (checked first so that the message says "not found" rather than a dlerror).
        if candidate.is_absolute() && !candidate.exists() {
            tried.push(format!("{} (not found)", candidate.display()));
            continue;
        }
        match ort::init_from(&candidate) {
            Ok(builder) => {
                let env = builder.with_name("visionclassify").build().map_err(|e| {
                    ModelError::Library {
                        tried: format!("{} (environment: {e})", candidate.display()),
                    }
                })?;
                let _ = environment_cell().set(env);
                let done = LoadedRuntime {
                    path: candidate,
                    skipped: tried,
                };
                *loaded = Some(done.clone());
                return Ok(done);
            }
            Err(e) => tried.push(format!("{} ({e})", candidate.display())),
        }
    }
    Err(ModelError::Library {
        tried: tried.join("; "),
    })
}

fn environment_cell() -> &'static OnceLock<Environment> {
    static ENV: OnceLock<Environment> = OnceLock::new();
    &ENV
}

/// An open model session plus reusable output storage.
pub struct Runner {
    session: Session,
    spec: ModelSpec,
    description: Description,
    /// Batch size every run is padded to (see [`Runner::pad_batches_to`]).
    padded_batch: Option<usize>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("spec", &self.spec).finish()
    }
}

/// Result of opening a model: the runner plus warnings the element should post (provider
/// fallbacks).
pub struct Opened {
    pub runner: Runner,
    pub warnings: Vec<String>,
}

impl Runner {
    /// Opens `config.model`. The ONNX Runtime library must have been loaded with
    /// [`load_runtime`].
    pub fn open(config: &RunnerConfig, overrides: &Overrides) -> Result<Opened, ModelError> {
        let path = &config.model;
        let open_err = |reason: String| ModelError::Open {
            path: path.clone(),
            reason,
        };
        let env = environment_cell()
            .get()
            .ok_or_else(|| ModelError::Library {
                tried: "nothing (load_runtime was not called)".into(),
            })?;
        // Open the file ourselves first: a clear message for missing, unreadable, empty files
        // and folders. ONNX Runtime then loads it by path, so that external data (weights in
        // other files) is looked up next to the model, never in the working directory.
        let file = std::fs::File::open(path).map_err(|e| open_err(e.to_string()))?;
        let meta = file.metadata().map_err(|e| open_err(e.to_string()))?;
        if meta.is_dir() {
            return Err(open_err("it is a folder, not a file".into()));
        }
        if meta.len() == 0 {
            return Err(open_err("the file is empty".into()));
        }
        drop(file);

        let mut builder = Session::builder(env).map_err(|e| open_err(e.to_string()))?;
        // Spinning worker threads burn a core waiting for work; in a pipeline that core is
        // needed by the streaming thread's preprocessing (measured: 12 ms of CPU per frame for
        // 3 ms of work at 2 threads on 2 cores), so they sleep instead.
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(|e| open_err(e.to_string()))?;
        if config.threads > 0 {
            builder = builder
                .with_intra_threads(config.threads)
                .map_err(|e| open_err(e.to_string()))?;
        }
        let (mut builder, providers, warnings) = register_providers(builder, config)?;
        let session = builder
            .commit_from_file(path)
            .map_err(|e| open_err(format!("ONNX Runtime could not load it: {e}")))?;

        let contract = {
            let meta = session
                .metadata()
                .map_err(|e| open_err(format!("cannot read metadata: {e}")))?;
            Contract::from_lookup(|k| meta.custom(k))
                .map_err(|e| ModelError::Contract(e, path.clone()))?
        };
        let port = |o: &ort::value::Outlet| Port {
            name: o.name().to_string(),
            dtype: o.dtype().clone(),
        };
        let description = Description {
            path: path.clone(),
            contract,
            inputs: session.inputs().iter().map(port).collect(),
            outputs: session.outputs().iter().map(port).collect(),
            providers,
        };
        let spec = description.spec(overrides)?;
        Ok(Opened {
            runner: Runner {
                session,
                spec,
                description,
                padded_batch: None,
            },
            warnings,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// What the model is, apart from the session: to describe it for other overrides.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// True when a GPU provider (CUDA or TensorRT) runs the model.
    pub fn on_gpu(&self) -> bool {
        self.spec
            .providers
            .iter()
            .any(|p| matches!(*p, "CUDA" | "TensorRT"))
    }

    /// From now on every run is padded to `batch` images, so the session sees one input
    /// shape. GPU providers need this: cuDNN searches convolution algorithms and TensorRT
    /// builds an engine for each new shape, and partial batches of every size from 1 to
    /// `batch` made batch-32 runs 7x slower than batch 1 on an H200 (BENCHMARKS.md). The
    /// input storage must hold `batch` images; the padding images' scores are ignored.
    pub fn pad_batches_to(&mut self, batch: usize) {
        self.padded_batch = Some(batch);
    }

    /// Runs `slots` images from `input` (which holds at least `slots` images, more when the
    /// model's batch is fixed: those are padding) and writes `images × num_classes` scores
    /// into `scores`, replacing its content.
    pub fn run(
        &mut self,
        input: BatchInput<'_>,
        slots: usize,
        scores: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let n = self
            .spec
            .fixed_batch
            .or(self.padded_batch)
            .unwrap_or(slots)
            .max(slots);
        let slot_len = self.spec.slot.len();
        let (c, h, w) = (
            self.spec.slot.channel_count(),
            self.spec.slot.height,
            self.spec.slot.width,
        );
        let shape: [usize; 4] = match self.spec.slot.layout {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        };
        let run_err = |e: ort::Error| ModelError::Run(e.to_string());
        let too_short = || ModelError::Run(format!("batch tensor holds fewer than {n} images"));
        let input_len = batch_values(n, slot_len, "values per image")
            .map_err(|reason| ModelError::Run(format!("input {reason}")))?;
        let want = batch_values(slots, self.spec.num_classes, "classes")
            .map_err(|reason| ModelError::Run(format!("output {reason}")))?;
        let outputs = match input {
            BatchInput::F32(data) => {
                let data = data.get(..input_len).ok_or_else(too_short)?;
                let t = TensorRef::from_array_view((shape, data)).map_err(run_err)?;
                self.session
                    .run(ort::inputs![self.spec.input_name.as_str() => t])
                    .map_err(run_err)?
            }
            BatchInput::U8(data) => {
                let data = data.get(..input_len).ok_or_else(too_short)?;
                let t = TensorRef::from_array_view((shape, data)).map_err(run_err)?;
                self.session
                    .run(ort::inputs![self.spec.input_name.as_str() => t])
                    .map_err(run_err)?
            }
        };
        let value = outputs
            .get(self.spec.output_name.as_str())
            .ok_or_else(|| ModelError::Run(format!("no output {}", self.spec.output_name)))?;
        let (_, data) = value.try_extract_tensor::<f32>().map_err(run_err)?;
        let got = data.get(..want).ok_or_else(|| {
            ModelError::Run(format!(
                "output has {} values, expected at least {want}",
                data.len()
            ))
        })?;
        scores.clear();
        scores
            .try_reserve_exact(want)
            .map_err(|e| ModelError::Run(format!("no memory for {want} scores: {e}")))?;
        scores.extend_from_slice(got);
        Ok(())
    }
}

/// A batch tensor's storage, by element type.
#[derive(Debug, Clone, Copy)]
pub enum BatchInput<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

fn register_providers(
    mut builder: SessionBuilder,
    config: &RunnerConfig,
) -> Result<(SessionBuilder, Vec<&'static str>, Vec<String>), ModelError> {
    let mut warnings = Vec::new();
    let mut active = Vec::new();
    let cuda = || ep::CUDA::default().with_device_id(config.device_id).build();
    let tensorrt = || {
        let mut trt = ep::TensorRT::default()
            .with_device_id(config.device_id)
            .with_fp16(config.trt_fp16);
        if let Some(dir) = &config.trt_cache_dir {
            trt = trt
                .with_engine_cache(true)
                .with_engine_cache_path(dir.display())
                .with_timing_cache(true)
                .with_timing_cache_path(dir.display());
        }
        trt.build()
    };
    let wanted: Vec<(&'static str, bool, ep::ExecutionProviderDispatch)> = match config.provider {
        Provider::Cpu => vec![],
        Provider::Cuda => vec![("CUDA", available::<ep::CUDA>(), cuda())],
        // TensorRT leaves the nodes it cannot take to CUDA, then CPU.
        Provider::TensorRt => vec![
            ("TensorRT", available::<ep::TensorRT>(), tensorrt()),
            ("CUDA", available::<ep::CUDA>(), cuda()),
        ],
        Provider::Auto => vec![
            ("TensorRT", available::<ep::TensorRT>(), tensorrt()),
            ("CUDA", available::<ep::CUDA>(), cuda()),
        ],
    };
    let requested = wanted.first().map(|w| w.0);
    for (name, is_available, dispatch) in wanted {
        let failure = if !is_available {
            Some("the loaded ONNX Runtime library was built without it (the GPU build comes from the onnxruntime-gpu wheel)".to_string())
        } else {
            dispatch.register(&mut builder).err().map(|e| e.to_string())
        };
        match failure {
            None => active.push(name),
            Some(reason) => {
                // Strict applies to the provider the user named; the CUDA helper behind
                // TensorRT and everything under `auto` are best effort.
                if config.strict_provider
                    && Some(name) == requested
                    && config.provider != Provider::Auto
                {
                    return Err(ModelError::Provider {
                        provider: name,
                        reason,
                    });
                }
                if config.provider != Provider::Auto {
                    warnings.push(format!(
                        "execution provider {name} is not usable ({reason}); falling back"
                    ));
                }
            }
        }
    }
    if config.strict_provider && config.provider == Provider::Auto && active.is_empty() {
        return Err(ModelError::Provider {
            provider: "auto",
            reason: "neither TensorRT nor CUDA is usable".into(),
        });
    }
    if config.provider != Provider::Cpu && active.is_empty() {
        warnings.push("running on the CPU execution provider".into());
    }
    active.push("CPU");
    Ok((builder, active, warnings))
}

fn available<E: ExecutionProvider>() -> bool {
    E::is_available().unwrap_or(false)
}

/// One input or output of the graph, as the session reported it.
#[derive(Debug, Clone)]
struct Port {
    name: String,
    dtype: ValueType,
}

/// A model's graph inputs/outputs and contract, read once from its session: everything needed
/// to describe it for any element's overrides (elements sharing one engine differ in labels,
/// preprocessing and score kind) without touching the session.
#[derive(Debug, Clone)]
pub struct Description {
    path: PathBuf,
    contract: Contract,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    providers: Vec<&'static str>,
}

impl Description {
    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `vision.model`'s `version`, when the model states one.
    pub fn version(&self) -> Option<&str> {
        self.contract.model.version.as_deref()
    }

    /// A model with no inputs or outputs: for unit tests of what carries descriptions around.
    #[cfg(test)]
    pub fn empty(path: &str) -> Self {
        Self {
            path: path.into(),
            contract: Contract::default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            providers: Vec::new(),
        }
    }

    /// A description of a graph with one input and the given outputs, as ONNX Runtime would
    /// report them (`-1` for a dynamic dimension), without a session: what the fuzz targets
    /// hand to [`Description::spec`].
    #[doc(hidden)]
    pub fn from_shapes(
        path: &str,
        contract: Contract,
        input: (TensorElementType, Vec<i64>),
        outputs: Vec<(String, TensorElementType, Vec<i64>)>,
    ) -> Self {
        let port = |name: String, ty: TensorElementType, dims: Vec<i64>| Port {
            name,
            dtype: ValueType::Tensor {
                ty,
                dimension_symbols: SymbolicDimensions::new(vec![String::new(); dims.len()]),
                shape: Shape::new(dims),
            },
        };
        Self {
            path: path.into(),
            contract,
            inputs: vec![port("input".into(), input.0, input.1)],
            outputs: outputs
                .into_iter()
                .map(|(name, ty, dims)| port(name, ty, dims))
                .collect(),
            providers: Vec::new(),
        }
    }

    /// The model with `overrides` applied.
    pub fn spec(&self, overrides: &Overrides) -> Result<ModelSpec, ModelError> {
        let mut spec = describe(self, overrides)?;
        spec.providers = self.providers.clone();
        Ok(spec)
    }
}

/// A model as the streams see it: the engine's first model is generation 1, each model that
/// replaces it while streaming (hot reload) the next. Every answer carries the generation
/// that computed it, so each frame names the model that classified it.
#[derive(Debug)]
pub struct Generation {
    pub number: u64,
    pub description: Description,
    /// `vision.model.name` or the file's stem (as [`ModelSpec::name`]).
    pub name: String,
}

impl Generation {
    pub fn path(&self) -> &Path {
        self.description.path()
    }

    pub fn version(&self) -> Option<&str> {
        self.description.version()
    }
}

/// `images × per_image`, when it is at most [`MAX_BATCH_VALUES`]; otherwise why not, naming
/// the limit. `what` says what `per_image` counts ("values per image", "classes").
pub fn batch_values(images: usize, per_image: usize, what: &str) -> Result<usize, String> {
    images
        .checked_mul(per_image)
        .filter(|&n| n <= MAX_BATCH_VALUES)
        .ok_or_else(|| {
            format!(
                "{images} images × {per_image} {what} is more than the limit of {MAX_BATCH_VALUES} values per batch (MAX_BATCH_VALUES)"
            )
        })
}

impl ModelSpec {
    /// Checks that a run of `images` images fits [`MAX_BATCH_VALUES`], input and output,
    /// before its tensors are allocated.
    pub fn check_batch(&self, images: usize) -> Result<(), String> {
        batch_values(images, self.slot.len(), "values per image")
            .map_err(|reason| format!("input: {reason}"))?;
        batch_values(images, self.num_classes, "classes")
            .map_err(|reason| format!("output: {reason}"))?;
        Ok(())
    }
}

/// Merges the graph's input/output description, the contract and the overrides.
fn describe(model: &Description, overrides: &Overrides) -> Result<ModelSpec, ModelError> {
    let (path, contract) = (model.path.as_path(), &model.contract);
    let not_image = |reason: String| ModelError::NotImage {
        path: path.to_path_buf(),
        reason,
    };
    let mut assumed = Vec::new();
    if contract.is_empty() {
        assumed.push("the model has no vision.* metadata; using properties and defaults".into());
    }
    let input = match model.inputs.as_slice() {
        [one] => one,
        [] => return Err(not_image("it has no input".into())),
        many => {
            return Err(not_image(format!(
                "it has {} inputs, an image classifier has one",
                many.len()
            )));
        }
    };
    let ValueType::Tensor { ty, shape, .. } = &input.dtype else {
        return Err(not_image(format!("input `{}` is not a tensor", input.name)));
    };
    let input_type = match ty {
        TensorElementType::Float32 => InputType::F32,
        TensorElementType::Uint8 => InputType::U8,
        other => {
            return Err(not_image(format!(
                "input `{}` has element type {other:?}; supported are float32 and uint8",
                input.name
            )));
        }
    };
    let dims: &[i64] = shape;
    if dims.len() != 4 {
        return Err(not_image(format!(
            "input `{}` has shape {dims:?}; an image input has 4 dimensions (NCHW or NHWC)",
            input.name
        )));
    }
    let is_channels = |d: i64| d == 1 || d == 3;
    let layout = match contract.preprocess.layout {
        Some(l) => l.into(),
        None if is_channels(dims[1]) => Layout::Nchw,
        None if is_channels(dims[3]) => Layout::Nhwc,
        None => {
            return Err(not_image(format!(
                "input `{}` has shape {dims:?}: neither dimension 1 nor 3 is 1 or 3 channels",
                input.name
            )));
        }
    };
    let (c, h, w) = match layout {
        Layout::Nchw => (dims[1], dims[2], dims[3]),
        Layout::Nhwc => (dims[3], dims[1], dims[2]),
    };
    if !is_channels(c) {
        return Err(not_image(format!(
            "input `{}` has shape {dims:?}: {c} channels in {layout:?} layout; 1 or 3 are supported",
            input.name
        )));
    }
    // ONNX Runtime reports a symbolic (or negative) dimension as -1: its size then comes from
    // the contract. A zero-sized image can never be filled.
    let size = |dim: i64, idx: usize, what: &str| -> Result<usize, ModelError> {
        match dim {
            0 => Err(not_image(format!(
                "input `{}` has shape {dims:?}: input {what} is 0",
                input.name
            ))),
            d if d > 0 => usize::try_from(d).map_err(|_| {
                not_image(format!(
                    "input {what} {d} does not fit in this machine's address space"
                ))
            }),
            _ => contract.preprocess.size.map(|s| s[idx]).ok_or_else(|| {
                not_image(format!(
                    "input {what} is dynamic and vision.preprocess gives no size"
                ))
            }),
        }
    };
    let height = size(h, 0, "height")?;
    let width = size(w, 1, "width")?;
    if dims[0] == 0 {
        return Err(not_image(format!(
            "input `{}` has shape {dims:?}: its batch dimension is 0",
            input.name
        )));
    }
    let fixed_batch = match dims[0] {
        d if d > 0 => Some(usize::try_from(d).map_err(|_| {
            not_image(format!(
                "the batch dimension {d} does not fit in this machine's address space"
            ))
        })?),
        _ => None,
    };
    // Checked before any tensor of this size exists: a model may declare any shape.
    let channel_count = if c == 1 { 1 } else { 3 };
    let image_values = height
        .checked_mul(width)
        .and_then(|v| v.checked_mul(channel_count))
        .filter(|&v| v <= MAX_IMAGE_VALUES)
        .ok_or_else(|| {
            not_image(format!(
                "input `{}` of {channel_count} × {height} × {width} is more than the limit of {MAX_IMAGE_VALUES} values per image (MAX_IMAGE_VALUES)",
                input.name
            ))
        })?;
    if let Some(batch) = fixed_batch {
        batch_values(batch, image_values, "values per image")
            .map_err(|reason| not_image(format!("its fixed input batch: {reason}")))?;
    }

    let channels = match (
        c,
        overrides
            .channels
            .or(contract.preprocess.color.map(Into::into)),
    ) {
        (1, _) => ChannelOrder::Gray,
        (_, Some(ChannelOrder::Gray)) => {
            return Err(not_image(
                "vision.preprocess says GRAY but the input has 3 channels".into(),
            ));
        }
        (_, Some(order)) => order,
        (_, None) => {
            assumed.push("channel order RGB".into());
            ChannelOrder::Rgb
        }
    };
    let output_name = match &contract.output.name {
        Some(name) => {
            if !model.outputs.iter().any(|o| o.name == *name) {
                return Err(not_image(format!(
                    "vision.output names `{name}`, which is not an output"
                )));
            }
            name.clone()
        }
        None => model
            .outputs
            .first()
            .map(|o| o.name.clone())
            .ok_or_else(|| not_image("it has no output".into()))?,
    };
    let Some(ValueType::Tensor {
        ty: out_ty,
        shape: out_shape,
        ..
    }) = model
        .outputs
        .iter()
        .find(|o| o.name == output_name)
        .map(|o| &o.dtype)
    else {
        return Err(not_image(format!("output `{output_name}` is not a tensor")));
    };
    if *out_ty != TensorElementType::Float32 {
        return Err(not_image(format!(
            "output `{output_name}` has element type {out_ty:?}; float32 scores are supported"
        )));
    }
    let out_dims: &[i64] = out_shape;
    // Scores are [N, classes] or [N, classes, 1, 1] (a convolutional head).
    let class_dim = match out_dims {
        [_, c] => *c,
        [_, c, rest @ ..] if rest.iter().all(|&d| d == 1) => *c,
        _ => {
            return Err(not_image(format!(
                "output `{output_name}` has shape {out_dims:?}, which is not [N, classes] (or [N, classes, 1, 1])"
            )));
        }
    };
    let num_classes = match class_dim {
        0 => {
            return Err(not_image(format!(
                "output `{output_name}` has shape {out_dims:?}: 0 classes"
            )));
        }
        // Beyond usize it is beyond the limit as well.
        d if d > 0 => usize::try_from(d).unwrap_or(usize::MAX),
        _ => match overrides.labels.as_ref().or(contract.labels.as_ref()) {
            Some(l) if l.is_empty() => {
                return Err(not_image(format!(
                    "output `{output_name}` has shape {out_dims:?} and the labels are empty: 0 classes"
                )));
            }
            Some(l) => l.len(),
            None => {
                return Err(not_image(format!(
                    "output `{output_name}` has shape {out_dims:?}; the class count is unknown and no labels are given"
                )));
            }
        },
    };
    if num_classes > MAX_CLASSES {
        return Err(not_image(format!(
            "output `{output_name}` has {num_classes} classes, more than the limit of {MAX_CLASSES} classes (MAX_CLASSES)"
        )));
    }
    if let Some(batch) = fixed_batch {
        batch_values(batch, num_classes, "classes")
            .map_err(|reason| not_image(format!("its fixed output batch: {reason}")))?;
    }

    let labels = match (&overrides.labels, &contract.labels) {
        (Some(l), _) | (None, Some(l)) => {
            if l.len() != num_classes {
                let source = if overrides.labels.is_some() {
                    "the labels file"
                } else {
                    "vision.labels"
                };
                return Err(ModelError::Labels {
                    path: path.to_path_buf(),
                    reason: format!(
                        "{source} has {} labels but the model outputs {num_classes} classes",
                        l.len()
                    ),
                });
            }
            l.clone()
        }
        (None, None) => {
            assumed.push("labels are class numbers".into());
            let mut numbers = Vec::new();
            numbers
                .try_reserve_exact(num_classes)
                .map_err(|e| ModelError::Labels {
                    path: path.to_path_buf(),
                    reason: format!("no memory for {num_classes} class-number labels: {e}"),
                })?;
            numbers.extend((0..num_classes).map(|i| i.to_string()));
            numbers
        }
    };

    let mut pick = |what: &str, o: Option<f32>, c: Option<f32>, default: f32| {
        o.or(c).unwrap_or_else(|| {
            assumed.push(format!("{what} {default}"));
            default
        })
    };
    let default_scale = if input_type == InputType::U8 {
        1.0
    } else {
        1.0 / 255.0
    };
    let scale = pick(
        "scale",
        overrides.scale,
        contract.preprocess.scale,
        default_scale,
    );
    let mean = overrides
        .mean
        .or(contract.preprocess.mean)
        .unwrap_or([0.0; 3]);
    let std = overrides
        .std
        .or(contract.preprocess.std)
        .unwrap_or([1.0; 3]);
    let resize = overrides
        .resize
        .or(contract.preprocess.resize.map(Into::into))
        .unwrap_or_default();
    let scores = overrides
        .scores
        .or(contract.output.scores)
        .unwrap_or_else(|| {
            assumed.push("scores are logits (softmax applied)".into());
            ScoreKind::Logits
        });
    let name = contract
        .model
        .name
        .clone()
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());

    Ok(ModelSpec {
        name,
        input_name: input.name.clone(),
        output_name,
        input_type,
        slot: SlotSpec {
            layout,
            width,
            height,
            channels,
        },
        normalize: Normalize { scale, mean, std },
        resize,
        fixed_batch,
        num_classes,
        labels,
        scores,
        assumed,
        providers: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn color3_runner() -> Runner {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let lib = root.join(".deps/onnxruntime/lib/libonnxruntime.so");
        assert!(lib.exists(), "run scripts/setup.sh first");
        load_runtime(Some(&lib), &[]).expect("ONNX Runtime loads");
        let config = RunnerConfig {
            model: root.join("tests/data/color3.onnx"),
            threads: 1,
            ..RunnerConfig::default()
        };
        Runner::open(&config, &Overrides::default())
            .expect("color3 opens")
            .runner
    }

    /// Padding runs the session on the full batch but hands back only the real images'
    /// scores, identical to an unpadded run.
    #[test]
    fn padded_batches_give_the_same_scores_for_the_real_images() {
        let mut runner = color3_runner();
        assert!(!runner.on_gpu());
        let slot = runner.spec().slot.len();
        let classes = runner.spec().num_classes;
        // Four distinct images; only the first two are real, the rest stand for stale data.
        let input: Vec<f32> = (0..4 * slot)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect();
        let mut plain = Vec::new();
        runner
            .run(BatchInput::F32(&input), 2, &mut plain)
            .expect("plain run");
        runner.pad_batches_to(4);
        let mut padded = Vec::new();
        runner
            .run(BatchInput::F32(&input), 2, &mut padded)
            .expect("padded run");
        assert_eq!(plain.len(), 2 * classes);
        assert_eq!(padded.len(), 2 * classes);
        for (a, b) in plain.iter().zip(&padded) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Storage shorter than the padded batch is an error, not a read past the end.
        let err = runner
            .run(BatchInput::F32(&input[..3 * slot]), 2, &mut padded)
            .expect_err("too short for the padded batch");
        assert!(err.to_string().contains("fewer than 4 images"), "{err}");
    }
}
