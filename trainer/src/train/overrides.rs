//! CLI flags for every [`TrainConfig`] field: a flag that is given replaces the recipe's value
//! (`--config FILE`), one that is not leaves it.

use std::path::PathBuf;

use super::TrainError;
use super::config::{Arch, TrainConfig};
use super::fit::StopMetric;
use super::loss::LossKind;
use super::optim::OptimizerKind;
use super::schedule::ScheduleKind;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML recipe (models/recipes/*.toml); the flags below override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Data set: fashion-mnist[:DIR], folder:PATH (one sub-folder per class), csv:PATH.
    #[arg(long, help_heading = "Data")]
    pub data: Option<String>,
    /// Extra labelled images merged into --data: folder:PATH, one sub-folder per class, each
    /// named after a class of --data (e.g. frames visionclassify captured, relabelled by
    /// moving files; their .json sidecars are skipped). Split with the run's fractions and
    /// seed; its test part is held out like the base test set.
    #[arg(long, value_name = "folder:PATH", help_heading = "Data")]
    pub extra_data: Option<String>,
    /// Draw each epoch's training images with replacement, weight 1 / (images of the class
    /// in the training split): every class is seen about equally often. Same epoch length.
    #[arg(long, help_heading = "Data")]
    pub balanced_sampler: bool,
    /// Share of the training images held out for validation.
    #[arg(long, help_heading = "Data")]
    pub val_fraction: Option<f64>,
    /// Share held out for testing when the data set has no test set of its own.
    #[arg(long, help_heading = "Data")]
    pub test_fraction: Option<f64>,
    /// Train on at most N images per class (0 = all).
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub train_per_class: Option<usize>,
    /// Model input side in pixels (0 = the data's own size for the CNN, 224 for EfficientNet).
    #[arg(long, value_name = "PIXELS", help_heading = "Data")]
    pub image_size: Option<usize>,
    /// Augmentation strength (0 = none, 1 = default flips/crops/colour, > 1 stronger).
    #[arg(long, help_heading = "Data")]
    pub augment_strength: Option<f64>,

    /// Network: cnn (from scratch) or efficientnet-lite0 (transfer).
    #[arg(long, value_enum, help_heading = "Model")]
    pub arch: Option<Arch>,
    /// CNN stage widths, comma separated (e.g. 32,64,128).
    #[arg(long, value_delimiter = ',', help_heading = "Model")]
    pub widths: Option<Vec<usize>>,
    /// CNN residual blocks per stage.
    #[arg(long, help_heading = "Model")]
    pub blocks_per_stage: Option<usize>,
    /// CNN stem stride: 1 keeps the resolution, 2 halves it (about 4x faster).
    #[arg(long, help_heading = "Model")]
    pub stem_stride: Option<usize>,
    /// Dropout before the classifier head.
    #[arg(long, help_heading = "Model")]
    pub dropout: Option<f64>,

    /// Seed of weights, dropout, data order, augmentation and splits.
    #[arg(long, help_heading = "Training")]
    pub seed: Option<u64>,
    #[arg(long, help_heading = "Training")]
    pub epochs: Option<usize>,
    #[arg(long, help_heading = "Training")]
    pub batch_size: Option<usize>,
    #[arg(long, value_enum, help_heading = "Optimiser")]
    pub optimizer: Option<OptimizerKind>,
    /// Base learning rate.
    #[arg(long, help_heading = "Optimiser")]
    pub lr: Option<f64>,
    #[arg(long, help_heading = "Optimiser")]
    pub momentum: Option<f64>,
    /// Nesterov momentum (SGD): true or false.
    #[arg(long, value_name = "BOOL", help_heading = "Optimiser")]
    pub nesterov: Option<bool>,
    #[arg(long, help_heading = "Optimiser")]
    pub weight_decay: Option<f64>,
    #[arg(long, help_heading = "Optimiser")]
    pub beta1: Option<f64>,
    #[arg(long, help_heading = "Optimiser")]
    pub beta2: Option<f64>,
    /// Clip each gradient's norm to this value (0 = off).
    #[arg(long, help_heading = "Optimiser")]
    pub grad_clip_norm: Option<f64>,

    #[arg(long, value_enum, help_heading = "Schedule")]
    pub schedule: Option<ScheduleKind>,
    /// Epochs of linear LR warm-up (fractions allowed).
    #[arg(long, help_heading = "Schedule")]
    pub warmup_epochs: Option<f64>,
    /// Warm-up starts at lr × this.
    #[arg(long, help_heading = "Schedule")]
    pub warmup_start_factor: Option<f64>,
    /// Step decay: epochs between decays.
    #[arg(long, help_heading = "Schedule")]
    pub step_epochs: Option<f64>,
    /// Step decay: factor per decay.
    #[arg(long, help_heading = "Schedule")]
    pub gamma: Option<f64>,
    /// Cosine end / cyclical low end, as a fraction of lr.
    #[arg(long, help_heading = "Schedule")]
    pub min_factor: Option<f64>,
    /// Cyclical: epochs of one triangle.
    #[arg(long, help_heading = "Schedule")]
    pub cycle_epochs: Option<f64>,

    #[arg(long, value_enum, help_heading = "Loss")]
    pub loss: Option<LossKind>,
    #[arg(long, help_heading = "Loss")]
    pub label_smoothing: Option<f64>,
    #[arg(long, help_heading = "Loss")]
    pub focal_gamma: Option<f64>,

    /// Validation metric for early stopping and the best checkpoint.
    #[arg(long, value_enum, help_heading = "Early stopping")]
    pub early_stop_metric: Option<StopMetric>,
    /// Epochs without improvement before stopping (0 = never).
    #[arg(long, help_heading = "Early stopping")]
    pub patience: Option<usize>,
    #[arg(long, help_heading = "Early stopping")]
    pub min_delta: Option<f64>,

    /// Transfer: backbone blocks (from the end) to unfreeze after the head phase.
    #[arg(long, help_heading = "Transfer")]
    pub finetune_blocks: Option<usize>,
    /// Transfer: epochs of the fine-tuning phase.
    #[arg(long, help_heading = "Transfer")]
    pub finetune_epochs: Option<usize>,
    /// Transfer: fine-tuning LR = head LR × this.
    #[arg(long, help_heading = "Transfer")]
    pub finetune_lr_factor: Option<f64>,
}

fn set<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}

impl ConfigArgs {
    /// The recipe (or the defaults) with the given flags applied, validated.
    pub fn resolve(&self, defaults: TrainConfig) -> Result<TrainConfig, TrainError> {
        let mut c = match &self.config {
            Some(path) => TrainConfig::from_file(path)?,
            None => defaults,
        };
        self.apply(&mut c);
        c.validate()?;
        Ok(c)
    }

    pub fn apply(&self, c: &mut TrainConfig) {
        set(&mut c.data, &self.data);
        if self.extra_data.is_some() {
            c.extra_data.clone_from(&self.extra_data);
        }
        if self.balanced_sampler {
            c.balanced_sampler = true;
        }
        set(&mut c.val_fraction, &self.val_fraction);
        set(&mut c.test_fraction, &self.test_fraction);
        set(&mut c.train_per_class, &self.train_per_class);
        set(&mut c.image_size, &self.image_size);
        set(&mut c.augment_strength, &self.augment_strength);
        set(&mut c.arch, &self.arch);
        set(&mut c.cnn.widths, &self.widths);
        set(&mut c.cnn.blocks_per_stage, &self.blocks_per_stage);
        set(&mut c.cnn.stem_stride, &self.stem_stride);
        set(&mut c.dropout, &self.dropout);
        set(&mut c.seed, &self.seed);
        set(&mut c.epochs, &self.epochs);
        set(&mut c.batch_size, &self.batch_size);
        set(&mut c.optimizer.kind, &self.optimizer);
        set(&mut c.optimizer.lr, &self.lr);
        set(&mut c.optimizer.momentum, &self.momentum);
        set(&mut c.optimizer.nesterov, &self.nesterov);
        set(&mut c.optimizer.weight_decay, &self.weight_decay);
        set(&mut c.optimizer.beta1, &self.beta1);
        set(&mut c.optimizer.beta2, &self.beta2);
        set(&mut c.optimizer.grad_clip_norm, &self.grad_clip_norm);
        set(&mut c.schedule.kind, &self.schedule);
        set(&mut c.schedule.warmup_epochs, &self.warmup_epochs);
        set(
            &mut c.schedule.warmup_start_factor,
            &self.warmup_start_factor,
        );
        set(&mut c.schedule.step_epochs, &self.step_epochs);
        set(&mut c.schedule.gamma, &self.gamma);
        set(&mut c.schedule.min_factor, &self.min_factor);
        set(&mut c.schedule.cycle_epochs, &self.cycle_epochs);
        set(&mut c.loss.kind, &self.loss);
        set(&mut c.loss.label_smoothing, &self.label_smoothing);
        set(&mut c.loss.focal_gamma, &self.focal_gamma);
        set(&mut c.early_stopping.metric, &self.early_stop_metric);
        set(&mut c.early_stopping.patience, &self.patience);
        set(&mut c.early_stopping.min_delta, &self.min_delta);
        set(&mut c.finetune.blocks, &self.finetune_blocks);
        set(&mut c.finetune.epochs, &self.finetune_epochs);
        set(&mut c.finetune.lr_factor, &self.finetune_lr_factor);
    }
}
