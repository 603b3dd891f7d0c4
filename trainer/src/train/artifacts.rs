//! The artifacts of a run folder, written by `train::run` and read by `train::evaluate` and
//! `optimize`: the file names, the model card (`model.json`: which network,
//! classes and input the weights belong to) and the trained model it loads.

use std::path::Path;

use burn::prelude::*;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use super::checkpoint;
use super::{BatchSource, TrainError};
use crate::data::InputSpec;
use crate::model::Classifier;
use crate::model::cnn::{SmallCnn, SmallCnnConfig};
use crate::model::efficientnet::{EffnetClassifier, EffnetConfig};
use crate::onnx::metadata::Resize;

/// Files of a run folder besides the report's own (those are in `report::run::files`).
pub const MODEL_CARD: &str = "model.json";
pub const MODEL_WEIGHTS: &str = "model.bpk";
pub const CHECKPOINTS: &str = "checkpoints";
pub const ONNX_MODEL: &str = "model.onnx";

/// The network a weights file belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum Network {
    Cnn(SmallCnnConfig),
    EfficientnetLite0(EffnetConfig),
}

/// `InputSpec` in a serialisable form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputCard {
    pub size: [usize; 2],
    pub channels: usize,
    pub resize: String,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl From<&InputSpec> for InputCard {
    fn from(i: &InputSpec) -> Self {
        Self {
            size: i.size,
            channels: i.channels,
            resize: i
                .resize
                .to_possible_value()
                .map_or_else(|| "stretch".into(), |v| v.get_name().to_owned()),
            scale: i.scale,
            mean: i.mean,
            std: i.std,
        }
    }
}

impl InputCard {
    pub fn to_spec(&self) -> Result<InputSpec, TrainError> {
        let resize = Resize::from_str(&self.resize, true)
            .map_err(|e| TrainError::Config(format!("input resize `{}`: {e}", self.resize)))?;
        Ok(InputSpec {
            size: self.size,
            channels: self.channels,
            resize,
            scale: self.scale,
            mean: self.mean,
            std: self.std,
        })
    }
}

/// `model.json`: everything needed to rebuild the network and feed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub network: Network,
    pub classes: Vec<String>,
    pub input: InputCard,
    /// Where the training data came from (`Dataset::description`).
    pub training_data: String,
}

impl ModelCard {
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A trained network of either architecture, on a plain (inference) device.
#[derive(Debug, Clone)]
pub enum TrainedModel {
    Cnn(SmallCnn),
    Effnet(EffnetClassifier),
}

impl TrainedModel {
    /// Rebuilds the network of `card` and loads `weights` (a burnpack file) into it.
    pub fn load(card: &ModelCard, weights: &Path) -> Result<Self, TrainError> {
        let device = Device::flex();
        Ok(match &card.network {
            Network::Cnn(c) => {
                TrainedModel::Cnn(checkpoint::load_model(weights, c.init(&device)?)?.valid())
            }
            Network::EfficientnetLite0(c) => {
                let model = c.init(&device)?;
                TrainedModel::Effnet(checkpoint::load_model(weights, model)?.valid())
            }
        })
    }

    /// Scores (logits, N×K row-major) of every image of `source`, in order.
    pub fn predict(&self, source: &dyn BatchSource) -> Result<Vec<f32>, TrainError> {
        match self {
            TrainedModel::Cnn(m) => predict(m, source),
            TrainedModel::Effnet(m) => predict(m, source),
        }
    }
}

/// Logits of `model` (already in inference mode, on a plain device) for every image of
/// `source`, in order.
pub fn predict<M: Classifier>(model: &M, source: &dyn BatchSource) -> Result<Vec<f32>, TrainError> {
    let device = Device::flex();
    let mut scores = Vec::new();
    for batch in source.batches(0)? {
        let batch = batch?;
        let images = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &device);
        let logits = model.logits(images).into_data();
        scores.extend(
            logits
                .try_into_vec::<f32>()
                .map_err(|e| TrainError::Tensor(format!("{e:?}")))?,
        );
    }
    Ok(scores)
}
