//! The data of a run: the data set of a [`TrainConfig`], its stratified splits and the model
//! input, shared by training, evaluation and the optimisation commands.

use std::str::FromStr;
use std::sync::Arc;

use super::TrainError;
use super::config::{Arch, TrainConfig};
use crate::data::{self, DataSpec, Dataset, ExtraPart, InputSpec, SplitFractions, Splits};
use crate::onnx::metadata::Resize;

/// A loaded dataset with its splits and the model input.
pub struct Prepared {
    pub dataset: Arc<Dataset>,
    pub splits: Splits,
    pub input: InputSpec,
    /// `balance_report` of the splits, as text (with the extra data's share of each split).
    pub balance: String,
    /// The part of each split that came from `extra_data`, when the config has some.
    pub extra: Option<ExtraPart>,
}

/// The model input for `arch` on `ds` with the config's `image_size`.
pub fn input_spec(config: &TrainConfig, ds: &Dataset) -> InputSpec {
    match config.arch {
        Arch::Cnn => {
            let native = ds.images.first().map_or([28, 28], |i| [i.height, i.width]);
            InputSpec {
                size: if config.image_size > 0 {
                    [config.image_size; 2]
                } else {
                    native
                },
                channels: ds.channels().max(1),
                resize: Resize::Stretch,
                scale: 1.0 / 255.0,
                mean: [0.5; 3],
                std: [0.5; 3],
            }
        }
        Arch::EfficientnetLite0 => {
            let pre = crate::import::preprocess(Resize::Stretch);
            let side = if config.image_size > 0 {
                config.image_size
            } else {
                crate::import::INPUT_SIZE
            };
            InputSpec {
                size: [side, side],
                channels: 3,
                resize: pre.resize,
                scale: pre.scale,
                mean: pre.mean,
                std: pre.std,
            }
        }
    }
}

/// Loads the data of `config`, splits it (stratified, seeded) and picks the model input.
pub fn prepare(config: &TrainConfig) -> Result<Prepared, TrainError> {
    let spec = DataSpec::from_str(&config.data)?;
    let mut ds = data::load(&spec)?;
    let fractions = if ds.predefined_test.is_some() {
        SplitFractions {
            train: (1.0 - config.val_fraction) as f32,
            val: config.val_fraction as f32,
            test: 0.0,
        }
    } else {
        SplitFractions {
            train: (1.0 - config.val_fraction - config.test_fraction) as f32,
            val: config.val_fraction as f32,
            test: config.test_fraction as f32,
        }
    };
    let mut splits = Splits::stratified(&ds, fractions, config.seed)?;
    if config.train_per_class > 0 {
        splits.train =
            data::subset_per_class(&ds, &splits.train, config.train_per_class, config.seed);
    }
    let extra = match &config.extra_data {
        Some(spec) => Some(data::merge_extra(
            &mut ds,
            &mut splits,
            &config.extra_folder(spec)?,
            SplitFractions {
                train: (1.0 - config.val_fraction - config.test_fraction) as f32,
                val: config.val_fraction as f32,
                test: config.test_fraction as f32,
            },
            config.seed,
        )?),
        None => None,
    };
    let input = input_spec(config, &ds);
    // Large pictures are fitted once, not in every epoch.
    let largest = ds
        .images
        .iter()
        .map(|i| i.width.max(i.height))
        .max()
        .unwrap_or(0);
    if largest > 2 * input.size[0].max(input.size[1]) {
        ds = ds.fitted(&input)?;
    }
    let mut balance = data::balance_report(&ds, &splits).to_string();
    if let Some(part) = &extra {
        balance = format!("{balance}\n{}\n", part.summary());
    }
    Ok(Prepared {
        dataset: Arc::new(ds),
        splits,
        input,
        balance,
        extra,
    })
}
