//! Evaluation metrics and the per-run report folder (JSON, PNG plots), progress display.
//!
//! Everything here works on plain `Vec<f32>`/`f64` values, so it knows nothing of burn: the
//! training loop hands over scores, labels and per-epoch numbers.
//!
//! - [`Metrics`]: top-1/top-5, per-class precision/recall/F1, macro-F1, mean class accuracy
//!   and the confusion matrix of a set of predictions; [`accuracy`] for the training loop.
//! - [`History`]/[`EpochRecord`]: the per-epoch numbers of a run.
//! - [`plot_curves`], [`plot_confusion`]: PNG plots (plotters, bitmap backend).
//! - [`RunReport`]: the folder a run leaves behind (`config.toml`, `metrics.json`,
//!   `history.json`, `curves.png`, `confusion.png`, `balance.txt`, `summary.md`).
//! - [`Progress`]: a live bar on a terminal, rate-limited log lines otherwise.

mod history;
mod metrics;
mod plot;
mod progress;
mod run;

pub use history::{EpochRecord, History, Metric};
pub use metrics::{ClassMetrics, Metrics, accuracy};
pub use plot::{
    CURVES_SIZE, FONT_ENV, confusion_size, font_candidates, plot_confusion, plot_curves,
};
pub use progress::Progress;
pub use run::{RunReport, files};

use std::path::PathBuf;

/// What can go wrong while computing metrics or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No samples to evaluate.
    #[error("no samples to evaluate: the evaluation set is empty")]
    Empty,
    /// No class names were given.
    #[error("no class names given: metrics need at least one class")]
    NoClasses,
    /// `scores` is not `labels.len() × classes.len()` long.
    #[error(
        "scores hold {scores} values, but {samples} labels × {classes} classes = {expected} were \
         expected (scores are N×K row-major, one row per label)"
    )]
    ScoresShape {
        scores: usize,
        samples: usize,
        classes: usize,
        expected: usize,
    },
    /// A label is not a valid class index.
    #[error(
        "label {label} of sample {sample} is out of range: there are {classes} classes (0..{classes})"
    )]
    LabelOutOfRange {
        sample: usize,
        label: usize,
        classes: usize,
    },
    /// A score is NaN or infinite (usually a diverged model).
    #[error(
        "the scores of sample {sample} contain NaN or infinity: the model has probably diverged"
    )]
    NonFiniteScore { sample: usize },
    /// There is nothing to plot.
    #[error("nothing to plot: {0}")]
    NothingToPlot(&'static str),
    /// No usable font file for the text in plots.
    #[error(
        "no font for the plots' text: tried {}; install the Debian package fonts-dejavu-core \
         (scripts/setup.sh does) or set {} to a .ttf file",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        plot::FONT_ENV
    )]
    FontMissing { tried: Vec<PathBuf> },
    /// The font file could not be parsed.
    #[error("{} is not a usable TrueType/OpenType font", .path.display())]
    FontInvalid { path: PathBuf },
    /// Drawing a plot failed.
    #[error("drawing {}: {message}", .path.display())]
    Draw { path: PathBuf, message: String },
    /// Encoding a PNG failed.
    #[error("writing PNG {}: {source}", .path.display())]
    Png {
        path: PathBuf,
        source: png::EncodingError,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// JSON serialisation failed.
    #[error("writing JSON {}: {source}", .path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The configuration given for `config.toml` is not valid TOML.
    #[error("the configuration for {} is not valid TOML: {source}", .path.display())]
    ConfigToml {
        path: PathBuf,
        source: toml::de::Error,
    },
}
