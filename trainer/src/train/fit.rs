//! The training loop: per-step LR schedule, per-epoch validation, early stopping, best and
//! resumable checkpoints, reproducible from one seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, TrainState};
use super::loss::{LossConfig, LossKind};
use super::optim::OptimizerConfig;
use super::schedule::{LrSchedule, ScheduleConfig};
use super::{BatchSource, TrainError};
use crate::data::Batch;
use crate::model::Classifier;
use crate::report::{EpochRecord, History, Metric};

/// Early stopping on a validation metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct EarlyStopping {
    /// `val-accuracy` or `val-loss` (also decides which epoch is "best").
    pub metric: StopMetric,
    /// Stop after this many epochs without improvement (0 = never stop early).
    pub patience: usize,
    /// An improvement smaller than this does not count.
    pub min_delta: f64,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            metric: StopMetric::ValAccuracy,
            patience: 5,
            min_delta: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StopMetric {
    ValAccuracy,
    ValLoss,
}

impl StopMetric {
    pub fn metric(self) -> Metric {
        match self {
            StopMetric::ValAccuracy => Metric::ValAccuracy,
            StopMetric::ValLoss => Metric::ValLoss,
        }
    }
}

/// Everything the loop needs besides the model and the data.
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    pub epochs: usize,
    pub seed: u64,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub loss: LossConfig,
    pub early_stopping: EarlyStopping,
    /// Folder for `last/` (resumable: model, optimiser, state) and `best/` (model) checkpoints;
    /// `None` keeps them in memory only.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from `checkpoint_dir/last` when it exists.
    pub resume: bool,
}

/// What `fit` hands back.
#[derive(Debug)]
pub struct FitOutcome<M> {
    /// The model after the epoch with the best validation metric (the last epoch when there
    /// is no validation set).
    pub best: M,
    pub best_epoch: usize,
    /// The model after the last epoch that ran.
    pub last: M,
    pub history: History,
    /// True when early stopping ended the run before `epochs`.
    pub stopped_early: bool,
    /// Epoch the run started from (0 unless resumed).
    pub resumed_from: usize,
    /// Images per second over the training steps of this invocation (validation excluded).
    pub train_images_per_second: f64,
}

/// Per-batch and per-epoch observations, for progress display.
pub trait FitObserver {
    fn epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    /// `loss` and `accuracy` of batch `batch` (from 1) of `images` images.
    fn batch_end(
        &mut self,
        _epoch: usize,
        _batch: usize,
        _loss: f64,
        _accuracy: f64,
        _images: usize,
    ) {
    }
    fn epoch_end(&mut self, _record: &EpochRecord) {}
    /// Asked after every epoch (after its checkpoint is written): `true` ends the run there,
    /// resumable later (an interrupted run, a time budget).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// Does nothing (tests, search trials).
pub struct Quiet;
impl FitObserver for Quiet {}

/// A seed for epoch `epoch` of a run seeded with `seed` (dropout masks and the data order of
/// an epoch depend only on these two, so a resumed run continues exactly).
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    // SplitMix64 finaliser of seed + epoch.
    let mut z = seed.wrapping_add((epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn batch_tensors(batch: Batch, device: &Device) -> (Tensor<4>, Tensor<2>, Vec<usize>) {
    let n = batch.shape[0];
    let images = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
    let targets =
        Tensor::<2>::from_data(TensorData::new(batch.targets, [n, batch.classes]), device);
    (images, targets, batch.labels)
}

/// Number of rows whose arg-max is the label.
pub fn correct(scores: &[f32], labels: &[usize]) -> usize {
    if labels.is_empty() {
        return 0;
    }
    let k = scores.len() / labels.len();
    scores
        .chunks(k.max(1))
        .zip(labels)
        .filter(|(row, label)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv { (i, v) } else { (bi, bv) }
                })
                .0;
            best == **label
        })
        .count()
}

fn to_vec(t: Tensor<2>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Tensor(format!("{e:?}")))
}

fn to_scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

/// Loss (plain cross-entropy on the batches' targets) and accuracy of `model` on `data`,
/// in inference mode (`model` should come from `Module::valid`).
pub fn validate<M: Module + Classifier>(
    model: &M,
    data: &dyn BatchSource,
    device: &Device,
) -> Result<(f64, f64), TrainError> {
    let (mut loss_sum, mut right, mut n) = (0.0, 0usize, 0usize);
    for batch in data.batches(0)? {
        let (images, targets, labels) = batch_tensors(batch?, device);
        let logits = model.logits(images);
        let loss = LossConfig {
            kind: LossKind::CrossEntropy,
            label_smoothing: 0.0,
            focal_gamma: 0.0,
        }
        .loss(logits.clone(), targets);
        loss_sum += to_scalar(loss) * labels.len() as f64;
        right += correct(&to_vec(logits)?, &labels);
        n += labels.len();
    }
    if n == 0 {
        return Err(TrainError::EmptySplit("validation"));
    }
    Ok((loss_sum / n as f64, right as f64 / n as f64))
}

/// Trains `model` (its parameters on `device`, an autodiff device) on `train`, validating on
/// `val` after every epoch. The caller seeds the device (`device.seed(seed)`) before building
/// the model; this function reseeds it at the start of every epoch from `config.seed`.
pub fn fit<M: Module + Classifier>(
    mut model: M,
    train: &dyn BatchSource,
    val: Option<&dyn BatchSource>,
    config: &FitConfig,
    device: &Device,
    observer: &mut dyn FitObserver,
) -> Result<FitOutcome<M>, TrainError> {
    let steps_per_epoch = train.batch_count();
    if steps_per_epoch == 0 {
        return Err(TrainError::EmptySplit("training"));
    }
    let schedule = LrSchedule::new(
        config.schedule,
        config.optimizer.lr,
        steps_per_epoch,
        config.epochs,
    );
    let mut optim: ModuleOptimizer = config.optimizer.init();
    let eval_device = Device::flex();
    let metric = config.early_stopping.metric.metric();

    let mut state = TrainState::default();
    let mut best: Option<M> = None;
    if config.resume
        && let Some(dir) = &config.checkpoint_dir
        && checkpoint::has_last(dir)
    {
        let (m, o, s) = checkpoint::load_last(dir, model, optim)?;
        model = m;
        optim = o;
        state = s;
        if state.seed != config.seed {
            return Err(TrainError::ResumeMismatch(format!(
                "the checkpoint was trained with seed {}, this run has seed {}",
                state.seed, config.seed
            )));
        }
        if state.steps_per_epoch != steps_per_epoch {
            return Err(TrainError::ResumeMismatch(format!(
                "the checkpoint had {} batches per epoch, this run has {steps_per_epoch} \
                 (different data or batch size)",
                state.steps_per_epoch
            )));
        }
        best = Some(checkpoint::load_best(dir, model.clone())?);
    }
    state.seed = config.seed;
    state.steps_per_epoch = steps_per_epoch;
    let resumed_from = state.epoch;

    let mut stopped_early = state.stopped_early;
    let (mut train_images, mut train_seconds) = (0usize, 0.0f64);
    while state.epoch < config.epochs && !stopped_early {
        let epoch = state.epoch;
        let started = Instant::now();
        device.seed(epoch_seed(config.seed, epoch));
        observer.epoch_start(epoch + 1, steps_per_epoch);
        let (mut loss_sum, mut right, mut n) = (0.0, 0usize, 0usize);
        let mut lr = schedule.lr(state.step);
        for (i, batch) in train.batches(epoch)?.enumerate() {
            let (images, targets, labels) = batch_tensors(batch?, device);
            lr = schedule.lr(state.step);
            let logits = model.logits(images);
            let loss = config.loss.loss(logits.clone(), targets);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            let loss = to_scalar(loss);
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    batch: i + 1,
                    lr,
                });
            }
            let batch_right = correct(&to_vec(logits.detach())?, &labels);
            loss_sum += loss * labels.len() as f64;
            right += batch_right;
            n += labels.len();
            state.step += 1;
            observer.batch_end(
                epoch + 1,
                i + 1,
                loss,
                batch_right as f64 / labels.len().max(1) as f64,
                labels.len(),
            );
        }
        train_images += n;
        train_seconds += started.elapsed().as_secs_f64();
        let (val_loss, val_accuracy) = match val {
            Some(v) => {
                let (l, a) = validate(&model.valid(), v, &eval_device)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / n.max(1) as f64,
            train_accuracy: right as f64 / n.max(1) as f64,
            val_loss,
            val_accuracy,
            learning_rate: lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        observer.epoch_end(&record);
        let value = metric.value(&record);
        // Best model: the early-stopping metric when there is validation, else the last.
        let improved = match (value, state.best_value) {
            (None, _) => true,
            (Some(v), None) => v.is_finite(),
            (Some(v), Some(b)) => {
                let delta = config.early_stopping.min_delta;
                if metric.higher_is_better() {
                    v > b + delta
                } else {
                    v < b - delta
                }
            }
        };
        state.history.push(record);
        state.epoch += 1;
        if improved {
            state.best_value = value;
            state.best_epoch = state.epoch;
            state.bad_epochs = 0;
            best = Some(model.clone());
            if let Some(dir) = &config.checkpoint_dir {
                checkpoint::save_best(dir, &model)?;
            }
        } else {
            state.bad_epochs += 1;
            if config.early_stopping.patience > 0
                && state.bad_epochs >= config.early_stopping.patience
            {
                stopped_early = true;
            }
        }
        state.stopped_early = stopped_early;
        if let Some(dir) = &config.checkpoint_dir {
            checkpoint::save_last(dir, &model, &optim, &state)?;
        }
        if observer.should_stop() {
            break;
        }
    }

    Ok(FitOutcome {
        best: best.unwrap_or_else(|| model.clone()),
        best_epoch: state.best_epoch,
        last: model,
        history: state.history,
        stopped_early,
        resumed_from,
        train_images_per_second: if train_seconds > 0.0 {
            train_images as f64 / train_seconds
        } else {
            0.0
        },
    })
}

/// Paths inside a checkpoint folder.
pub fn best_model_path(dir: &Path) -> PathBuf {
    checkpoint::best_path(dir)
}
