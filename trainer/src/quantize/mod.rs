//! Quantization (int8 QDQ static/dynamic, fp16) as ONNX graph transformations calibrated with
//! ONNX Runtime, and the gate that compares each quantized model with its float parent.
//!
//! - `graph`: initializers, producers/readers, BatchNorm folding.
//! - `calibrate`: tensor statistics from ORT runs; MinMax, Percentile, Entropy ranges.
//! - `qdq`: static int8 in ORT's QDQ format (per-channel symmetric weights, int32 biases).
//! - `dynamic`: weights-only int8 (`DynamicQuantizeLinear` + `MatMulInteger`/`ConvInteger`).
//! - `fp16`: float16 weights and activations behind a float32 interface.
//! - `sets`: calibration and test images from a data set or unlabelled photos.
//! - `evaluate`: top-1 and throughput of the parent and the candidate, interleaved.
//!
//! The `vision.*` metadata carries over unchanged except `vision.model.optimisation` (and a
//! `quantization` record in `vision.model`), so `visionclassify` loads the result as it is.

pub mod calibrate;
pub mod cli;
pub mod dynamic;
pub mod evaluate;
pub mod fp16;
pub mod graph;
pub mod qdq;
pub mod sets;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ort::environment::Environment;
use serde::Serialize;

use crate::onnx::{ModelProto, tensor_shape_proto::dimension};
use calibrate::RangeMethod;
use evaluate::SessionOptions;
use gstvision::contract;
use qdq::QdqOptions;

/// Why quantization failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("not a usable ONNX model: {0}")]
    NotAModel(String),
    #[error(
        "the model has no {missing} metadata: quantize models written by vision-trainer \
         (import, train, transfer), whose vision.* metadata describes labels, preprocessing \
         and the training data"
    )]
    NoContract { missing: String },
    #[error(
        "the calibration set is empty: give --calibration-size ≥ 1 and a data set whose \
         training split has images"
    )]
    EmptyCalibration,
    #[error(
        "calibration images have shape {got:?} but the model's input `{input}` takes \
         {expected:?} per image (check --data against the model's vision.preprocess)"
    )]
    CalibrationShape {
        input: String,
        expected: Vec<Option<usize>>,
        got: Vec<usize>,
    },
    #[error("op type `{op}` cannot be quantized by this method; supported: {supported}")]
    UnsupportedOp { op: String, supported: String },
    #[error(
        "the model uses opset {version}; per-channel QDQ needs opset ≥ 13 (re-export it, or \
         use --per-tensor)"
    )]
    Opset { version: i64 },
    #[error("initializer `{name}`: {reason}")]
    Initializer { name: String, reason: String },
    #[error("data: {0}")]
    Data(String),
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("the metadata is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Contract(#[from] gstvision::contract::ContractError),
    #[error(transparent)]
    Input(#[from] crate::data::InputContractError),
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(
        "rejected: top-1 dropped by {drop:.2} points ({parent:.2} % → {candidate:.2} %), more \
         than --max-accuracy-drop {max:.2}; the candidate is kept as {kept}"
    )]
    Rejected {
        drop: f64,
        max: f64,
        parent: f64,
        candidate: f64,
        kept: String,
    },
}

/// What the quantizer makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Static int8 QDQ, ranges by KL divergence (TensorRT's method).
    Entropy,
    /// Static int8 QDQ, ranges = observed min/max.
    Minmax,
    /// Static int8 QDQ, ranges clipped at a percentile (--percentile).
    Percentile,
    /// int8 weights, activations quantized at run time (no calibration).
    Dynamic,
    /// float16 weights and activations, float32 interface.
    Fp16,
}

impl Method {
    pub fn is_static(self) -> bool {
        matches!(self, Method::Entropy | Method::Minmax | Method::Percentile)
    }
}

/// Signedness of the quantized activations (weights are always int8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activations {
    /// int8 (S8S8): ORT's quantizer's default; on x86 ORT 1.31 leaves Add and its
    /// neighbours in float with it.
    S8,
    /// uint8 (U8S8): fully fused by ORT on x86 (the default here).
    U8,
}

impl Activations {
    /// The integer range.
    pub fn limits(self) -> (i32, i32) {
        match self {
            Activations::S8 => (-128, 127),
            Activations::U8 => (0, 255),
        }
    }
}

/// The int8 features of this CPU that decide the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuInt8 {
    /// AVX512-VNNI, AVX-VNNI or AMX: int8 dot products without the u8×s8 saturation.
    pub vnni: bool,
}

impl CpuInt8 {
    /// Reads `/proc/cpuinfo` (no VNNI assumed where it cannot be read).
    pub fn detect() -> CpuInt8 {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        CpuInt8::from_cpuinfo(&flags)
    }

    pub fn from_cpuinfo(cpuinfo: &str) -> CpuInt8 {
        let vnni = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .flat_map(str::split_whitespace)
            .any(|f| matches!(f, "avx512_vnni" | "avx_vnni" | "amx_int8"));
        CpuInt8 { vnni }
    }

    /// U8S8 activations: ORT 1.31 on x86 fuses every QDQ node group with uint8 activations
    /// (QLinearConv, QLinearAdd), while with int8 ones it leaves the residual Adds and the
    /// convolutions next to them in float (EfficientNet-Lite0: 2.05x vs 1.3x fp32 speed). Full
    /// 8-bit weights with VNNI; 7-bit without, against `vpmaddubsw` saturation (ORT's advice).
    pub fn defaults(self) -> (Activations, bool) {
        (Activations::U8, !self.vnni)
    }
}

/// Images as the model takes them: `dims` of one image (e.g. `[C, H, W]`), `data` all of them.
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub data: Vec<f32>,
    pub dims: Vec<usize>,
}

impl Images {
    pub fn per_image(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.per_image().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` images.
    pub fn truncated(&self, n: usize) -> Images {
        Images {
            data: self.data[..n.min(self.len()) * self.per_image()].to_vec(),
            dims: self.dims.clone(),
        }
    }

    /// Batches of exactly `batch` images (the last padded by repeating the first ones), their
    /// shape, and how many of each are real.
    pub fn padded_batches(
        &self,
        batch: usize,
    ) -> impl Iterator<Item = (Vec<f32>, Vec<usize>, usize)> + '_ {
        let per = self.per_image();
        let batch = batch.max(1);
        let n = self.len();
        (0..n.div_ceil(batch)).map(move |b| {
            let start = b * batch;
            let real = batch.min(n - start);
            let mut data = self.data[start * per..(start + real) * per].to_vec();
            for k in 0..batch - real {
                let i = k % n;
                data.extend_from_slice(&self.data[i * per..(i + 1) * per]);
            }
            let mut shape = vec![batch];
            shape.extend_from_slice(&self.dims);
            (data, shape, real)
        })
    }

    /// The batch size to run `model` with: its fixed batch dimension, or 8.
    pub fn batch_size_for(&self, model: &ModelProto) -> usize {
        match input_dims(model) {
            Ok((_, dims)) => dims.first().copied().flatten().unwrap_or(8),
            Err(_) => 8,
        }
    }
}

/// A test set: images and, when the data set has them, labels.
#[derive(Debug, Clone, Default)]
pub struct EvalSet {
    pub images: Images,
    /// `None`: top-1 is agreement with the float parent's predictions.
    pub labels: Option<Vec<usize>>,
    pub description: String,
}

/// The model's first input: its name and dimensions (`None` = symbolic).
pub fn input_dims(model: &ModelProto) -> Result<(String, Vec<Option<usize>>), QuantizeError> {
    let input = model
        .graph
        .as_ref()
        .and_then(|g| g.input.first())
        .ok_or_else(|| QuantizeError::NotAModel("the graph has no input".into()))?;
    let name = input.name.clone().unwrap_or_default();
    let shape = input
        .r#type
        .as_ref()
        .and_then(|t| t.value.as_ref())
        .and_then(|crate::onnx::type_proto::Value::TensorType(t)| t.shape.as_ref())
        .ok_or_else(|| QuantizeError::NotAModel(format!("input `{name}` has no shape")))?;
    let dims = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(dimension::Value::DimValue(v)) if v > 0 => Some(v as usize),
            _ => None,
        })
        .collect();
    Ok((name, dims))
}

/// Checks that `images` fit the model's input (batch dimension aside).
pub fn check_images(model: &ModelProto, images: &Images) -> Result<(), QuantizeError> {
    let (input, dims) = input_dims(model)?;
    let per_image = dims.get(1..).unwrap_or(&[]);
    let fits = per_image.len() == images.dims.len()
        && per_image
            .iter()
            .zip(&images.dims)
            .all(|(m, d)| m.is_none_or(|m| m == *d));
    if fits {
        Ok(())
    } else {
        Err(QuantizeError::CalibrationShape {
            input,
            expected: per_image.to_vec(),
            got: images.dims.clone(),
        })
    }
}

/// The metadata keys a model must carry to be quantized and still be described.
pub const CONTRACT_KEYS: &[&str] = &[
    contract::KEY_SCHEMA,
    contract::KEY_LABELS,
    contract::KEY_PREPROCESS,
    contract::KEY_MODEL,
];

/// Checks that the model carries the contract keys quantization needs, that the element's
/// parser accepts them, and that the scores output is one the element takes: the output
/// `vision.output` names, `[N, classes]` (or `[N, classes, 1, 1]`), as many classes as labels
/// (a model the element rejects is not worth quantizing). Without a graph, only the metadata.
pub fn check_contract(model: &ModelProto) -> Result<(), QuantizeError> {
    if let Some(k) = CONTRACT_KEYS.iter().find(|k| model.metadata(k).is_none()) {
        return Err(QuantizeError::NoContract {
            missing: (*k).to_owned(),
        });
    }
    let contract = model.contract()?;
    // Batches run at the model's fixed batch: bounded like the element's, before any exists.
    if let Ok((input, dims)) = input_dims(model)
        && let Some(Some(batch)) = dims.first()
    {
        let limit = gstvision::model::MAX_BATCH_VALUES;
        // With a symbolic image dimension the size comes from vision.preprocess, checked by
        // `InputSpec::from_contract`.
        let per_image: Option<Vec<usize>> = dims.get(1..).unwrap_or(&[]).iter().copied().collect();
        let values = per_image.map(|p| p.iter().try_fold(*batch, |acc, d| acc.checked_mul(*d)));
        if let Some(values) = values
            && values.is_none_or(|v| v > limit)
        {
            return Err(QuantizeError::NotAModel(format!(
                "input `{input}` of shape {dims:?}: a batch is more than the limit of {limit} values per batch (MAX_BATCH_VALUES)"
            )));
        }
    }
    // The metadata alone (no graph yet) is checked as metadata.
    let Some(graph) = &model.graph else {
        return Ok(());
    };
    let outputs = graph.output.as_slice();
    let scores = match &contract.output.name {
        Some(name) => outputs
            .iter()
            .find(|o| o.name.as_deref() == Some(name.as_str()))
            .ok_or_else(|| {
                QuantizeError::NotAModel(format!(
                    "vision.output names `{name}`, which is not an output"
                ))
            })?,
        None => outputs
            .first()
            .ok_or_else(|| QuantizeError::NotAModel("the graph has no output".into()))?,
    };
    let name = scores.name.as_deref().unwrap_or_default();
    // An output without a declared shape is left to ONNX Runtime.
    let Some(shape) = scores
        .r#type
        .as_ref()
        .and_then(|t| t.value.as_ref())
        .and_then(|crate::onnx::type_proto::Value::TensorType(t)| t.shape.as_ref())
    else {
        return Ok(());
    };
    let dims: Vec<Option<i64>> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(dimension::Value::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect();
    let classes = match dims.as_slice() {
        [_, c] => *c,
        [_, c, rest @ ..] if rest.iter().all(|d| *d == Some(1)) => *c,
        _ => {
            return Err(QuantizeError::NotAModel(format!(
                "output `{name}` has shape {dims:?}, which is not [N, classes]"
            )));
        }
    };
    if let (Some(c), Some(labels)) = (classes, &contract.labels)
        && usize::try_from(c).ok() != Some(labels.len())
    {
        return Err(QuantizeError::NotAModel(format!(
            "vision.labels has {} labels but output `{name}` has {c} classes",
            labels.len()
        )));
    }
    Ok(())
}

/// Everything that decides how a model is quantized.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub method: Method,
    /// Percentile for `Method::Percentile`.
    pub percentile: f64,
    /// Op types to quantize (`None`: the method's default).
    pub op_types: Option<Vec<String>>,
    /// Node names kept in float.
    pub exclude: Vec<String>,
    pub per_channel: bool,
    pub reduce_range: bool,
    pub activations: Activations,
    pub max_accuracy_drop: f64,
    pub session: SessionOptions,
    /// Interleaved throughput rounds per batch size, and the length of each.
    pub throughput_rounds: usize,
    pub round_time: Duration,
}

impl QuantizeOptions {
    /// The defaults for `method` on this CPU.
    pub fn new(method: Method) -> QuantizeOptions {
        let (activations, reduce_range) = CpuInt8::detect().defaults();
        QuantizeOptions {
            method,
            percentile: 99.999,
            op_types: None,
            exclude: Vec::new(),
            per_channel: true,
            reduce_range,
            activations,
            max_accuracy_drop: 1.0,
            session: SessionOptions::default(),
            throughput_rounds: 5,
            round_time: Duration::from_millis(400),
        }
    }

    /// What `vision.model.optimisation` says, e.g. "int8-qdq entropy per-channel s8".
    pub fn description(&self) -> String {
        match self.method {
            Method::Dynamic => format!(
                "int8-dynamic {}",
                if self.per_channel {
                    "per-channel"
                } else {
                    "per-tensor"
                }
            ),
            Method::Fp16 => "fp16".to_owned(),
            m => {
                let method = match m {
                    Method::Entropy => "entropy".to_owned(),
                    Method::Minmax => "minmax".to_owned(),
                    _ => format!("percentile-{}", self.percentile),
                };
                let mut d = format!(
                    "int8-qdq {method} {} {}",
                    if self.per_channel {
                        "per-channel"
                    } else {
                        "per-tensor"
                    },
                    match self.activations {
                        Activations::S8 => "s8s8",
                        Activations::U8 => "u8s8",
                    }
                );
                if self.reduce_range {
                    d.push_str(" reduce-range");
                }
                d
            }
        }
    }
}

/// What the transformation did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransformSummary {
    pub batch_norms_folded: usize,
    pub quantized_nodes: usize,
    pub quantized_tensors: usize,
    pub fused_activations: usize,
    /// Nodes of a selected type left in float, with the reason.
    pub skipped: Vec<(String, String)>,
    pub calibration_images: usize,
}

/// Quantizes `model` (which must carry the `vision.*` contract) as `opts` say; `calibration`
/// is used by the static methods only. Nothing is evaluated here: see [`evaluate`].
pub fn quantize(
    env: &Environment,
    model: &ModelProto,
    calibration: &Images,
    opts: &QuantizeOptions,
) -> Result<(ModelProto, TransformSummary), QuantizeError> {
    check_contract(model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| QuantizeError::NotAModel("no graph".into()))?;
    let mut summary = TransformSummary::default();
    let mut out = model.clone();
    let mut g = graph.clone();
    match opts.method {
        Method::Fp16 => {
            if let Some(ops) = &opts.op_types {
                fp16::check_op_types(ops)?;
            }
            out.graph = Some(fp16::convert(&g, &opts.exclude)?);
        }
        Method::Dynamic => {
            let ops = opts.op_types.clone().unwrap_or_else(|| {
                dynamic::DEFAULT_OPS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
            summary.batch_norms_folded = graph::fold_batch_norm(&mut g)?;
            let (dg, nodes) = dynamic::quantize(&g, &ops, &opts.exclude, opts.per_channel)?;
            summary.quantized_nodes = nodes;
            out.graph = Some(dg);
        }
        _ => {
            let opset = model
                .opset_import
                .iter()
                .find(|o| o.domain.as_deref().unwrap_or("").is_empty())
                .and_then(|o| o.version)
                .unwrap_or(0);
            if opts.per_channel && opset < 13 {
                return Err(QuantizeError::Opset { version: opset });
            }
            if calibration.is_empty() {
                return Err(QuantizeError::EmptyCalibration);
            }
            check_images(model, calibration)?;
            summary.batch_norms_folded = graph::fold_batch_norm(&mut g)?;
            let qopts = QdqOptions {
                op_types: opts
                    .op_types
                    .clone()
                    .unwrap_or_else(|| qdq::DEFAULT_OPS.iter().map(|s| (*s).to_owned()).collect()),
                exclude: opts.exclude.clone(),
                per_channel: opts.per_channel,
                reduce_range: opts.reduce_range,
                activations: opts.activations,
            };
            let plan = qdq::plan(&g, &qopts)?;
            let method = match opts.method {
                Method::Minmax => RangeMethod::MinMax,
                Method::Percentile => RangeMethod::Percentile(opts.percentile),
                _ => RangeMethod::Entropy,
            };
            let mut folded = model.clone();
            folded.graph = Some(g.clone());
            let stats = calibrate::collect(
                env,
                &folded,
                &plan.calibrated(),
                calibration,
                method != RangeMethod::MinMax,
                &opts.session,
            )?;
            let ranges: HashMap<_, _> = stats
                .iter()
                .map(|(t, s)| (t.clone(), s.range(method)))
                .collect();
            out.graph = Some(qdq::apply(&g, &plan, &ranges, &qopts)?);
            summary.quantized_nodes = plan.nodes.len();
            summary.quantized_tensors = plan.tensors.len();
            summary.fused_activations = plan.fused.len();
            summary.skipped = plan.skipped.clone();
            summary.calibration_images = calibration.len();
        }
    }
    Ok((out, summary))
}

/// Size, top-1 and throughput of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFigures {
    pub bytes: usize,
    /// Top-1 accuracy in %, or agreement with the parent's top-1 when unlabelled.
    pub top1: f64,
    pub images_per_s_batch1: f64,
    pub images_per_s_batch8: f64,
}

/// The gate's verdict on a candidate.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    pub optimisation: String,
    pub test_set: String,
    pub test_images: usize,
    /// False: top-1 is agreement with the float parent's predictions.
    pub labelled: bool,
    pub parent: ModelFigures,
    pub candidate: ModelFigures,
    /// Parent top-1 − candidate top-1, in points.
    pub top1_drop: f64,
    pub max_accuracy_drop: f64,
    /// Share of images whose top-1 is the parent's, in %.
    pub agreement: f64,
    pub mean_abs_logit_error: f64,
    pub max_abs_logit_error: f64,
    pub speedup_batch1: f64,
    pub speedup_batch8: f64,
    pub accepted: bool,
    pub transform: TransformSummary,
    pub session: String,
}

impl QuantizeReport {
    /// A few lines for the terminal.
    pub fn text(&self) -> String {
        let row = |name: &str, f: &ModelFigures| {
            format!(
                "  {name:<10} {:>8.2} MB  top-1 {:>6.2} %  {:>8.1} img/s @1  {:>8.1} img/s @8\n",
                f.bytes as f64 / 1e6,
                f.top1,
                f.images_per_s_batch1,
                f.images_per_s_batch8
            )
        };
        format!(
            "{} on {} ({} images, {}; {})\n{}{}  top-1 drop {:.2} points (max {:.2}), agreement {:.2} %, logit error mean {:.4} max {:.4}\n  speed-up {:.2}x @1, {:.2}x @8, size {:.2}x smaller: {}\n",
            self.optimisation,
            self.test_set,
            self.test_images,
            if self.labelled {
                "labelled"
            } else {
                "no labels: top-1 = agreement with the float model"
            },
            self.session,
            row("float", &self.parent),
            row("candidate", &self.candidate),
            self.top1_drop,
            self.max_accuracy_drop,
            self.agreement,
            self.mean_abs_logit_error,
            self.max_abs_logit_error,
            self.speedup_batch1,
            self.speedup_batch8,
            self.parent.bytes as f64 / self.candidate.bytes.max(1) as f64,
            if self.accepted {
                "accepted"
            } else {
                "REJECTED"
            },
        )
    }
}

/// Evaluates the candidate against its parent on `test` (top-1, logit error, and throughput
/// at batch 1 and 8 measured interleaved with the same session options).
pub fn evaluate(
    env: &Environment,
    parent: &ModelProto,
    candidate: &ModelProto,
    summary: TransformSummary,
    test: &EvalSet,
    opts: &QuantizeOptions,
) -> Result<QuantizeReport, QuantizeError> {
    if test.images.is_empty() {
        return Err(QuantizeError::NotAModel("the test set is empty".into()));
    }
    check_images(parent, &test.images)?;
    let (pb, cb) = (parent.to_bytes(), candidate.to_bytes());
    let mut ps = evaluate::session(env, &pb, &opts.session)?;
    let mut cs = evaluate::session(env, &cb, &opts.session)?;
    let batch = test.images.batch_size_for(parent);
    let pl = evaluate::logits(&mut ps, &test.images, batch)?;
    let cl = evaluate::logits(&mut cs, &test.images, batch)?;
    let n = test.images.len();
    let classes = pl.len() / n.max(1);
    if cl.len() != pl.len() || classes == 0 {
        return Err(QuantizeError::Runtime(format!(
            "the candidate gives {} scores for {n} images, the parent {}",
            cl.len(),
            pl.len()
        )));
    }
    let (pp, cp) = (evaluate::top1(&pl, classes), evaluate::top1(&cl, classes));
    let agreement = evaluate::accuracy(&cp, &pp);
    let (ptop, ctop) = match &test.labels {
        Some(labels) => (
            evaluate::accuracy(&pp, labels),
            evaluate::accuracy(&cp, labels),
        ),
        None => (100.0, agreement),
    };
    let diffs: Vec<f64> = pl
        .iter()
        .zip(&cl)
        .map(|(a, b)| f64::from((a - b).abs()))
        .collect();
    let mean_err = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
    let max_err = diffs.iter().copied().fold(0.0, f64::max);
    // A model with a fixed batch dimension is measured at that size.
    let fixed = input_dims(parent)?.1.first().copied().flatten();
    let mut rates = Vec::new();
    for b in [1usize, 8] {
        let b = fixed.unwrap_or(b);
        rates.push(evaluate::interleaved_throughput(
            &mut [&mut ps, &mut cs],
            &test.images,
            b,
            opts.throughput_rounds,
            opts.round_time,
        )?);
    }
    let drop = ptop - ctop;
    Ok(QuantizeReport {
        optimisation: opts.description(),
        test_set: test.description.clone(),
        test_images: n,
        labelled: test.labels.is_some(),
        parent: ModelFigures {
            bytes: pb.len(),
            top1: ptop,
            images_per_s_batch1: rates[0][0],
            images_per_s_batch8: rates[1][0],
        },
        candidate: ModelFigures {
            bytes: cb.len(),
            top1: ctop,
            images_per_s_batch1: rates[0][1],
            images_per_s_batch8: rates[1][1],
        },
        top1_drop: drop,
        max_accuracy_drop: opts.max_accuracy_drop,
        agreement,
        mean_abs_logit_error: mean_err,
        max_abs_logit_error: max_err,
        speedup_batch1: rates[0][1] / rates[0][0].max(f64::MIN_POSITIVE),
        speedup_batch8: rates[1][1] / rates[1][0].max(f64::MIN_POSITIVE),
        accepted: drop <= opts.max_accuracy_drop,
        transform: summary,
        session: format!(
            "ORT CPU, {} intra-op threads, spinning {}",
            opts.session.threads,
            if opts.session.spinning { "on" } else { "off" }
        ),
    })
}

/// Sets `vision.model.optimisation` and records how the model was quantized.
pub fn describe(
    model: &mut ModelProto,
    report: &QuantizeReport,
    parent_name: &str,
) -> Result<(), QuantizeError> {
    let entry = model
        .metadata_props
        .iter_mut()
        .find(|e| e.key.as_deref() == Some(contract::KEY_MODEL))
        .ok_or_else(|| QuantizeError::NoContract {
            missing: contract::KEY_MODEL.into(),
        })?;
    let mut info: serde_json::Value = serde_json::from_str(entry.value.as_deref().unwrap_or("{}"))?;
    let obj = info
        .as_object_mut()
        .ok_or_else(|| QuantizeError::NoContract {
            missing: format!("{} (as a JSON object)", contract::KEY_MODEL),
        })?;
    obj.insert(
        "optimisation".into(),
        serde_json::Value::String(report.optimisation.clone()),
    );
    obj.insert(
        "quantization".into(),
        serde_json::json!({
            "parent": parent_name,
            "calibration_images": report.transform.calibration_images,
            "test_set": report.test_set,
            "test_images": report.test_images,
            "labelled": report.labelled,
            "parent_top1": report.parent.top1,
            "top1": report.candidate.top1,
        }),
    );
    entry.value = Some(serde_json::to_string(&info)?);
    Ok(())
}

/// Where a rejected candidate is kept: `M.int8.onnx` → `M.int8.rejected.onnx`.
pub fn rejected_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.rejected.onnx"))
}

/// The JSON report next to the output: `M.int8.onnx` → `M.int8.report.json`.
pub fn report_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.report.json"))
}

/// Writes the candidate to `out` when the gate accepted it, else to [`rejected_path`] (and
/// removes a stale `out`); writes the JSON report either way. Returns the report's path.
pub fn write_outcome(
    candidate: &ModelProto,
    report: &QuantizeReport,
    out: &Path,
) -> Result<PathBuf, QuantizeError> {
    let write_err = |path: &Path, e: &dyn std::fmt::Display| QuantizeError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let target = if report.accepted {
        out.to_path_buf()
    } else {
        rejected_path(out)
    };
    crate::onnx::graph::write(candidate, &target).map_err(|e| write_err(&target, &e))?;
    let json = report_path(out);
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .map_err(|e| write_err(&json, &e))?;
    if !report.accepted {
        if out.exists() {
            std::fs::remove_file(out).map_err(|e| write_err(out, &e))?;
        }
        return Err(QuantizeError::Rejected {
            drop: report.top1_drop,
            max: report.max_accuracy_drop,
            parent: report.parent.top1,
            candidate: report.candidate.top1,
            kept: target.display().to_string(),
        });
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_flags_pick_the_defaults() {
        let vnni = CpuInt8::from_cpuinfo("processor : 0\nflags : fpu avx2 avx512f avx512_vnni\n");
        assert_eq!(vnni.defaults(), (Activations::U8, false));
        let avx2 = CpuInt8::from_cpuinfo("flags : fpu avx2 fma\n");
        assert_eq!(avx2.defaults(), (Activations::U8, true));
        assert!(CpuInt8::from_cpuinfo("flags : avx_vnni").vnni);
    }

    #[test]
    fn batches_pad_with_real_images() {
        let images = Images {
            data: (0..10).map(|v| v as f32).collect(),
            dims: vec![2],
        };
        let b: Vec<_> = images.padded_batches(4).collect();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].0, [8.0, 9.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!((b[1].1.clone(), b[1].2), (vec![4, 2], 1));
    }

    #[test]
    fn output_names() {
        let out = Path::new("models/m.int8.onnx");
        assert_eq!(rejected_path(out), Path::new("models/m.int8.rejected.onnx"));
        assert_eq!(report_path(out), Path::new("models/m.int8.report.json"));
    }
}
