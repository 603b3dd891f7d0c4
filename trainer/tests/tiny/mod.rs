//! The CI-sized set-up shared by the retrain tests: three Fashion-MNIST classes and a small
//! CNN recipe trained on a folder of them.

use std::path::Path;

use vision_trainer::train::config::CnnShape;
use vision_trainer::train::{Arch, TrainConfig};

pub const CLASSES: [usize; 3] = [1, 7, 8]; // Trouser, Sneaker, Bag

/// A small CNN on the image folder `base`: seconds per run on 2 cores.
pub fn recipe(base: &Path) -> TrainConfig {
    let mut c = TrainConfig {
        data: format!("folder:{}", base.display()),
        arch: Arch::Cnn,
        seed: 3,
        epochs: 12,
        batch_size: 32,
        val_fraction: 0.1,
        test_fraction: 0.2,
        dropout: 0.0,
        cnn: CnnShape {
            widths: vec![8, 16],
            blocks_per_stage: 1,
            stem_stride: 2,
        },
        ..TrainConfig::default()
    };
    c.optimizer.lr = 0.1;
    c.schedule.warmup_epochs = 0.2;
    c.early_stopping.patience = 0;
    c
}
