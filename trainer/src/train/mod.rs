//! Training: losses, optimisers, schedules, the loop, early stopping, checkpoints, search.
//!
//! - [`loss`]: cross-entropy on soft targets with label smoothing, focal loss.
//! - [`optim`]: SGD (momentum, Nesterov) and AdamW with weight decay.
//! - [`schedule`]: step, cosine, cyclical LR per step, with linear warm-up.
//! - [`fit`]: the loop generic over the model (`Module + Classifier`), validation in
//!   inference mode, early stopping, best/last checkpoints ([`checkpoint`]), resume.
//! - [`config`]: [`TrainConfig`], the TOML recipe (every field also a CLI flag).
//! - [`run`]: a whole run from a config: data, splits, model, fit, test metrics, report folder;
//!   optionally from a run's weights (`RunOptions::from`), with the class-balanced sampler
//!   ([`source::SplitSource::balanced`]).
//! - [`search`]: random search + successive halving over LR, batch size, weight decay and
//!   augmentation strength.

pub mod artifacts;
pub mod checkpoint;
pub mod config;
pub mod evaluate;
pub mod fit;
pub mod loss;
pub mod optim;
pub mod overrides;
pub mod prepared;
pub mod run;
pub mod schedule;
pub mod search;
pub mod source;

use std::path::PathBuf;

pub use config::{Arch, TrainConfig};
pub use fit::{EarlyStopping, FitConfig, FitObserver, FitOutcome, Quiet, StopMetric, fit};
pub use loss::{LossConfig, LossKind};
pub use optim::{OptimizerConfig, OptimizerKind};
pub use schedule::{LrSchedule, ScheduleConfig, ScheduleKind};

use crate::data::Batch;

/// Where the loop gets its batches: one pass over a split per call, in the order (and with
/// the augmentation) of that epoch.
pub trait BatchSource {
    fn batches(
        &self,
        epoch: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch, TrainError>> + '_>, TrainError>;
    /// Batches per pass.
    fn batch_count(&self) -> usize;
}

/// What can go wrong while training, evaluating or searching.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("preparing batches stopped: {0}")]
    Loader(String),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Model(#[from] crate::model::cnn::CnnConfigError),
    #[error("the {0} split is empty: use more data or other split fractions")]
    EmptySplit(&'static str),
    #[error(
        "training diverged in epoch {epoch}, batch {batch} (loss is NaN or infinite at LR \
         {lr:.3e}): lower the learning rate or add warm-up"
    )]
    Diverged { epoch: usize, batch: usize, lr: f64 },
    #[error("cannot resume: {0}")]
    ResumeMismatch(String),
    #[error("checkpoint {}: {message}", .path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration {}: {message}", .path.display())]
    ConfigFile { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("tensor data: {0}")]
    Tensor(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Runtime(#[from] crate::onnx::runtime::VerifyError),
    #[error(transparent)]
    Export(#[from] crate::onnx::graph::ExportError),
    #[error(transparent)]
    Effnet(#[from] crate::model::efficientnet::EffnetError),
    /// The packaged EfficientNet weights could not be loaded.
    #[error("{}: {source}", .path.display())]
    Weights {
        path: PathBuf,
        source: crate::model::efficientnet::EffnetError,
    },
    /// `--from RUN_DIR` cannot be continued.
    #[error("--from {}: {message}", .path.display())]
    FromRun { path: PathBuf, message: String },
    #[error("no trials")]
    NoTrials,
}
