//! `vision-trainer prune` and `vision-trainer distill`: load, optimise, fine-tune, measure,
//! export (checked in ONNX Runtime) and write a JSON report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;

use super::cost::{Cost, cost_of};
use super::distill::{DistillConfig, DistillData, distill};
use super::prune::{PruneConfig, PruneReport, Scope, Target, prune};
use super::teacher::{ModelTeacher, OnnxTeacher, Teacher};
use crate::data::{Dataset, InputSpec, tensor_of};
use crate::model::cnn::{SmallCnn, SmallCnnConfig};
use crate::model::export::{check_against_ort, export_small_cnn};
use crate::onnx::metadata::{Metadata, ModelInfo};
use crate::report::Progress;
use crate::train::artifacts::{self, ModelCard, Network, TrainedModel};
use crate::train::fit::{self, EarlyStopping, FitConfig, Quiet, validate};
use crate::train::prepared;
use crate::train::run::ProgressObserver;
use crate::train::source::SplitSource;
use crate::train::{BatchSource, FitObserver, TrainConfig, checkpoint};

/// `vision-trainer prune`: structured L1 filter pruning of a trained small CNN, then
/// fine-tuning, then an ONNX export with fewer parameters and FLOPs.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Run folder of a trained CNN (`vision-trainer train --out`): model.json, model.bpk and
    /// config.toml (the data and splits are taken from it).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Share to remove, in (0, 1): of the parameters (default) or of the filters (--of).
    #[arg(long, default_value_t = 0.3)]
    pub fraction: f64,
    /// What --fraction is a share of.
    #[arg(long, value_enum, default_value_t = Target::Params)]
    pub of: Target,
    /// `layer`: the same share of filters in every prunable layer; `global`: one threshold
    /// over the L1 norms normalised by their layer's mean.
    #[arg(long, value_enum, default_value_t = Scope::Layer)]
    pub scope: Scope,
    /// Also prune the residual stages' shared channels (stem, shortcuts, every block's
    /// output), not only the blocks' internal channels.
    #[arg(long)]
    pub stages: bool,
    /// Fine-tuning epochs after pruning (0 = none).
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Fine-tuning learning rate (default: a tenth of the run's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fine-tune on at most this many training images per class (default: the run's).
    #[arg(long, value_name = "N")]
    pub train_per_class: Option<usize>,
    /// Output folder: model.onnx and prune.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// ONNX Runtime library for the export check (default: .deps/onnxruntime/lib/).
    #[arg(long, value_name = "PATH", env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
    /// Show per-batch progress on stderr.
    #[arg(long)]
    pub progress: bool,
}

/// `vision-trainer distill`: train a small CNN student from a teacher's soft labels.
#[derive(Debug, clap::Args)]
pub struct DistillArgs {
    /// The teacher: an exported ONNX classifier (any `vision-trainer` export), or a run
    /// folder with model.json + model.bpk (CNN or EfficientNet-Lite0).
    #[arg(long, value_name = "PATH")]
    pub teacher: PathBuf,
    /// Data set (`fashion-mnist`, `folder:PATH`, `csv:PATH`); it must have the teacher's classes.
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// The student CNN's stage widths.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    pub widths: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    pub blocks_per_stage: usize,
    /// Softmax temperature T of the soft targets.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Weight α of the soft (teacher) term; 1 − α goes to the labels.
    #[arg(long, default_value_t = 0.7)]
    pub alpha: f64,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Train on at most this many images per class (0 = all).
    #[arg(long, default_value_t = 0)]
    pub train_per_class: usize,
    /// Augmentation strength (0 = off: the teacher's logits are computed once and cached).
    #[arg(long, default_value_t = 0.0)]
    pub augment_strength: f64,
    /// Also train the same student from the labels alone (α = 0), same seed and epochs, and
    /// report both.
    #[arg(long)]
    pub baseline: bool,
    /// Output folder: model.onnx and distill.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, value_name = "PATH", env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
    #[arg(long)]
    pub progress: bool,
}

fn ort_library(given: Option<PathBuf>) -> PathBuf {
    crate::project::ort_library(given)
}

/// Test-split accuracy of `model` (evaluated in inference mode on the plain device).
fn accuracy<M: Module + crate::model::Classifier>(
    model: &M,
    test: &dyn BatchSource,
) -> anyhow::Result<f64> {
    Ok(validate(&model.valid(), test, &Device::flex())?.1)
}

/// The first `n` images of `indices` as one N×C×H×W tensor, for the export check.
fn check_images(
    ds: &Dataset,
    indices: &[usize],
    input: &InputSpec,
    n: usize,
) -> anyhow::Result<Tensor<4>> {
    let take: Vec<usize> = indices.iter().copied().take(n).collect();
    let mut all = Vec::with_capacity(take.len() * input.len());
    let mut one = Vec::new();
    for &i in &take {
        tensor_of(&ds.images[i], input, &mut one)?;
        all.extend_from_slice(&one);
    }
    let [h, w] = input.size;
    Ok(Tensor::<4>::from_data(
        TensorData::new(all, [take.len(), input.channels, h, w]),
        &Device::flex(),
    ))
}

/// One exported, ORT-checked ONNX file.
#[derive(Debug, Serialize)]
pub struct Exported {
    pub path: PathBuf,
    pub bytes: usize,
    /// Parameters in the graph (BatchNorm folded).
    pub onnx_parameters: usize,
    pub max_abs_diff: f32,
}

#[allow(clippy::too_many_arguments)]
fn export_checked(
    model: &SmallCnn,
    name: &str,
    optimisation: String,
    card_classes: &[String],
    input: &InputSpec,
    training_data: &str,
    extra: serde_json::Map<String, serde_json::Value>,
    ds: &Dataset,
    test: &[usize],
    path: &Path,
    ort: &Path,
) -> anyhow::Result<Exported> {
    let meta = Metadata {
        labels: card_classes.to_vec(),
        preprocess: input.to_preprocess(),
        model: ModelInfo {
            name: name.into(),
            version: "1".into(),
            task: "classification".into(),
            architecture: "small-cnn".into(),
            training_data: training_data.into(),
            optimisation,
            extra,
        },
    };
    let valid = model.valid();
    let summary = export_small_cnn(&valid, &meta, path)
        .with_context(|| format!("cannot export {}", path.display()))?;
    let parity = check_against_ort(&valid, path, check_images(ds, test, input, 64)?, 1e-3, ort)
        .with_context(|| {
            format!(
                "the export {} failed its ONNX Runtime check",
                path.display()
            )
        })?;
    Ok(Exported {
        path: path.to_path_buf(),
        bytes: summary.bytes,
        onnx_parameters: summary.parameters,
        max_abs_diff: parity.max_abs_diff,
    })
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// What `prune` measured (written as prune.json).
#[derive(Debug, Serialize)]
pub struct PruneSummary {
    pub run: PathBuf,
    pub pruning: PruneReport,
    pub test_images: usize,
    pub accuracy_before: f64,
    /// Right after pruning, before fine-tuning.
    pub accuracy_pruned: f64,
    pub accuracy_after: f64,
    pub finetune_epochs: usize,
    pub finetune_lr: f64,
    pub finetune_seconds: f64,
    pub export: Exported,
}

/// `vision-trainer prune`.
pub fn prune_command(args: PruneArgs) -> anyhow::Result<PruneSummary> {
    let card = ModelCard::read(&args.run.join(artifacts::MODEL_CARD))?;
    let Network::Cnn(cnn) = &card.network else {
        bail!(
            "{} holds an EfficientNet-Lite0; pruning works on the small CNN (train one with \
             `vision-trainer train --arch cnn`)",
            args.run.display()
        );
    };
    let mut config = TrainConfig::from_file(&args.run.join("config.toml"))?;
    if let Some(n) = args.train_per_class {
        config.train_per_class = n;
    }
    let prepared = prepared::prepare(&config)?;
    let ds = prepared.dataset.clone();
    if ds.classes != card.classes {
        bail!(
            "the run's model has classes [{}] but its data now has [{}]",
            card.classes.join(", "),
            ds.classes.join(", ")
        );
    }
    let input = card.input.to_spec()?;
    let device = Device::flex().autodiff();
    device.seed(config.seed);
    let model =
        checkpoint::load_model(&args.run.join(artifacts::MODEL_WEIGHTS), cnn.init(&device)?)?;

    let test =
        SplitSource::evaluation(ds.clone(), prepared.splits.test.clone(), 256, input.clone());
    let accuracy_before = accuracy(&model, &test)?;
    let prune_config = PruneConfig {
        fraction: args.fraction,
        target: args.of,
        scope: args.scope,
        stages: args.stages,
    };
    let (pruned, report) = prune(&model, &prune_config, input.size)?;
    let accuracy_pruned = accuracy(&pruned, &test)?;
    eprintln!(
        "pruned {:.1}% of the parameters ({} -> {}), {:.1}% of the FLOPs; test accuracy {:.2}% -> {:.2}% before fine-tuning",
        100.0 * report.params_removed(),
        report.before.params,
        report.after.params,
        100.0 * report.flops_removed(),
        100.0 * accuracy_before,
        100.0 * accuracy_pruned
    );

    let lr = args.lr.unwrap_or(config.optimizer.lr * 0.1);
    let started = Instant::now();
    let tuned = if args.epochs > 0 {
        let mut fit_config: FitConfig = config.fit_config(None, false);
        fit_config.epochs = args.epochs;
        fit_config.optimizer.lr = lr;
        fit_config.schedule.warmup_epochs = 0.0;
        fit_config.early_stopping = EarlyStopping {
            patience: 0,
            ..fit_config.early_stopping
        };
        let train = SplitSource::training(
            ds.clone(),
            prepared.splits.train.clone(),
            config.batch_size,
            input.clone(),
            config.effective_augment(),
            config.seed,
        );
        let val =
            SplitSource::evaluation(ds.clone(), prepared.splits.val.clone(), 256, input.clone());
        let val_ref: Option<&dyn BatchSource> = (!val.indices.is_empty()).then_some(&val);
        let mut observer: Box<dyn FitObserver> = if args.progress {
            Box::new(ProgressObserver::new(Progress::new(
                args.epochs,
                train.batch_count(),
            )))
        } else {
            Box::new(Quiet)
        };
        fit::fit(
            pruned,
            &train,
            val_ref,
            &fit_config,
            &device,
            observer.as_mut(),
        )?
        .best
    } else {
        pruned
    };
    let finetune_seconds = started.elapsed().as_secs_f64();
    let accuracy_after = accuracy(&tuned, &test)?;
    let after: Cost = cost_of(&tuned, input.size);
    debug_assert_eq!(after, report.after);

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut extra = serde_json::Map::new();
    extra.insert("parameters".into(), after.params.into());
    extra.insert("flops".into(), after.flops().into());
    extra.insert(
        "metrics".into(),
        serde_json::json!({ "test_accuracy": accuracy_after }),
    );
    let export = export_checked(
        &tuned,
        "small-cnn-pruned",
        report.optimisation(),
        &card.classes,
        &input,
        &card.training_data,
        extra,
        &ds,
        &prepared.splits.test,
        &args.out.join("model.onnx"),
        &ort_library(args.ort_library),
    )?;
    let summary = PruneSummary {
        run: args.run,
        pruning: report,
        test_images: prepared.splits.test.len(),
        accuracy_before,
        accuracy_pruned,
        accuracy_after,
        finetune_epochs: args.epochs,
        finetune_lr: lr,
        finetune_seconds,
        export,
    };
    write_json(&args.out.join("prune.json"), &summary)?;
    Ok(summary)
}

/// The student's figures in distill.json.
#[derive(Debug, Serialize)]
pub struct StudentResult {
    pub alpha: f64,
    pub test_accuracy: f64,
    pub best_epoch: usize,
    pub seconds: f64,
}

/// What `distill` measured (written as distill.json).
#[derive(Debug, Serialize)]
pub struct DistillSummary {
    pub teacher: String,
    pub teacher_test_accuracy: f64,
    pub teacher_seconds: f64,
    pub student: SmallCnnConfig,
    pub student_cost: Cost,
    pub temperature: f64,
    pub epochs: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub distilled: StudentResult,
    /// The same student from the labels alone (`--baseline`).
    pub baseline: Option<StudentResult>,
    pub export: Exported,
}

/// Loads `--teacher`: an ONNX file or a run folder.
fn load_teacher(path: &Path, ort: &Path) -> anyhow::Result<Box<dyn Teacher>> {
    if path.is_dir() {
        let card = ModelCard::read(&path.join(artifacts::MODEL_CARD))?;
        let input = card.input.to_spec()?;
        let classes = card.classes.len();
        let name = format!("run:{}", path.display());
        return Ok(
            match TrainedModel::load(&card, &path.join(artifacts::MODEL_WEIGHTS))? {
                TrainedModel::Cnn(m) => Box::new(ModelTeacher::new(m, input, classes, name)),
                TrainedModel::Effnet(m) => Box::new(ModelTeacher::new(m, input, classes, name)),
            },
        );
    }
    Ok(Box::new(OnnxTeacher::load(path, ort)?))
}

/// Accuracy of a teacher on some images.
fn teacher_accuracy(
    teacher: &mut dyn Teacher,
    ds: &Dataset,
    indices: &[usize],
) -> anyhow::Result<f64> {
    let k = teacher.classes();
    let mut right = 0;
    for chunk in indices.chunks(256) {
        let images: Vec<_> = chunk.iter().map(|&i| &ds.images[i]).collect();
        let logits = teacher.logits(&images)?;
        let labels: Vec<usize> = chunk.iter().map(|&i| ds.labels[i]).collect();
        right += fit::correct(&logits[..labels.len() * k], &labels);
    }
    Ok(right as f64 / indices.len().max(1) as f64)
}

/// `vision-trainer distill`.
pub fn distill_command(args: DistillArgs) -> anyhow::Result<DistillSummary> {
    let ort = ort_library(args.ort_library.clone());
    let mut teacher = load_teacher(&args.teacher, &ort)
        .with_context(|| format!("cannot load the teacher {}", args.teacher.display()))?;
    let config = TrainConfig {
        data: args.data.clone(),
        seed: args.seed,
        epochs: args.epochs,
        batch_size: args.batch_size,
        train_per_class: args.train_per_class,
        augment_strength: args.augment_strength,
        ..TrainConfig::default()
    };
    let prepared = prepared::prepare(&config)?;
    let ds = prepared.dataset.clone();
    let input = prepared.input.clone();
    let student_config = SmallCnnConfig {
        in_channels: input.channels,
        classes: ds.num_classes(),
        widths: args.widths.clone(),
        blocks_per_stage: args.blocks_per_stage,
        ..SmallCnnConfig::default()
    };
    student_config.validate()?;
    let mut distill_config = DistillConfig {
        temperature: args.temperature,
        alpha: args.alpha,
        epochs: args.epochs,
        batch_size: args.batch_size,
        seed: args.seed,
        optimizer: config.optimizer,
        schedule: config.schedule,
        augment: config.effective_augment(),
    };
    distill_config.optimizer.lr = args.lr;
    distill_config.validate()?;
    let data = DistillData {
        dataset: ds.clone(),
        train: prepared.splits.train.clone(),
        val: prepared.splits.val.clone(),
        input: input.clone(),
    };
    let test =
        SplitSource::evaluation(ds.clone(), prepared.splits.test.clone(), 256, input.clone());
    let device = Device::flex().autodiff();
    let observer = |batches: usize| -> Box<dyn FitObserver> {
        if args.progress {
            Box::new(ProgressObserver::new(Progress::new(args.epochs, batches)))
        } else {
            Box::new(Quiet)
        }
    };
    let steps = data.train.len() / args.batch_size.max(1);

    let teacher_test_accuracy = teacher_accuracy(teacher.as_mut(), &ds, &prepared.splits.test)?;
    eprintln!(
        "teacher {}: test accuracy {:.2}%",
        teacher.describe(),
        100.0 * teacher_test_accuracy
    );
    let started = Instant::now();
    device.seed(args.seed);
    let outcome = distill(
        student_config.init(&device)?,
        Some(teacher.as_mut()),
        &data,
        &distill_config,
        &device,
        observer(steps).as_mut(),
    )?;
    let distilled = StudentResult {
        alpha: args.alpha,
        test_accuracy: accuracy(&outcome.best, &test)?,
        best_epoch: outcome.best_epoch,
        seconds: started.elapsed().as_secs_f64(),
    };
    eprintln!(
        "distilled student: test accuracy {:.2}%",
        100.0 * distilled.test_accuracy
    );
    let baseline = if args.baseline {
        let started = Instant::now();
        device.seed(args.seed);
        let plain = DistillConfig {
            alpha: 0.0,
            ..distill_config.clone()
        };
        let out = distill(
            student_config.init(&device)?,
            None,
            &data,
            &plain,
            &device,
            observer(steps).as_mut(),
        )?;
        let r = StudentResult {
            alpha: 0.0,
            test_accuracy: accuracy(&out.best, &test)?,
            best_epoch: out.best_epoch,
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "student from labels only: test accuracy {:.2}%",
            100.0 * r.test_accuracy
        );
        Some(r)
    } else {
        None
    };

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let student_cost = cost_of(&outcome.best, input.size);
    let mut extra = serde_json::Map::new();
    extra.insert("parameters".into(), student_cost.params.into());
    extra.insert("flops".into(), student_cost.flops().into());
    extra.insert("teacher".into(), teacher.describe().into());
    extra.insert(
        "metrics".into(),
        serde_json::json!({ "test_accuracy": distilled.test_accuracy }),
    );
    let export = export_checked(
        &outcome.best,
        "small-cnn-distilled",
        format!(
            "fp32, distilled (T={}, alpha={})",
            args.temperature, args.alpha
        ),
        &ds.classes,
        &input,
        &ds.description,
        extra,
        &ds,
        &prepared.splits.test,
        &args.out.join("model.onnx"),
        &ort,
    )?;
    let summary = DistillSummary {
        teacher: teacher.describe(),
        teacher_test_accuracy,
        teacher_seconds: outcome.teacher_seconds,
        student: student_config,
        student_cost,
        temperature: args.temperature,
        epochs: args.epochs,
        train_images: data.train.len(),
        test_images: prepared.splits.test.len(),
        distilled,
        baseline,
        export,
    };
    write_json(&args.out.join("distill.json"), &summary)?;
    Ok(summary)
}
