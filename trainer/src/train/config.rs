//! [`TrainConfig`]: one run's every setting, read from a TOML recipe (`--config FILE`,
//! models/recipes/), overridden by CLI flags, and written back as the run's `config.toml`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::fit::{EarlyStopping, FitConfig};
use super::loss::LossConfig;
use super::optim::OptimizerConfig;
use super::schedule::ScheduleConfig;
use crate::data::AugmentConfig;

/// Which network a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// The small residual CNN from scratch (`model::cnn`).
    Cnn,
    /// EfficientNet-Lite0 with the ImageNet weights (`model::efficientnet`), transfer learning.
    EfficientnetLite0,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Cnn => "cnn",
            Arch::EfficientnetLite0 => "efficientnet-lite0",
        }
    }
}

/// The CNN's shape (input channels and classes come from the data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CnnShape {
    pub widths: Vec<usize>,
    pub blocks_per_stage: usize,
    /// 1 keeps the input resolution in the first stage, 2 halves it in the stem.
    pub stem_stride: usize,
}

impl Default for CnnShape {
    fn default() -> Self {
        let d = crate::model::cnn::SmallCnnConfig::default();
        Self {
            widths: d.widths,
            blocks_per_stage: d.blocks_per_stage,
            stem_stride: d.stem_stride,
        }
    }
}

/// The second phase of transfer learning: unfreeze the last blocks of the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Backbone blocks (from the end) to unfreeze after the head phase; 0 = head only.
    pub blocks: usize,
    pub epochs: usize,
    /// The fine-tuning LR is the head phase's LR times this.
    pub lr_factor: f64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            blocks: 0,
            epochs: 0,
            lr_factor: 0.1,
        }
    }
}

/// A whole run. Every field has a default, so a recipe only names what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrainConfig {
    /// Data set: `fashion-mnist`, `fashion-mnist:DIR`, `folder:PATH`, `csv:PATH`.
    pub data: String,
    /// Extra labelled images merged into `data` (`folder:PATH`, e.g. frames visionclassify
    /// captured and a person relabelled): split with the run's fractions and seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_data: Option<String>,
    /// Draw each epoch's training images with replacement, weight 1 / (images of the class).
    pub balanced_sampler: bool,
    pub arch: Arch,
    /// One seed for everything: weights, dropout, data order, augmentation, splits.
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Share of the training images held out for validation (early stopping, best epoch).
    pub val_fraction: f64,
    /// Share held out for testing when the data set has no test set of its own.
    pub test_fraction: f64,
    /// Train on at most this many images per class (quick runs, tests); 0 = all.
    pub train_per_class: usize,
    /// Model input side in pixels; 0 = the data's own size (CNN) or 224 (EfficientNet).
    pub image_size: usize,
    /// Dropout before the classifier head.
    pub dropout: f64,
    /// Augmentation strength: `augment` is scaled by it (`AugmentConfig::scaled`; 0 = none,
    /// 1 = `augment` as written, more = stronger).
    pub augment_strength: f64,
    /// The augmentation at strength 1 (missing keys take the data layer's defaults).
    pub augment: AugmentConfig,
    pub cnn: CnnShape,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub loss: LossConfig,
    pub early_stopping: EarlyStopping,
    pub finetune: FinetuneConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data: "fashion-mnist".into(),
            extra_data: None,
            balanced_sampler: false,
            arch: Arch::Cnn,
            seed: 42,
            epochs: 10,
            batch_size: 128,
            val_fraction: 0.1,
            test_fraction: 0.2,
            train_per_class: 0,
            image_size: 0,
            dropout: 0.2,
            augment_strength: 0.0,
            augment: AugmentConfig::default(),
            cnn: CnnShape::default(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            loss: LossConfig::default(),
            early_stopping: EarlyStopping::default(),
            finetune: FinetuneConfig::default(),
        }
    }
}

impl TrainConfig {
    /// The defaults of `vision-trainer transfer`: EfficientNet-Lite0, AdamW on the new head.
    pub fn transfer_default() -> Self {
        let mut c = Self {
            arch: Arch::EfficientnetLite0,
            epochs: 3,
            batch_size: 32,
            ..Self::default()
        };
        c.optimizer.kind = super::optim::OptimizerKind::Adamw;
        c.optimizer.lr = 0.003;
        c.optimizer.weight_decay = 1e-4;
        c.schedule.warmup_epochs = 0.0;
        c
    }

    /// Reads a TOML recipe; unknown keys are errors (a typo must not be silently ignored).
    pub fn from_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| TrainError::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string_pretty(self).map_err(|e| TrainError::Config(e.to_string()))
    }

    /// Checks the values a run cannot start with.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch-size must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.val_fraction) || !(0.0..1.0).contains(&self.test_fraction) {
            return bad(format!(
                "val-fraction ({}) and test-fraction ({}) must be in [0, 1)",
                self.val_fraction, self.test_fraction
            ));
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return bad(format!("lr must be > 0, got {}", self.optimizer.lr));
        }
        if self.optimizer.weight_decay < 0.0 {
            return bad("weight-decay must be >= 0".into());
        }
        if !(0.0..1.0).contains(&self.loss.label_smoothing) {
            return bad("label-smoothing must be in [0, 1)".into());
        }
        if self.loss.focal_gamma < 0.0 {
            return bad("focal-gamma must be >= 0".into());
        }
        if self.augment_strength < 0.0 {
            return bad("augment-strength must be >= 0".into());
        }
        if let Some(a) = self.effective_augment() {
            a.validate()?;
        }
        if let Some(extra) = &self.extra_data {
            self.extra_folder(extra)?;
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// The folder of `extra_data` (only `folder:PATH` is accepted).
    pub fn extra_folder(&self, spec: &str) -> Result<std::path::PathBuf, TrainError> {
        match spec.strip_prefix("folder:") {
            Some(path) if !path.is_empty() => Ok(std::path::PathBuf::from(path)),
            _ => Err(TrainError::Config(format!(
                "extra-data must be folder:PATH (one sub-folder per class), got `{spec}`"
            ))),
        }
    }

    /// The training augmentation, `None` when the strength is 0.
    pub fn effective_augment(&self) -> Option<AugmentConfig> {
        (self.augment_strength > 0.0).then(|| self.augment.scaled(self.augment_strength as f32))
    }

    /// The loop's settings for the main (from-scratch or head) phase.
    pub fn fit_config(&self, checkpoint_dir: Option<&Path>, resume: bool) -> FitConfig {
        FitConfig {
            epochs: self.epochs,
            seed: self.seed,
            optimizer: self.optimizer,
            schedule: self.schedule,
            loss: self.loss,
            early_stopping: self.early_stopping,
            checkpoint_dir: checkpoint_dir.map(Path::to_path_buf),
            resume,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_recipe_keeps_the_other_defaults() -> Result<(), toml::de::Error> {
        let c: TrainConfig =
            toml::from_str("epochs = 3\n[optimizer]\nkind = \"adamw\"\nlr = 0.001\n")?;
        assert_eq!(c.epochs, 3);
        assert_eq!(c.optimizer.kind, super::super::OptimizerKind::Adamw);
        assert_eq!(c.optimizer.lr, 0.001);
        assert_eq!(c.optimizer.beta2, OptimizerConfig::default().beta2);
        assert_eq!(c.batch_size, TrainConfig::default().batch_size);
        Ok(())
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<TrainConfig, _> = toml::from_str("epoch = 3\n");
        let message = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn extra_data_must_be_a_folder() {
        let mut c = TrainConfig {
            extra_data: Some("csv:frames.csv".into()),
            ..TrainConfig::default()
        };
        let message = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("folder:PATH"), "{message}");
        c.extra_data = Some("folder:captured".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_written_config_reads_back_equal() -> Result<(), TrainError> {
        let mut c = TrainConfig::default();
        assert_eq!(
            toml::from_str::<TrainConfig>(&c.to_toml()?)
                .map_err(|e| TrainError::Config(e.to_string()))?,
            c
        );
        c.extra_data = Some("folder:captured".into());
        c.balanced_sampler = true;
        let back: TrainConfig =
            toml::from_str(&c.to_toml()?).map_err(|e| TrainError::Config(e.to_string()))?;
        assert_eq!(back, c);
        Ok(())
    }
}
