//! Where a distillation teacher's logits come from: a burn model of any architecture
//! ([`ModelTeacher`]) or an exported ONNX model run by ONNX Runtime ([`OnnxTeacher`]).
//!
//! A teacher is given the dataset's raw images and prepares them for its own input (size,
//! channels, normalisation): an EfficientNet-Lite0 teacher at 224×224 RGB can teach a 28×28
//! grey student.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use gstvision::contract::ScoreKind;

use crate::data::{Image, InputContractError, InputSpec, tensor_of};
use crate::model::Classifier;
use crate::onnx::ModelProto;
use crate::onnx::metadata::{INPUT_NAME, OUTPUT_NAME};
use crate::onnx::runtime::{self, LogitsSession};
use crate::onnx::tensor_shape_proto::dimension;
use crate::onnx::type_proto;

/// Why a teacher cannot give logits.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    #[error("teacher model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("teacher model {path}: {source}")]
    Contract {
        path: PathBuf,
        source: InputContractError,
    },
    #[error("teacher input: {0}")]
    Input(#[from] crate::data::DataError),
    #[error("teacher in ONNX Runtime: {0}")]
    Runtime(#[from] runtime::VerifyError),
    #[error("teacher logits: {0}")]
    Tensor(String),
}

/// Scores raw images.
pub trait Teacher {
    /// Classes it scores.
    fn classes(&self) -> usize;
    /// What it is, for reports.
    fn describe(&self) -> String;
    /// Logits of `images` (N×classes, row-major), each prepared for the teacher's input.
    fn logits(&mut self, images: &[&Image]) -> Result<Vec<f32>, TeacherError>;
}

/// Images per teacher forward pass (bounds memory at 224×224).
const TEACHER_BATCH: usize = 32;

/// The tensor of `images` for `input`, N×C×H×W.
fn batch_tensor(images: &[&Image], input: &InputSpec) -> Result<Vec<f32>, TeacherError> {
    let mut all = Vec::with_capacity(images.len() * input.len());
    let mut one = Vec::new();
    for img in images {
        let img = if input.channels == 3 && img.channels == 1 {
            std::borrow::Cow::Owned(img.to_rgb())
        } else {
            std::borrow::Cow::Borrowed(*img)
        };
        tensor_of(&img, input, &mut one)?;
        all.extend_from_slice(&one);
    }
    Ok(all)
}

/// A burn model in inference mode with its own input.
pub struct ModelTeacher<M> {
    model: M,
    input: InputSpec,
    classes: usize,
    name: String,
}

impl<M: Classifier> ModelTeacher<M> {
    /// `model` must already be in inference mode (`Module::valid`) on a plain device.
    pub fn new(model: M, input: InputSpec, classes: usize, name: impl Into<String>) -> Self {
        Self {
            model,
            input,
            classes,
            name: name.into(),
        }
    }
}

impl<M: Classifier> Teacher for ModelTeacher<M> {
    fn classes(&self) -> usize {
        self.classes
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn logits(&mut self, images: &[&Image]) -> Result<Vec<f32>, TeacherError> {
        let device = Device::flex();
        let [h, w] = self.input.size;
        let mut out = Vec::with_capacity(images.len() * self.classes);
        for chunk in images.chunks(TEACHER_BATCH) {
            let data = batch_tensor(chunk, &self.input)?;
            let shape = [chunk.len(), self.input.channels, h, w];
            let x = Tensor::<4>::from_data(TensorData::new(data, shape), &device);
            let logits = self
                .model
                .logits(x)
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| TeacherError::Tensor(format!("{e:?}")))?;
            if logits.len() != chunk.len() * self.classes {
                return Err(TeacherError::Tensor(format!(
                    "{} gives {} scores per image, expected {}",
                    self.name,
                    logits.len() / chunk.len().max(1),
                    self.classes
                )));
            }
            out.extend(logits);
        }
        Ok(out)
    }
}

/// An exported classifier (the trainer's `input` → `logits` graphs) in ONNX Runtime, fed as
/// its `vision.preprocess` metadata says.
pub struct OnnxTeacher {
    session: LogitsSession,
    input: InputSpec,
    classes: usize,
    /// The output holds probabilities: their logarithm is used as logits.
    probabilities: bool,
    path: PathBuf,
}

impl OnnxTeacher {
    /// Loads `path` with the ONNX Runtime library `ort_library`.
    pub fn load(path: &Path, ort_library: &Path) -> Result<OnnxTeacher, TeacherError> {
        let bad = |reason: String| TeacherError::Model {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let proto =
            ModelProto::from_bytes(&bytes).map_err(|e| bad(format!("not an ONNX model ({e})")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| bad("the file has no graph".into()))?;
        let input_info = match graph.input.as_slice() {
            [one] => one,
            other => {
                return Err(bad(format!(
                    "a teacher has one image input, this model has {}",
                    other.len()
                )));
            }
        };
        if input_info.name.as_deref() != Some(INPUT_NAME)
            || !graph
                .output
                .iter()
                .any(|o| o.name.as_deref() == Some(OUTPUT_NAME))
        {
            return Err(bad(format!(
                "the input must be named `{INPUT_NAME}` and an output `{OUTPUT_NAME}`, as \
                 vision-trainer exports write them"
            )));
        }
        let dims = dims_of(input_info);
        // The element's own contract parser: a model it rejects is rejected here the same way.
        let contract_err = |source: InputContractError| TeacherError::Contract {
            path: path.to_path_buf(),
            source,
        };
        let contract = proto
            .contract()
            .map_err(|e| contract_err(InputContractError::from(e)))?;
        let input = InputSpec::from_contract(&contract.preprocess, &dims).map_err(contract_err)?;
        input.validate()?;
        if let Some(name) = contract
            .output
            .name
            .as_deref()
            .filter(|n| *n != OUTPUT_NAME)
        {
            return Err(bad(format!(
                "vision.output names `{name}`; the teacher reads `{OUTPUT_NAME}`"
            )));
        }
        let probabilities = contract.output.scores == Some(ScoreKind::Probabilities);
        let from_labels = contract.labels.as_ref().map(Vec::len);
        let from_shape = graph
            .output
            .iter()
            .find(|o| o.name.as_deref() == Some(OUTPUT_NAME))
            .and_then(|o| dims_of(o).get(1).copied().flatten());
        let classes = from_shape.or(from_labels).ok_or_else(|| {
            bad("the number of classes is neither in the output shape nor in vision.labels".into())
        })?;
        let env = runtime::load_runtime(ort_library)?;
        let session = LogitsSession::new(env, &bytes, classes)?;
        Ok(OnnxTeacher {
            session,
            input,
            classes,
            probabilities,
            path: path.to_path_buf(),
        })
    }

    /// The input the model's metadata describes.
    pub fn input(&self) -> &InputSpec {
        &self.input
    }
}

/// Fixed dimensions of a value (`None` for symbolic ones).
fn dims_of(info: &crate::onnx::ValueInfoProto) -> Vec<Option<usize>> {
    let Some(type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Vec::new();
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(v)) if v > 0 => Some(v as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Teacher for OnnxTeacher {
    fn classes(&self) -> usize {
        self.classes
    }

    fn describe(&self) -> String {
        format!("onnx:{}", self.path.display())
    }

    fn logits(&mut self, images: &[&Image]) -> Result<Vec<f32>, TeacherError> {
        let [h, w] = self.input.size;
        let mut out = Vec::with_capacity(images.len() * self.classes);
        for chunk in images.chunks(TEACHER_BATCH) {
            let data = batch_tensor(chunk, &self.input)?;
            let scores = self
                .session
                .run(&data, [chunk.len(), self.input.channels, h, w])?;
            if self.probabilities {
                out.extend(scores.into_iter().map(|p| p.max(1e-12).ln()));
            } else {
                out.extend(scores);
            }
        }
        Ok(out)
    }
}
