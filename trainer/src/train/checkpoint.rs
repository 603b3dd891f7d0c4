//! Checkpoints in burnpack files (burn's `ModuleRecord` / `OptimizerRecord`), written
//! atomically (temporary file + rename) so an interrupted run never leaves a torn one.
//!
//! ```text
//! DIR/last/model.bpk       parameters + BatchNorm running statistics after the last epoch
//! DIR/last/optimizer.bpk   optimiser state (momentum / Adam moments), keyed by parameter id
//! DIR/last/state.json      epoch, step (= schedule position), seed, history, early stopping
//! DIR/best/model.bpk       parameters of the best epoch
//! ```
//! Randomness needs no state of its own: every epoch reseeds the device and the data order
//! from (seed, epoch), so resuming at an epoch boundary continues exactly.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::report::History;

/// Where a run stands after an epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished.
    pub epoch: usize,
    /// Optimiser steps taken (the LR schedule's position).
    pub step: usize,
    pub seed: u64,
    pub steps_per_epoch: usize,
    pub history: History,
    /// Best value of the early-stopping metric so far, and the epoch (from 1) it came from.
    pub best_value: Option<f64>,
    pub best_epoch: usize,
    /// Epochs since the last improvement.
    pub bad_epochs: usize,
    pub stopped_early: bool,
}

pub fn last_dir(dir: &Path) -> PathBuf {
    dir.join("last")
}

pub fn best_path(dir: &Path) -> PathBuf {
    dir.join("best").join("model.bpk")
}

pub fn has_last(dir: &Path) -> bool {
    last_dir(dir).join("state.json").is_file()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn record_err(path: &Path) -> impl FnOnce(burn::store::RecordError) -> TrainError + '_ {
    move |e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Saves a module's parameters (and BatchNorm statistics) as one burnpack file.
pub fn save_model<M: Module>(path: &Path, model: &M) -> Result<(), TrainError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(record_err(path))?;
    write_atomic(path, &bytes)
}

/// Loads parameters saved by [`save_model`] into `model` (built with the same architecture).
pub fn load_model<M: Module>(path: &Path, model: M) -> Result<M, TrainError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let record =
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(record_err(path))?;
    model.try_load_record(record).map_err(record_err(path))
}

pub fn save_best<M: Module>(dir: &Path, model: &M) -> Result<(), TrainError> {
    save_model(&best_path(dir), model)
}

pub fn load_best<M: Module>(dir: &Path, model: M) -> Result<M, TrainError> {
    load_model(&best_path(dir), model)
}

pub fn save_last<M: Module>(
    dir: &Path,
    model: &M,
    optim: &ModuleOptimizer,
    state: &TrainState,
) -> Result<(), TrainError> {
    let last = last_dir(dir);
    save_model(&last.join("model.bpk"), model)?;
    let path = last.join("optimizer.bpk");
    let bytes = optim.to_record().into_bytes().map_err(record_err(&path))?;
    write_atomic(&path, &bytes)?;
    // state.json last: its presence marks a complete checkpoint.
    let path = last.join("state.json");
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &json)
}

pub fn load_last<M: Module>(
    dir: &Path,
    model: M,
    optim: ModuleOptimizer,
) -> Result<(M, ModuleOptimizer, TrainState), TrainError> {
    let last = last_dir(dir);
    let path = last.join("state.json");
    let text = fs::read(&path).map_err(io(&path))?;
    let state: TrainState = serde_json::from_slice(&text).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let model = load_model(&last.join("model.bpk"), model)?;
    let path = last.join("optimizer.bpk");
    let bytes = fs::read(&path).map_err(io(&path))?;
    let record =
        OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(record_err(&path))?;
    Ok((model, optim.load_record(record), state))
}
