//! The folder one training run leaves behind.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ReportError;
use super::history::{History, Metric};
use super::metrics::Metrics;
use super::plot::{plot_confusion, plot_curves, tmp_path};
use super::progress::format_duration;

/// File names inside a run folder.
pub mod files {
    /// The exact configuration the run used.
    pub const CONFIG: &str = "config.toml";
    /// Test-set metrics and extra values.
    pub const METRICS: &str = "metrics.json";
    /// Per-epoch numbers.
    pub const HISTORY: &str = "history.json";
    /// Loss, accuracy and learning-rate curves.
    pub const CURVES: &str = "curves.png";
    /// Confusion-matrix heat map.
    pub const CONFUSION: &str = "confusion.png";
    /// Class balance of the data splits.
    pub const BALANCE: &str = "balance.txt";
    /// Short overview linking the other files.
    pub const SUMMARY: &str = "summary.md";
}

/// What `summary.md` says about each file, in the order it lists them.
const DESCRIPTIONS: [(&str, &str); 6] = [
    (files::CONFIG, "the exact configuration of the run"),
    (
        files::METRICS,
        "test metrics (per class, confusion matrix) and extra values",
    ),
    (files::HISTORY, "loss, accuracy and learning rate per epoch"),
    (files::CURVES, "training curves"),
    (files::CONFUSION, "confusion matrix of the test set"),
    (files::BALANCE, "class balance of the data splits"),
];

/// `metrics.json`: the test metrics plus whatever else the caller wants kept.
#[derive(Serialize)]
struct MetricsFile<'a> {
    test: &'a Metrics,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    extra: &'a serde_json::Value,
}

/// The per-run report folder: `config.toml`, `metrics.json`, `history.json`, `curves.png`,
/// `confusion.png`, `balance.txt` and a `summary.md` that links those written.
///
/// Every file is written to a temporary name and renamed, so a crash never leaves half a
/// file; writing a file again replaces it. Errors name the path.
#[derive(Debug)]
pub struct RunReport {
    dir: PathBuf,
    written: Vec<&'static str>,
    metrics: Option<Metrics>,
    history: Option<History>,
}

impl RunReport {
    /// Creates the folder `dir` (and its parents) if needed.
    pub fn create(dir: &Path) -> Result<Self, ReportError> {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(RunReport {
            dir: dir.to_path_buf(),
            written: Vec::new(),
            metrics: None,
            history: None,
        })
    }

    /// The report folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `name` inside the folder (see [`files`]).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn written(&mut self, name: &'static str) -> PathBuf {
        if !self.written.contains(&name) {
            self.written.push(name);
        }
        self.path(name)
    }

    fn write_text(&mut self, name: &'static str, text: &str) -> Result<PathBuf, ReportError> {
        let path = self.path(name);
        let tmp = tmp_path(&path);
        std::fs::write(&tmp, text).map_err(|source| ReportError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(self.written(name))
    }

    fn write_json(
        &mut self,
        name: &'static str,
        value: &impl Serialize,
    ) -> Result<PathBuf, ReportError> {
        let text = serde_json::to_string_pretty(value).map_err(|source| ReportError::Json {
            path: self.path(name),
            source,
        })?;
        self.write_text(name, &(text + "\n"))
    }

    /// Writes `config.toml`: `config` is the exact configuration text the run used; it must be
    /// valid TOML.
    pub fn write_config(&mut self, config: &str) -> Result<PathBuf, ReportError> {
        if let Err(source) = config.parse::<toml::Table>() {
            return Err(ReportError::ConfigToml {
                path: self.path(files::CONFIG),
                source,
            });
        }
        self.write_text(files::CONFIG, config)
    }

    /// Writes `metrics.json` as `{"test": <metrics>, "extra": <extra>}` (`extra` left out when
    /// it is `null`), e.g. with the model file, the data summary or timing.
    pub fn write_metrics(
        &mut self,
        metrics: &Metrics,
        extra: &serde_json::Value,
    ) -> Result<PathBuf, ReportError> {
        let path = self.write_json(
            files::METRICS,
            &MetricsFile {
                test: metrics,
                extra,
            },
        )?;
        self.metrics = Some(metrics.clone());
        Ok(path)
    }

    /// Writes `history.json`.
    pub fn write_history(&mut self, history: &History) -> Result<PathBuf, ReportError> {
        let path = self.write_json(files::HISTORY, history)?;
        self.history = Some(history.clone());
        Ok(path)
    }

    /// Draws `curves.png` (see [`plot_curves`](super::plot_curves)).
    pub fn write_curves(&mut self, history: &History) -> Result<PathBuf, ReportError> {
        plot_curves(history, &self.path(files::CURVES))?;
        Ok(self.written(files::CURVES))
    }

    /// Draws `confusion.png` (see [`plot_confusion`](super::plot_confusion)).
    pub fn write_confusion(&mut self, metrics: &Metrics) -> Result<PathBuf, ReportError> {
        plot_confusion(metrics, &self.path(files::CONFUSION))?;
        Ok(self.written(files::CONFUSION))
    }

    /// Writes `balance.txt`: the class balance of the data splits, as the caller formatted it.
    pub fn write_balance(&mut self, balance: &str) -> Result<PathBuf, ReportError> {
        self.write_text(files::BALANCE, balance)
    }

    /// Writes `summary.md`: `title`, the headline test metrics and best epoch (when metrics and
    /// history were written) and links to the files written so far. Call it last.
    pub fn write_summary(&mut self, title: &str) -> Result<PathBuf, ReportError> {
        let text = self.summary(title);
        self.write_text(files::SUMMARY, &text)
    }

    fn summary(&self, title: &str) -> String {
        let mut s = format!("# {title}\n\n");
        if let Some(m) = &self.metrics {
            let _ = write!(s, "Test set: {} samples, top-1 {:.4}", m.count, m.top1);
            if let Some(top5) = m.top5 {
                let _ = write!(s, ", top-5 {top5:.4}");
            }
            let _ = write!(
                s,
                ", macro-F1 {:.4}, mean class accuracy {:.4}",
                m.macro_f1, m.mean_class_accuracy
            );
            if let Some(loss) = m.mean_loss {
                let _ = write!(s, ", mean loss {loss:.4}");
            }
            s += ".\n\n";
            // Worst classes first: where to look.
            let mut worst: Vec<_> = m
                .classes
                .iter()
                .filter(|c| c.support > 0 && c.f1 < 1.0)
                .collect();
            worst.sort_by(|a, b| a.f1.total_cmp(&b.f1));
            if !worst.is_empty() && m.classes.len() > 1 {
                let names: Vec<String> = worst
                    .iter()
                    .take(3)
                    .map(|c| format!("{} (F1 {:.3})", c.name, c.f1))
                    .collect();
                let _ = writeln!(s, "Weakest classes: {}.\n", names.join(", "));
            }
        }
        if let Some(h) = self.history.as_ref().filter(|h| !h.epochs.is_empty()) {
            let _ = write!(
                s,
                "Training: {} epochs in {}",
                h.epochs.len(),
                format_duration(h.total_seconds())
            );
            if let Some(best) = h.best(Metric::ValAccuracy) {
                let _ = write!(
                    s,
                    "; best validation accuracy {:.4} at epoch {}",
                    best.val_accuracy.unwrap_or(f64::NAN),
                    best.epoch
                );
            }
            if let Some(last) = h.last() {
                let _ = write!(
                    s,
                    "; last epoch: train loss {:.4}, train accuracy {:.4}",
                    last.train_loss, last.train_accuracy
                );
            }
            s += ".\n\n";
        }
        if self.written.contains(&files::CURVES) {
            let _ = writeln!(s, "![training curves]({})\n", files::CURVES);
        }
        if self.written.contains(&files::CONFUSION) {
            let _ = writeln!(s, "![confusion matrix]({})\n", files::CONFUSION);
        }
        s += "Files:\n\n";
        for (name, what) in DESCRIPTIONS {
            if self.written.contains(&name) {
                let _ = writeln!(s, "- [`{name}`]({name}): {what}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::tests::record;
    use super::*;

    fn metrics() -> Metrics {
        let classes: Vec<String> = ["cat", "dog", "bird"].map(String::from).to_vec();
        let scores = [
            [3.0, 1.0, 0.0],
            [0.0, 2.0, 1.0],
            [0.0, 2.0, 1.0],
            [1.0, 0.0, 4.0],
        ]
        .concat();
        Metrics::compute(&scores, &[0, 1, 2, 2], &classes)
            .unwrap()
            .with_mean_loss(0.5)
    }

    #[test]
    fn folder_holds_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("runs/2026-11-28-a");
        let mut report = RunReport::create(&run).unwrap();
        assert_eq!(report.dir(), run);
        let config = "[train]\nepochs = 3\nlr = 0.01\n";
        report.write_config(config).unwrap();
        let m = metrics();
        report
            .write_metrics(&m, &serde_json::json!({"model": "m.onnx"}))
            .unwrap();
        let h = History {
            epochs: (1..=3)
                .map(|e| record(e, 1.0 / e as f64, Some(0.5 + 0.1 * e as f64)))
                .collect(),
        };
        report.write_history(&h).unwrap();
        report.write_curves(&h).unwrap();
        report.write_confusion(&m).unwrap();
        report.write_balance("train: cat 10, dog 10\n").unwrap();
        let summary = report.write_summary("Run a").unwrap();

        let mut names: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "balance.txt",
                "config.toml",
                "confusion.png",
                "curves.png",
                "history.json",
                "metrics.json",
                "summary.md"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(run.join("config.toml")).unwrap(),
            config
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap())
                .unwrap();
        assert_eq!(json["extra"]["model"], "m.onnx");
        let back: Metrics = serde_json::from_value(json["test"].clone()).unwrap();
        assert_eq!(back, m);
        let back: History =
            serde_json::from_str(&std::fs::read_to_string(run.join("history.json")).unwrap())
                .unwrap();
        assert_eq!(back, h);
        for png in ["curves.png", "confusion.png"] {
            let bytes = std::fs::read(run.join(png)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png}");
        }

        let text = std::fs::read_to_string(summary).unwrap();
        assert!(text.starts_with("# Run a\n"), "{text}");
        assert!(text.contains("Test set: 4 samples, top-1 0.7500"), "{text}");
        assert!(text.contains("mean loss 0.5000"), "{text}");
        // dog: P 1/2, R 1; bird: P 1, R 1/2; cat is perfect and not listed.
        assert!(
            text.contains("Weakest classes: dog (F1 0.667), bird (F1 0.667).\n"),
            "{text}"
        );
        assert!(text.contains("3 epochs in 8s"), "{text}");
        assert!(
            text.contains("best validation accuracy 0.8000 at epoch 3"),
            "{text}"
        );
        assert!(text.contains("![training curves](curves.png)"));
        for name in [
            "config.toml",
            "metrics.json",
            "history.json",
            "confusion.png",
            "balance.txt",
        ] {
            assert!(
                text.contains(&format!("- [`{name}`]({name})")),
                "{name}: {text}"
            );
        }
    }

    #[test]
    fn summary_lists_only_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = RunReport::create(dir.path()).unwrap();
        report.write_balance("x\n").unwrap();
        report.write_balance("y\n").unwrap();
        let text = std::fs::read_to_string(report.write_summary("t").unwrap()).unwrap();
        assert_eq!(
            text,
            "# t\n\nFiles:\n\n- [`balance.txt`](balance.txt): class balance of the data splits\n"
        );
        assert_eq!(
            std::fs::read_to_string(report.path(files::BALANCE)).unwrap(),
            "y\n"
        );
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        let e = report.write_metrics(&metrics(), &serde_json::Value::Null);
        let json = std::fs::read_to_string(e.unwrap()).unwrap();
        assert!(!json.contains("extra"));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = RunReport::create(dir.path()).unwrap();
        let e = report.write_config("epochs = = 3").unwrap_err();
        assert!(matches!(e, ReportError::ConfigToml { .. }));
        assert!(e.to_string().contains("config.toml"), "{e}");
        assert!(!report.path(files::CONFIG).exists());

        // A file where the folder should be.
        let file = dir.path().join("taken");
        std::fs::write(&file, "").unwrap();
        let e = RunReport::create(&file.join("run")).unwrap_err();
        assert!(e.to_string().contains("taken/run"), "{e}");

        // The folder vanished after creation.
        let gone = dir.path().join("gone");
        let mut report = RunReport::create(&gone).unwrap();
        std::fs::remove_dir(&gone).unwrap();
        let e = report.write_balance("x").unwrap_err();
        assert!(e.to_string().contains("gone/.balance.txt.tmp"), "{e}");
        let e = report.write_curves(&History::default()).unwrap_err();
        assert!(matches!(e, ReportError::NothingToPlot(_)), "{e}");
    }
}
