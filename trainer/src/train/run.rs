//! A whole run from a [`TrainConfig`]: data (with `extra_data` merged in), splits, model
//! (fresh, ImageNet, or a run's weights with [`RunOptions::from`]), training (and for transfer
//! the fine-tuning phase), test metrics and the report folder. The retrain gate that decides
//! whether such a run's model replaces the old one is the `retrain` module, a layer above.
//!
//! ```text
//! OUT/config.toml metrics.json history.json curves.png confusion.png balance.txt summary.md
//! OUT/model.json          what network, classes and input the weights belong to
//! OUT/model.bpk           the best epoch's weights (burnpack)
//! OUT/checkpoints/        last/ (resumable) and best/ of each phase
//! OUT/model.onnx          the best model as ONNX, checked in ONNX Runtime
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;

use super::artifacts::{
    CHECKPOINTS, InputCard, MODEL_CARD, MODEL_WEIGHTS, ModelCard, Network, ONNX_MODEL, TrainedModel,
};
use super::checkpoint;
use super::config::{Arch, TrainConfig};
use super::fit::{self, FitObserver, FitOutcome};
use super::prepared::prepare;
use super::source::SplitSource;
use super::{BatchSource, TrainError};
use crate::model::cnn::SmallCnnConfig;
use crate::model::efficientnet::{EffnetClassifier, EffnetConfig};
use crate::report::{EpochRecord, History, Metrics, Progress, RunReport};

/// Shows a [`Progress`] for the loop.
pub struct ProgressObserver {
    progress: Progress,
}

impl ProgressObserver {
    pub fn new(progress: Progress) -> Self {
        Self { progress }
    }
}

impl FitObserver for ProgressObserver {
    fn epoch_start(&mut self, epoch: usize, _batches: usize) {
        self.progress.start_epoch(epoch);
    }
    fn batch_end(&mut self, _epoch: usize, batch: usize, loss: f64, accuracy: f64, images: usize) {
        self.progress.batch(batch, loss, accuracy, images);
    }
    fn epoch_end(&mut self, record: &EpochRecord) {
        self.progress.end_epoch(record);
    }
}

/// How a run is carried out (not part of the recorded configuration).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The run folder.
    pub out: PathBuf,
    /// Continue from `OUT/checkpoints` if a previous run left one there.
    pub resume: bool,
    /// Show progress on stderr.
    pub progress: bool,
    /// EfficientNet-Lite0 weights (`.pth`) for transfer; default: the project's `.deps/`.
    pub weights: Option<PathBuf>,
    /// Write `OUT/model.onnx` (checked in ONNX Runtime) after training.
    pub export: bool,
    /// ONNX Runtime library for the export check; default: the project's `.deps/`.
    pub ort_library: Option<PathBuf>,
    /// Start from this run folder's weights (`model.json` + `model.bpk`) instead of fresh or
    /// ImageNet ones: same network and input, and the data must have the same classes.
    pub from: Option<PathBuf>,
}

/// The deployed run a retrain starts from.
struct StartFrom {
    card: ModelCard,
    weights: PathBuf,
}

/// Reads `dir`'s model card and checks that it can be trained further on this data.
fn start_from(dir: &Path, arch: Arch, classes: &[String]) -> Result<StartFrom, TrainError> {
    let fail = |message: String| TrainError::FromRun {
        path: dir.to_path_buf(),
        message,
    };
    let card_path = dir.join(MODEL_CARD);
    let weights = dir.join(MODEL_WEIGHTS);
    if !card_path.is_file() || !weights.is_file() {
        return Err(fail(format!(
            "not a run folder: it needs {MODEL_CARD} and {MODEL_WEIGHTS} (written by `train` or \
             `transfer`)"
        )));
    }
    let card = ModelCard::read(&card_path)?;
    if card.classes != classes {
        return Err(fail(format!(
            "the run's model knows the classes [{}] but the data has [{}]; retraining keeps the \
             class list",
            card.classes.join(", "),
            classes.join(", ")
        )));
    }
    let held = match card.network {
        Network::Cnn(_) => Arch::Cnn,
        Network::EfficientnetLite0(_) => Arch::EfficientnetLite0,
    };
    if held != arch {
        return Err(fail(format!(
            "the run's model is a {}, this run trains a {}: use `vision-trainer {}`",
            held.name(),
            arch.name(),
            if held == Arch::Cnn {
                "train"
            } else {
                "transfer"
            }
        )));
    }
    Ok(StartFrom { card, weights })
}

/// What a finished run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub out: PathBuf,
    pub test: Metrics,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub train_seconds: f64,
    pub train_images_per_second: f64,
    /// `OUT/model.bpk` and `OUT/model.json`.
    pub weights: PathBuf,
    pub card: PathBuf,
    /// What the ONNX export wrote and how it compared in ONNX Runtime, when it ran.
    pub export: Option<String>,
}

fn observer(options: &RunOptions, epochs: usize, batches: usize) -> Box<dyn FitObserver> {
    if options.progress {
        Box::new(ProgressObserver::new(Progress::new(epochs, batches)))
    } else {
        Box::new(fit::Quiet)
    }
}

/// Trains as `config` says and writes the run folder `options.out`.
pub fn run(config: &TrainConfig, options: &RunOptions) -> Result<RunSummary, TrainError> {
    config.validate()?;
    let started = Instant::now();
    let prepared = prepare(config)?;
    let mut report = RunReport::create(&options.out)?;
    report.write_config(&config.to_toml()?)?;
    report.write_balance(&prepared.balance)?;

    let ds = &prepared.dataset;
    let classes = ds.classes.clone();
    let start = match &options.from {
        Some(dir) => Some(start_from(dir, config.arch, &classes)?),
        None => None,
    };
    // A retrain feeds the model as it was fed (its own input size and normalisation).
    let input = match &start {
        Some(s) => s.card.input.to_spec()?,
        None => prepared.input.clone(),
    };
    let mut train = SplitSource::training(
        ds.clone(),
        prepared.splits.train.clone(),
        config.batch_size,
        input.clone(),
        config.effective_augment(),
        config.seed,
    );
    if config.balanced_sampler {
        train = train.balanced();
    }
    let eval_batch = config.batch_size.max(64);
    let val = SplitSource::evaluation(
        ds.clone(),
        prepared.splits.val.clone(),
        eval_batch,
        input.clone(),
    );
    let val_ref: Option<&dyn BatchSource> = if val.indices.is_empty() {
        None
    } else {
        Some(&val)
    };
    let test = SplitSource::evaluation(
        ds.clone(),
        prepared.splits.test.clone(),
        eval_batch,
        input.clone(),
    );
    let checkpoints = options.out.join(CHECKPOINTS);
    let device = Device::flex().autodiff();
    device.seed(config.seed);

    let (network, history, best, stopped_early, best_epoch, ips) = match config.arch {
        Arch::Cnn => {
            let (cnn, model) = match &start {
                Some(StartFrom {
                    card:
                        ModelCard {
                            network: Network::Cnn(c),
                            ..
                        },
                    weights,
                }) => (
                    c.clone(),
                    checkpoint::load_model(weights, c.init(&device)?)?,
                ),
                _ => {
                    let cnn = SmallCnnConfig {
                        in_channels: input.channels,
                        classes: classes.len(),
                        widths: config.cnn.widths.clone(),
                        blocks_per_stage: config.cnn.blocks_per_stage,
                        dropout: config.dropout,
                        stem_stride: config.cnn.stem_stride,
                    };
                    let model = cnn.init(&device)?;
                    (cnn, model)
                }
            };
            let mut obs = observer(options, config.epochs, train.batch_count());
            let out = fit::fit(
                model,
                &train,
                val_ref,
                &config.fit_config(Some(&checkpoints), options.resume),
                &device,
                obs.as_mut(),
            )?;
            let FitOutcome {
                best,
                best_epoch,
                history,
                stopped_early,
                train_images_per_second,
                ..
            } = out;
            (
                Network::Cnn(cnn),
                history,
                TrainedModel::Cnn(best.valid()),
                stopped_early,
                best_epoch,
                train_images_per_second,
            )
        }
        Arch::EfficientnetLite0 => {
            let (effnet, start_weights) = match &start {
                Some(StartFrom {
                    card:
                        ModelCard {
                            network: Network::EfficientnetLite0(c),
                            ..
                        },
                    weights,
                }) => (c.clone(), Some(weights.as_path())),
                _ => (
                    EffnetConfig {
                        classes: classes.len(),
                        dropout: config.dropout,
                        ..EffnetConfig::default()
                    },
                    None,
                ),
            };
            let model = effnet_start(options, &effnet, start_weights, &device)?;
            let (best, history, stopped_early, best_epoch, ips) = transfer(
                config,
                options,
                model,
                &train,
                val_ref,
                &checkpoints,
                &device,
            )?;
            (
                Network::EfficientnetLite0(effnet),
                history,
                TrainedModel::Effnet(best.valid()),
                stopped_early,
                best_epoch,
                ips,
            )
        }
    };
    let train_seconds = started.elapsed().as_secs_f64();

    let weights = options.out.join(MODEL_WEIGHTS);
    match &best {
        TrainedModel::Cnn(m) => checkpoint::save_model(&weights, m)?,
        TrainedModel::Effnet(m) => checkpoint::save_model(&weights, m)?,
    }
    let card = ModelCard {
        network,
        classes: classes.clone(),
        input: InputCard::from(&input),
        training_data: ds.description.clone(),
    };
    let card_path = options.out.join(MODEL_CARD);
    card.write(&card_path)?;

    let scores = best.predict(&test)?;
    let metrics = Metrics::compute(&scores, &test.labels(), &classes)?;
    report.write_history(&history)?;
    report.write_curves(&history)?;
    report.write_confusion(&metrics)?;
    let extra = serde_json::json!({
        "arch": config.arch.name(),
        "data": ds.description,
        "epochs_run": history.epochs.len(),
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "seconds": train_seconds,
        "train_images_per_second": ips,
        "train_images": prepared.splits.train.len(),
        "val_images": prepared.splits.val.len(),
        "test_images": prepared.splits.test.len(),
        "extra_images": prepared.extra.as_ref().map(|e| serde_json::json!({
            "folder": e.folder.display().to_string(),
            "train": e.splits.train.len(),
            "val": e.splits.val.len(),
            "test": e.splits.test.len(),
        })),
        "from": options.from.as_ref().map(|p| p.display().to_string()),
        "balanced_sampler": config.balanced_sampler,
    });
    report.write_metrics(&metrics, &extra)?;
    report.write_summary(&format!("{} on {}", config.arch.name(), ds.description))?;
    let export = if options.export {
        let library = crate::project::ort_library(options.ort_library.clone());
        Some(super::evaluate::export_run(
            &options.out,
            &options.out.join(ONNX_MODEL),
            &library,
        )?)
    } else {
        None
    };
    Ok(RunSummary {
        export,
        out: options.out.clone(),
        test: metrics,
        epochs_run: history.epochs.len(),
        best_epoch,
        stopped_early,
        train_seconds,
        train_images_per_second: ips,
        weights,
        card: card_path,
    })
}

type TransferOutcome = (EffnetClassifier, History, bool, usize, f64);

/// The EfficientNet a transfer run starts from: `start` (a run's `model.bpk`) when given,
/// else the ImageNet weights (`options.weights` or the project's `.deps/`).
fn effnet_start(
    options: &RunOptions,
    effnet: &EffnetConfig,
    start: Option<&Path>,
    device: &Device,
) -> Result<EffnetClassifier, TrainError> {
    if let Some(bpk) = start {
        return checkpoint::load_model(bpk, effnet.init(device)?);
    }
    let weights = match &options.weights {
        Some(w) => w.clone(),
        None => {
            crate::import::ImportOptions::project_defaults(
                &crate::project::project_root(),
                PathBuf::new(),
            )
            .weights
        }
    };
    effnet
        .pretrained(&weights, device)
        .map_err(|source| TrainError::Weights {
            path: weights.clone(),
            source,
        })
}

/// Transfer learning from `model` (see [`effnet_start`]): the backbone frozen and a new head
/// trained for `config.epochs`, then (if `config.finetune.blocks` and `.epochs` are > 0) the
/// last blocks unfrozen and everything trainable trained for `finetune.epochs` at
/// `lr × lr_factor`.
fn transfer(
    config: &TrainConfig,
    options: &RunOptions,
    model: EffnetClassifier,
    train: &SplitSource,
    val: Option<&dyn BatchSource>,
    checkpoints: &Path,
    device: &Device,
) -> Result<TransferOutcome, TrainError> {
    let model = model.freeze_backbone();
    let head_dir = checkpoints.join("head");
    let mut obs = observer(options, config.epochs, train.batch_count());
    let head = fit::fit(
        model,
        train,
        val,
        &config.fit_config(Some(&head_dir), options.resume),
        device,
        obs.as_mut(),
    )?;
    if config.finetune.blocks == 0 || config.finetune.epochs == 0 {
        return Ok((
            head.best,
            head.history,
            head.stopped_early,
            head.best_epoch,
            head.train_images_per_second,
        ));
    }
    let mut fine_config = config.fit_config(Some(&checkpoints.join("finetune")), options.resume);
    fine_config.epochs = config.finetune.epochs;
    fine_config.optimizer.lr *= config.finetune.lr_factor;
    let model = head
        .best
        .clone()
        .unfreeze_last_blocks(config.finetune.blocks);
    let mut obs = observer(options, config.finetune.epochs, train.batch_count());
    let fine = fit::fit(model, train, val, &fine_config, device, obs.as_mut())?;
    let mut history = head.history;
    let offset = history.epochs.len();
    for mut r in fine.history.epochs {
        r.epoch += offset;
        history.push(r);
    }
    // The fine-tuned model wins only if validation says it is better (or there is none).
    let metric = config.early_stopping.metric.metric();
    let best_overall = history.best(metric).map(|r| r.epoch);
    let (best, best_epoch) = match best_overall {
        Some(e) if e <= offset => (head.best, head.best_epoch),
        _ => (fine.best, fine.best_epoch + offset),
    };
    Ok((
        best,
        history,
        fine.stopped_early,
        best_epoch,
        fine.train_images_per_second,
    ))
}

/// Hyper-parameter search for `base` (CNN or transfer): every trial is a fresh run on the
/// training split, scored on the validation split; writes the leaderboard into `out`.
pub fn search(
    base: &TrainConfig,
    config: &super::search::SearchConfig,
    out: &Path,
) -> Result<super::search::Leaderboard, TrainError> {
    base.validate()?;
    let prepared = prepare(base)?;
    if prepared.splits.val.is_empty() {
        return Err(TrainError::EmptySplit("validation"));
    }
    let ds = &prepared.dataset;
    let classes = ds.classes.len();
    let mut trial = |id: usize, c: &TrainConfig| -> Result<super::search::RungResult, TrainError> {
        c.validate()?;
        let started = Instant::now();
        let mut train = SplitSource::training(
            ds.clone(),
            prepared.splits.train.clone(),
            c.batch_size,
            prepared.input.clone(),
            c.effective_augment(),
            c.seed,
        );
        if c.balanced_sampler {
            train = train.balanced();
        }
        let val = SplitSource::evaluation(
            ds.clone(),
            prepared.splits.val.clone(),
            c.batch_size.max(64),
            prepared.input.clone(),
        );
        let device = Device::flex().autodiff();
        device.seed(c.seed);
        let mut fit_config = c.fit_config(None, false);
        // Every trial gets its full budget: early stopping would blur the comparison.
        fit_config.early_stopping.patience = 0;
        let history = match c.arch {
            Arch::Cnn => {
                let model = SmallCnnConfig {
                    in_channels: prepared.input.channels,
                    classes,
                    widths: c.cnn.widths.clone(),
                    blocks_per_stage: c.cnn.blocks_per_stage,
                    dropout: c.dropout,
                    stem_stride: c.cnn.stem_stride,
                }
                .init(&device)?;
                fit::fit(
                    model,
                    &train,
                    Some(&val),
                    &fit_config,
                    &device,
                    &mut fit::Quiet,
                )?
                .history
            }
            Arch::EfficientnetLite0 => {
                let options = RunOptions::default();
                let effnet = EffnetConfig {
                    classes,
                    dropout: c.dropout,
                    ..EffnetConfig::default()
                };
                let weights = match &options.weights {
                    Some(w) => w.clone(),
                    None => {
                        crate::import::ImportOptions::project_defaults(
                            &crate::project::project_root(),
                            PathBuf::new(),
                        )
                        .weights
                    }
                };
                let model = effnet
                    .pretrained(&weights, &device)
                    .map_err(|source| TrainError::Weights {
                        path: weights.clone(),
                        source,
                    })?
                    .freeze_backbone();
                fit::fit(
                    model,
                    &train,
                    Some(&val),
                    &fit_config,
                    &device,
                    &mut fit::Quiet,
                )?
                .history
            }
        };
        let metric = c.early_stopping.metric.metric();
        let best = history
            .best(metric)
            .ok_or(TrainError::EmptySplit("validation"))?;
        let result = super::search::RungResult {
            epochs: c.epochs,
            val_accuracy: best.val_accuracy.unwrap_or(0.0),
            val_loss: best.val_loss.unwrap_or(f64::INFINITY),
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "trial {id}: lr {:.4} batch {} wd {:.1e} augment {:.2}, {} epoch(s): val acc {:.4} \
             loss {:.4} ({:.0} s)",
            c.optimizer.lr,
            c.batch_size,
            c.optimizer.weight_decay,
            c.augment_strength,
            c.epochs,
            result.val_accuracy,
            result.val_loss,
            result.seconds
        );
        Ok(result)
    };
    let board = super::search::successive_halving(base, config, &mut trial, &mut |board| {
        // The leaderboard is rewritten after every rung, so an interrupted search keeps it.
        if let Err(e) = board.write(out, base) {
            eprintln!("cannot write the leaderboard: {e}");
        }
    })?;
    board.write(out, base)?;
    Ok(board)
}
