//! Evaluation of a trained run folder (burn weights) or an ONNX model on the test split, and
//! the export of a run folder's model as ONNX.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::BatchSource;
use super::TrainError;
use super::artifacts::{MODEL_CARD, MODEL_WEIGHTS, ModelCard, Network, TrainedModel};
use super::config::TrainConfig;
use super::overrides::ConfigArgs;
use super::prepared;
use super::source::SplitSource;
use crate::model::export;
use crate::onnx::metadata::{Metadata, ModelInfo};
use crate::onnx::runtime::{self, LogitsSession};
use crate::report::{Metrics, RunReport};

/// The configuration a run folder keeps (written by `report::RunReport`).
const CONFIG_FILE: &str = "config.toml";

/// What `evaluate` should look at.
#[derive(Debug, Clone)]
pub struct EvaluateRequest {
    /// A run folder, or an `.onnx` file inside one (its `model.json` gives classes and input).
    pub model: PathBuf,
    /// Where metrics.json and confusion.png go (default: the run folder).
    pub out: Option<PathBuf>,
    pub ort_library: Option<PathBuf>,
    /// Data and splits: the run's `config.toml` with these flags applied.
    pub config: ConfigArgs,
}

#[derive(Debug, Clone)]
pub struct EvaluateReport {
    pub metrics: Metrics,
    pub written: Vec<String>,
}

fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Test metrics of a run folder's `model.bpk`, or of an ONNX file run in ONNX Runtime, on the
/// test split of the run's data (same seed and fractions as in training).
pub fn evaluate(request: &EvaluateRequest) -> Result<EvaluateReport, TrainError> {
    let onnx = is_onnx(&request.model);
    let run_dir = if onnx {
        request
            .model
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        request.model.clone()
    };
    if !request.model.exists() {
        return Err(TrainError::Io {
            path: request.model.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    }
    let card_path = run_dir.join(MODEL_CARD);
    let card = ModelCard::read(&card_path)?;
    let mut args = request.config.clone();
    let saved = run_dir.join(CONFIG_FILE);
    if args.config.is_none() && saved.is_file() {
        args.config = Some(saved);
    }
    let config = args.resolve(TrainConfig::default())?;
    let prepared = prepared::prepare(&config)?;
    if prepared.dataset.classes != card.classes {
        return Err(TrainError::Config(format!(
            "the model was trained on classes [{}] but the data has [{}]",
            card.classes.join(", "),
            prepared.dataset.classes.join(", ")
        )));
    }
    let test = SplitSource::evaluation(
        prepared.dataset.clone(),
        prepared.splits.test.clone(),
        64,
        card.input.to_spec()?,
    );
    let scores = if onnx {
        let library = crate::project::ort_library(request.ort_library.clone());
        onnx_scores(&request.model, &library, card.classes.len(), &test)?
    } else {
        TrainedModel::load(&card, &run_dir.join(MODEL_WEIGHTS))?.predict(&test)?
    };
    let metrics = Metrics::compute(&scores, &test.labels(), &card.classes)?;
    let out = request.out.clone().unwrap_or(run_dir);
    let name = if onnx {
        "evaluation-onnx"
    } else {
        "evaluation"
    };
    let dir = out.join(name);
    let mut sub = RunReport::create(&dir)?;
    let extra = serde_json::json!({
        "model": request.model.display().to_string(),
        "data": prepared.dataset.description,
        "test_images": prepared.splits.test.len(),
    });
    let written = vec![
        sub.write_metrics(&metrics, &extra)?.display().to_string(),
        sub.write_confusion(&metrics)?.display().to_string(),
    ];
    Ok(EvaluateReport { metrics, written })
}

fn onnx_scores(
    model: &Path,
    library: &Path,
    classes: usize,
    source: &dyn BatchSource,
) -> Result<Vec<f32>, TrainError> {
    let bytes = std::fs::read(model).map_err(|source| TrainError::Io {
        path: model.to_path_buf(),
        source,
    })?;
    let env = runtime::load_runtime(library)?;
    let mut session = LogitsSession::new(env, &bytes, classes)?;
    let mut scores = Vec::new();
    for batch in source.batches(0)? {
        let batch = batch?;
        scores.extend(session.run(&batch.images, batch.shape)?);
    }
    Ok(scores)
}

/// Writes the run folder's best model as ONNX at `out` (vision.* metadata from model.json),
/// then checks it in ONNX Runtime against the burn forward pass on up to 64 real test
/// images; a file that fails the check is removed. Returns a one-line description.
pub fn export_run(run_dir: &Path, out: &Path, ort_library: &Path) -> Result<String, TrainError> {
    let card = ModelCard::read(&run_dir.join(MODEL_CARD))?;
    let model = TrainedModel::load(&card, &run_dir.join(MODEL_WEIGHTS))?;
    let input = card.input.to_spec()?;
    let architecture = match &card.network {
        Network::Cnn(c) => format!(
            "small residual CNN, widths {:?}, {} block(s) per stage, stem stride {}",
            c.widths, c.blocks_per_stage, c.stem_stride
        ),
        Network::EfficientnetLite0(_) => "EfficientNet-Lite0 (ImageNet backbone, new head)".into(),
    };
    let meta = Metadata {
        labels: card.classes.clone(),
        preprocess: input.to_preprocess(),
        model: ModelInfo {
            name: run_dir
                .file_name()
                .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()),
            version: env!("CARGO_PKG_VERSION").into(),
            task: "classification".into(),
            architecture,
            training_data: card.training_data.clone(),
            optimisation: "fp32".into(),
            extra: serde_json::Map::new(),
        },
    };
    let summary = match &model {
        TrainedModel::Cnn(m) => export::export_small_cnn(m, &meta, out),
        TrainedModel::Effnet(m) => export::export_effnet(m, &meta, out),
    }?;

    // Real images for the parity check: the first test images of the run's data.
    let saved = run_dir.join(CONFIG_FILE);
    let config = if saved.is_file() {
        TrainConfig::from_file(&saved)?
    } else {
        TrainConfig::default()
    };
    let prepared = prepared::prepare(&config)?;
    let take: Vec<usize> = prepared.splits.test.iter().take(64).copied().collect();
    let source = SplitSource::evaluation(prepared.dataset.clone(), take, 64, input);
    let batch = source
        .batches(0)?
        .next()
        .ok_or(TrainError::EmptySplit("test"))??;
    let images =
        Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &Device::flex());
    let parity = match &model {
        TrainedModel::Cnn(m) => export::check_against_ort(m, out, images, 1e-3, ort_library),
        TrainedModel::Effnet(m) => export::check_against_ort(m, out, images, 1e-3, ort_library),
    }?;
    Ok(format!(
        "wrote {} ({} bytes, {} parameters); ONNX Runtime vs burn on {} test images: max |diff| \
         {:.2e}, top-1 agreement {:.1} %",
        summary.path.display(),
        summary.bytes,
        summary.parameters,
        parity.images,
        parity.max_abs_diff,
        parity.top1_agreement
    ))
}
