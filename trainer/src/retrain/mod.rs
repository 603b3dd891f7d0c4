//! Retraining a deployed run on frames captured in the field, with a gate.
//!
//! `train`/`transfer --from RUN_DIR --extra-data folder:CAPTURE` trains from RUN_DIR's weights
//! on the base data plus the captured (relabelled) frames, then runs the old model (RUN_DIR's
//! `model.onnx`) and the new one in ONNX Runtime on the same held-out test split (base test +
//! captured test), with the quantize gate's evaluation code (`quantize::evaluate`). The new
//! model becomes `OUT/model.onnx` only when its top-1 on the whole test split is at least the
//! old one's plus `min_gain`; otherwise it is kept as `OUT/model.rejected.onnx` and there is no
//! `OUT/model.onnx`. `OUT/retrain.json` records both models' top-1 and the decision.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::quantize::evaluate::{self, SessionOptions};
use crate::quantize::{Images, QuantizeError};
use crate::train::artifacts::{MODEL_CARD, ModelCard, ONNX_MODEL};
use crate::train::config::TrainConfig;
use crate::train::prepared::prepare;
use crate::train::run::{RunOptions, RunSummary, run};
use crate::train::source::SplitSource;
use crate::train::{BatchSource, TrainError};

/// The gate's report in the run folder.
pub const RETRAIN_REPORT: &str = "retrain.json";
/// Where a new model the gate turned down is kept.
pub const REJECTED_MODEL: &str = "model.rejected.onnx";
/// The new model while it is being judged.
const CANDIDATE_MODEL: &str = "model.candidate.onnx";
/// The old model exported from RUN_DIR's weights when RUN_DIR has no `model.onnx`.
const FROM_MODEL: &str = "from-model.onnx";

#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("evaluating in ONNX Runtime: {0}")]
    Evaluate(#[from] QuantizeError),
    #[error(transparent)]
    Runtime(#[from] crate::onnx::runtime::VerifyError),
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("retraining needs --from RUN_DIR (the deployed run to improve)")]
    NoFrom,
    #[error(
        "--out {} is the --from run folder: write the retrained run into a new folder, the old \
         model must stay as it is",
        .0.display()
    )]
    OutIsFrom(PathBuf),
    #[error("min-gain must be a finite number (a top-1 difference, e.g. 0.01), got {0}")]
    MinGain(f64),
}

/// Top-1 (fraction of images) on each part of the test split; `None` for an empty part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PartTop1 {
    /// The base data set's test images.
    pub base: Option<f64>,
    /// The captured (extra) test images.
    pub captured: Option<f64>,
    /// Both together: what the gate decides on.
    pub all: f64,
}

/// Test images in each part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PartCounts {
    pub base: usize,
    pub captured: usize,
    pub all: usize,
}

/// `OUT/retrain.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrainReport {
    pub from: PathBuf,
    pub old_model: PathBuf,
    /// `OUT/model.onnx` when accepted, else `OUT/model.rejected.onnx`.
    pub new_model: PathBuf,
    pub test_images: PartCounts,
    pub old: PartTop1,
    pub new: PartTop1,
    /// new.all − old.all.
    pub gain: f64,
    pub min_gain: f64,
    pub accepted: bool,
    /// "deployed the new model" or "kept the old model".
    pub decision: String,
}

impl RetrainReport {
    /// A few lines for the terminal.
    pub fn text(&self) -> String {
        let part = |v: Option<f64>| v.map_or_else(|| "   -  ".into(), |v| format!("{v:.4}"));
        format!(
            "retrain gate on {} test images ({} base, {} captured): top-1 base / captured / all\n  \
             old {} / {} / {:.4}  ({})\n  new {} / {} / {:.4}\n  gain {:+.4} (min {:.4}): {}\n",
            self.test_images.all,
            self.test_images.base,
            self.test_images.captured,
            part(self.old.base),
            part(self.old.captured),
            self.old.all,
            self.old_model.display(),
            part(self.new.base),
            part(self.new.captured),
            self.new.all,
            self.gain,
            self.min_gain,
            self.decision,
        )
    }
}

/// Trains as `config` says from `options.from` (required), judges the new model against the
/// old one and writes `OUT/retrain.json`; `OUT/model.onnx` only when the new model passes.
/// `options.export` is ignored: the gate decides on the export. A rejected model is not an
/// error (the report says so).
pub fn retrain(
    config: &TrainConfig,
    options: &RunOptions,
    min_gain: f64,
) -> Result<(RunSummary, RetrainReport), RetrainError> {
    if !min_gain.is_finite() {
        return Err(RetrainError::MinGain(min_gain));
    }
    let from = options.from.clone().ok_or(RetrainError::NoFrom)?;
    if let (Ok(a), Ok(b)) = (from.canonicalize(), options.out.canonicalize())
        && a == b
    {
        return Err(RetrainError::OutIsFrom(options.out.clone()));
    }
    let summary = run(
        config,
        &RunOptions {
            export: false,
            ..options.clone()
        },
    )?;
    let out = &options.out;
    let deployed = out.join(ONNX_MODEL);
    remove_if_there(&deployed)?;
    remove_if_there(&out.join(REJECTED_MODEL))?;

    let library = crate::project::ort_library(options.ort_library.clone());
    let candidate = out.join(CANDIDATE_MODEL);
    crate::train::evaluate::export_run(out, &candidate, &library)?;
    let old_model = if from.join(ONNX_MODEL).is_file() {
        from.join(ONNX_MODEL)
    } else {
        let path = out.join(FROM_MODEL);
        crate::train::evaluate::export_run(&from, &path, &library)?;
        path
    };

    // The same held-out test split for both: base test + captured test, the new run's input.
    let prepared = prepare(config)?;
    let card = ModelCard::read(&out.join(MODEL_CARD))?;
    let test = SplitSource::evaluation(
        prepared.dataset.clone(),
        prepared.splits.test.clone(),
        64,
        card.input.to_spec()?,
    );
    let (images, labels) = gather(&test)?;
    let captured: Vec<bool> = match &prepared.extra {
        Some(extra) => test
            .indices
            .iter()
            .map(|i| extra.splits.test.binary_search(i).is_ok())
            .collect(),
        None => vec![false; test.indices.len()],
    };
    let env = crate::onnx::runtime::load_runtime(&library)?;
    let classes = card.classes.len();
    let score = |model: &Path| -> Result<PartTop1, RetrainError> {
        let bytes = std::fs::read(model).map_err(|source| RetrainError::Io {
            path: model.to_path_buf(),
            source,
        })?;
        let mut session = evaluate::session(env, &bytes, &SessionOptions::default())?;
        let logits = evaluate::logits(&mut session, &images, 64)?;
        let predicted = evaluate::top1(&logits, classes);
        Ok(part_top1(&predicted, &labels, &captured))
    };
    let old = score(&old_model)?;
    let new = score(&candidate)?;
    let accepted = new.all >= old.all + min_gain;
    let new_model = if accepted {
        deployed
    } else {
        out.join(REJECTED_MODEL)
    };
    std::fs::rename(&candidate, &new_model).map_err(|source| RetrainError::Io {
        path: new_model.clone(),
        source,
    })?;
    let report = RetrainReport {
        from,
        old_model,
        new_model,
        test_images: PartCounts {
            base: captured.iter().filter(|c| !**c).count(),
            captured: captured.iter().filter(|c| **c).count(),
            all: captured.len(),
        },
        old,
        new,
        gain: new.all - old.all,
        min_gain,
        accepted,
        decision: if accepted {
            "deployed the new model".into()
        } else {
            "kept the old model".into()
        },
    };
    let path = out.join(RETRAIN_REPORT);
    let json = serde_json::to_string_pretty(&report).map_err(TrainError::from)?;
    std::fs::write(&path, json + "\n").map_err(|source| RetrainError::Io { path, source })?;
    Ok((summary, report))
}

fn remove_if_there(path: &Path) -> Result<(), RetrainError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RetrainError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Every image of `source` as the gate's [`Images`], with their labels.
fn gather(source: &SplitSource) -> Result<(Images, Vec<usize>), RetrainError> {
    let mut images = Images::default();
    for batch in source.batches(0)? {
        let batch = batch?;
        images.dims = batch.shape[1..].to_vec();
        images.data.extend_from_slice(&batch.images);
    }
    if images.is_empty() {
        return Err(TrainError::EmptySplit("test").into());
    }
    Ok((images, source.labels()))
}

/// Top-1 on the base part (`captured` false), the captured part and all of `labels`.
fn part_top1(predicted: &[usize], labels: &[usize], captured: &[bool]) -> PartTop1 {
    let part = |keep: &dyn Fn(bool) -> bool| -> Option<f64> {
        let (p, t): (Vec<usize>, Vec<usize>) = predicted
            .iter()
            .zip(labels)
            .zip(captured)
            .filter(|(_, c)| keep(**c))
            .map(|((p, t), _)| (*p, *t))
            .unzip();
        (!t.is_empty()).then(|| evaluate::accuracy(&p, &t) / 100.0)
    };
    PartTop1 {
        base: part(&|c| !c),
        captured: part(&|c| c),
        all: part(&|_| true).unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_scored_separately() {
        let predicted = [0, 1, 1, 0, 2];
        let labels = [0, 1, 0, 0, 1];
        let captured = [false, false, true, true, true];
        let t = part_top1(&predicted, &labels, &captured);
        assert_eq!(t.base, Some(1.0));
        assert!(t.captured.is_some_and(|v| (v - 1.0 / 3.0).abs() < 1e-12));
        assert_eq!(t.all, 0.6);
        let none = part_top1(&predicted, &labels, &[false; 5]);
        assert_eq!(none.captured, None);
    }
}
