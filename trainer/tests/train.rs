//! Training on real Fashion-MNIST (Debian dataset-fashion-mnist, installed by
//! scripts/setup.sh), CI-sized: small subsets, tiny networks, one or two epochs.

use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::Context;
use burn::prelude::*;
use vision_trainer::data::{self, DataSpec, Dataset, SplitFractions, Splits};
use vision_trainer::model::cnn::SmallCnnConfig;
use vision_trainer::report::EpochRecord;
use vision_trainer::train::prepared;
use vision_trainer::train::run::{self, RunOptions};
use vision_trainer::train::source::SplitSource;
use vision_trainer::train::{EarlyStopping, FitConfig, FitObserver, StopMetric, TrainConfig, fit};

/// Fashion-MNIST, loaded once per test binary.
/// burn's seed is process-wide (`Device::seed`): trainings running at the same time in one
/// test process draw from the same generator and stop being reproducible. Each test that
/// trains holds this lock.
fn one_training_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fashion() -> anyhow::Result<&'static (Arc<Dataset>, Splits)> {
    static DATA: OnceLock<(Arc<Dataset>, Splits)> = OnceLock::new();
    if let Some(d) = DATA.get() {
        return Ok(d);
    }
    let ds = data::load(&DataSpec::from_str("fashion-mnist")?)
        .context("Fashion-MNIST is missing: run scripts/setup.sh")?;
    let splits = Splits::stratified(
        &ds,
        SplitFractions {
            train: 0.9,
            val: 0.1,
            test: 0.0,
        },
        1,
    )?;
    Ok(DATA.get_or_init(|| (Arc::new(ds), splits)))
}

fn tiny_cnn(classes: usize) -> SmallCnnConfig {
    SmallCnnConfig {
        in_channels: 1,
        classes,
        widths: vec![8, 16],
        blocks_per_stage: 1,
        dropout: 0.1,
        stem_stride: 2,
    }
}

/// `per_class` training and validation images per class.
fn sources(per_class: usize, seed: u64) -> anyhow::Result<(SplitSource, SplitSource)> {
    let (ds, splits) = fashion()?;
    let config = TrainConfig::default();
    let input = prepared::input_spec(&config, ds);
    let train = data::subset_per_class(ds, &splits.train, per_class, seed);
    let val = data::subset_per_class(ds, &splits.val, per_class / 2, seed);
    Ok((
        SplitSource::training(ds.clone(), train, 32, input.clone(), None, seed),
        SplitSource::evaluation(ds.clone(), val, 128, input),
    ))
}

fn fit_config(epochs: usize, seed: u64) -> FitConfig {
    let mut c = TrainConfig {
        epochs,
        seed,
        ..TrainConfig::default()
    }
    .fit_config(None, false);
    c.optimizer.lr = 0.05;
    c.early_stopping.patience = 0;
    c
}

/// Records every batch loss; optionally stops the run after `stop_after` epochs.
#[derive(Default)]
struct Recorder {
    losses: Vec<f64>,
    epochs: usize,
    stop_after: Option<usize>,
}

impl FitObserver for Recorder {
    fn batch_end(&mut self, _: usize, _: usize, loss: f64, _: f64, _: usize) {
        self.losses.push(loss);
    }
    fn epoch_end(&mut self, _: &EpochRecord) {
        self.epochs += 1;
    }
    fn should_stop(&mut self) -> bool {
        self.stop_after.is_some_and(|n| self.epochs >= n)
    }
}

fn train_once(
    seed: u64,
    epochs: usize,
    config: &FitConfig,
    observer: &mut Recorder,
) -> anyhow::Result<vision_trainer::train::FitOutcome<vision_trainer::model::cnn::SmallCnn>> {
    let (train, val) = sources(60, 3)?;
    let device = Device::flex().autodiff();
    device.seed(seed);
    let model = tiny_cnn(10).init(&device)?;
    let mut config = config.clone();
    config.epochs = epochs;
    Ok(fit(model, &train, Some(&val), &config, &device, observer)?)
}

#[test]
fn a_short_run_beats_chance_by_far() -> anyhow::Result<()> {
    let _training = one_training_at_a_time();
    let out = tempfile::tempdir()?;
    let config = TrainConfig {
        epochs: 3,
        train_per_class: 200,
        batch_size: 32,
        val_fraction: 0.02,
        cnn: vision_trainer::train::config::CnnShape {
            widths: vec![16, 32],
            blocks_per_stage: 1,
            stem_stride: 2,
        },
        ..TrainConfig::default()
    };
    let mut config = config;
    config.optimizer.lr = 0.1;
    config.schedule.warmup_epochs = 0.2;
    let summary = run::run(
        &config,
        &RunOptions {
            out: out.path().to_path_buf(),
            ..RunOptions::default()
        },
    )?;
    // 2000 training images, three epochs: 10 classes, chance is 10 %.
    assert_eq!(summary.test.count, 10_000);
    assert!(
        summary.test.top1 >= 0.6,
        "test top-1 {:.3} after three epochs on 2000 images",
        summary.test.top1
    );
    for file in [
        "config.toml",
        "metrics.json",
        "history.json",
        "curves.png",
        "confusion.png",
        "balance.txt",
        "summary.md",
        "model.json",
        "model.bpk",
    ] {
        assert!(out.path().join(file).is_file(), "{file} was not written");
    }
    // The written config is the effective one and reads back equal.
    let back = TrainConfig::from_file(&out.path().join("config.toml"))?;
    assert_eq!(back, config);
    Ok(())
}

#[test]
fn the_same_seed_gives_the_same_losses() -> anyhow::Result<()> {
    let _training = one_training_at_a_time();
    let config = fit_config(1, 5);
    let (mut a, mut b, mut c) = (
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    );
    train_once(5, 1, &config, &mut a)?;
    train_once(5, 1, &config, &mut b)?;
    assert!(a.losses.len() >= 10);
    assert_eq!(a.losses, b.losses);
    let other = fit_config(1, 6);
    train_once(6, 1, &other, &mut c)?;
    assert_ne!(a.losses, c.losses, "another seed must give other losses");
    Ok(())
}

#[test]
fn resuming_after_an_epoch_continues_exactly() -> anyhow::Result<()> {
    let _training = one_training_at_a_time();
    let whole_dir = tempfile::tempdir()?;
    let split_dir = tempfile::tempdir()?;
    let mut config = fit_config(2, 9);
    config.checkpoint_dir = Some(whole_dir.path().to_path_buf());
    let mut whole = Recorder::default();
    let uninterrupted = train_once(9, 2, &config, &mut whole)?;

    config.checkpoint_dir = Some(split_dir.path().to_path_buf());
    let mut first = Recorder {
        stop_after: Some(1),
        ..Recorder::default()
    };
    let stopped = train_once(9, 2, &config, &mut first)?;
    assert_eq!(stopped.history.epochs.len(), 1);
    config.resume = true;
    let mut second = Recorder::default();
    let resumed = train_once(9, 2, &config, &mut second)?;
    assert_eq!(resumed.resumed_from, 1);
    assert_eq!(second.epochs, 1, "only the second epoch runs again");

    let losses: Vec<f64> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(losses.len(), whole.losses.len());
    for (i, (a, b)) in losses.iter().zip(&whole.losses).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "batch {i}: {a} vs {b}"
        );
    }
    let (a, b) = (&resumed.history.epochs[1], &uninterrupted.history.epochs[1]);
    assert!((a.train_loss - b.train_loss).abs() < 1e-4);
    assert_eq!(a.learning_rate, b.learning_rate);
    let (va, vb) = (
        a.val_accuracy.unwrap_or(-1.0),
        b.val_accuracy.unwrap_or(-2.0),
    );
    assert!((va - vb).abs() < 1e-3, "val accuracy {va} vs {vb}");
    Ok(())
}

#[test]
fn early_stopping_stops_when_the_metric_does_not_improve() -> anyhow::Result<()> {
    let _training = one_training_at_a_time();
    let mut config = fit_config(6, 11);
    // An improvement must exceed 1.0 (accuracy can't): only the first epoch counts.
    config.early_stopping = EarlyStopping {
        metric: StopMetric::ValAccuracy,
        patience: 2,
        min_delta: 1.0,
    };
    let mut rec = Recorder::default();
    let out = train_once(11, 6, &config, &mut rec)?;
    assert!(out.stopped_early);
    assert_eq!(
        out.history.epochs.len(),
        3,
        "1 best epoch + 2 without improvement"
    );
    assert_eq!(out.best_epoch, 1);
    Ok(())
}

fn trainer(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_vision-trainer"))
        .args(args)
        .output()?)
}

#[test]
fn a_wrong_data_path_is_a_clear_error() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let run_dir = out.path().join("run");
    let missing = Path::new("/nonexistent/fashion");
    let output = trainer(&[
        "train",
        "--quiet",
        "--data",
        &format!("folder:{}", missing.display()),
        "--out",
        &run_dir.to_string_lossy(),
    ])?;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/fashion") && stderr.contains("does not exist"),
        "{stderr}"
    );
    // A typo in a flag value is refused by the CLI itself (exit code 2).
    let output = trainer(&["train", "--optimizer", "adam"])?;
    assert_eq!(output.status.code(), Some(2));
    Ok(())
}

/// The trainer's output is reproducible: two runs of one small recipe with the same seed write
/// byte-identical `model.onnx` files (weights, graph and `vision.*` metadata), and another
/// seed writes another model.
#[test]
fn the_same_seed_writes_the_same_model_onnx() -> anyhow::Result<()> {
    let _training = one_training_at_a_time();
    let recipe = |seed: u64| {
        let mut config = TrainConfig {
            epochs: 1,
            seed,
            train_per_class: 20,
            batch_size: 32,
            val_fraction: 0.02,
            cnn: vision_trainer::train::config::CnnShape {
                widths: vec![8, 16],
                blocks_per_stage: 1,
                stem_stride: 2,
            },
            ..TrainConfig::default()
        };
        config.schedule.warmup_epochs = 0.0;
        config
    };
    let model_onnx = |seed: u64| -> anyhow::Result<Vec<u8>> {
        // The run folder's name is the model's `vision.model.name`: the same in both runs.
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("fashion-cnn");
        run::run(
            &recipe(seed),
            &RunOptions {
                out: out.clone(),
                export: true,
                ..RunOptions::default()
            },
        )?;
        let path = out.join("model.onnx");
        std::fs::read(&path).with_context(|| path.display().to_string())
    };
    let first = model_onnx(11)?;
    let second = model_onnx(11)?;
    assert!(first.len() > 1000, "{} bytes", first.len());
    assert!(
        first == second,
        "two runs with seed 11 wrote different model.onnx files"
    );
    assert!(model_onnx(12)? != first, "seed 12 wrote seed 11's model");
    Ok(())
}
