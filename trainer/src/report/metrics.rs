//! Classification metrics from an N×K score matrix and N labels.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ReportError;

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The class name, as given to [`Metrics::compute`].
    pub name: String,
    /// Of the samples predicted as this class, the share that truly are; **0 when the class was
    /// never predicted** (no prediction, no credit).
    pub precision: f64,
    /// Of the samples of this class, the share predicted as it; 0 when the class has no samples.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// Number of samples whose true class is this one.
    pub support: u64,
}

/// The metrics of one evaluation: what `metrics.json` holds and what [`fmt::Display`] prints
/// as a table.
///
/// Predictions are the arg-max of each score row (the first of equal maxima), so logits and
/// their softmax probabilities give the same metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Share of samples whose highest score is the true class.
    pub top1: f64,
    /// Share of samples whose true class is among the five highest scores; only when there are
    /// more than five classes (with five or fewer it would always be 1).
    pub top5: Option<f64>,
    /// One entry per class, in class-index order.
    pub classes: Vec<ClassMetrics>,
    /// Mean F1 over the classes that have samples (support > 0).
    pub macro_f1: f64,
    /// Mean recall over the classes that have samples (balanced accuracy).
    pub mean_class_accuracy: f64,
    /// `confusion[true][predicted]` sample counts, K×K.
    pub confusion: Vec<Vec<u64>>,
    /// Number of samples evaluated.
    pub count: u64,
    /// Mean loss over the samples, when the caller knows it ([`Metrics::with_mean_loss`]);
    /// `compute` cannot tell logits from probabilities, so it does not guess a loss.
    pub mean_loss: Option<f64>,
}

/// Index of the highest value of a row; the first of equal maxima; NaN never wins.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best
}

/// Rank of class `target` in `row` (0 = top) under the same tie rule as [`argmax`]: classes
/// with a higher score, and classes with an equal score and a lower index, come first.
fn rank(row: &[f32], target: usize) -> usize {
    let t = row[target];
    row.iter()
        .enumerate()
        .filter(|&(j, &v)| v > t || (v == t && j < target))
        .count()
}

/// Top-1 accuracy of `scores` (N×K row-major, K = `scores.len() / labels.len()`) against
/// `labels`: a cheap helper for training loops. Returns 0 for no labels or a length that does
/// not divide; use [`Metrics::compute`] for checked, complete metrics.
pub fn accuracy(scores: &[f32], labels: &[usize]) -> f64 {
    if labels.is_empty() || scores.is_empty() || !scores.len().is_multiple_of(labels.len()) {
        return 0.0;
    }
    let k = scores.len() / labels.len();
    let correct = scores
        .chunks_exact(k)
        .zip(labels)
        .filter(|&(row, &label)| argmax(row) == label)
        .count();
    correct as f64 / labels.len() as f64
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

impl Metrics {
    /// Computes every metric from `scores` (N×K row-major: one row of K logits or
    /// probabilities per sample), `labels` (N true class indices) and `classes` (K names).
    ///
    /// Errors when there are no samples or no classes, when `scores` is not N×K long, when a
    /// label is not below K, or when a score is NaN/infinite.
    pub fn compute(
        scores: &[f32],
        labels: &[usize],
        classes: &[String],
    ) -> Result<Metrics, ReportError> {
        let k = classes.len();
        if k == 0 {
            return Err(ReportError::NoClasses);
        }
        if labels.is_empty() {
            return Err(ReportError::Empty);
        }
        let expected = labels.len().saturating_mul(k);
        if scores.len() != expected {
            return Err(ReportError::ScoresShape {
                scores: scores.len(),
                samples: labels.len(),
                classes: k,
                expected,
            });
        }
        let mut confusion = vec![vec![0u64; k]; k];
        let mut top1 = 0u64;
        let mut top5 = 0u64;
        for (sample, (row, &label)) in scores.chunks_exact(k).zip(labels).enumerate() {
            if label >= k {
                return Err(ReportError::LabelOutOfRange {
                    sample,
                    label,
                    classes: k,
                });
            }
            if row.iter().any(|v| !v.is_finite()) {
                return Err(ReportError::NonFiniteScore { sample });
            }
            let predicted = argmax(row);
            confusion[label][predicted] += 1;
            let r = rank(row, label);
            top1 += u64::from(r == 0);
            top5 += u64::from(r < 5);
        }
        let count = labels.len() as u64;

        let per_class: Vec<ClassMetrics> = classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let tp = confusion[c][c];
                let support: u64 = confusion[c].iter().sum();
                let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    name: name.clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let present = || per_class.iter().filter(|c| c.support > 0);
        Ok(Metrics {
            top1: ratio(top1, count),
            top5: (k > 5).then(|| ratio(top5, count)),
            macro_f1: mean(present().map(|c| c.f1)),
            mean_class_accuracy: mean(present().map(|c| c.recall)),
            classes: per_class,
            confusion,
            count,
            mean_loss: None,
        })
    }

    /// The same metrics with the mean loss the caller measured on the same samples.
    pub fn with_mean_loss(mut self, loss: f64) -> Self {
        self.mean_loss = Some(loss);
        self
    }

    /// The class names, in class-index order.
    pub fn class_names(&self) -> impl Iterator<Item = &str> {
        self.classes.iter().map(|c| c.name.as_str())
    }
}

/// Longest class name shown in the table; longer ones are cut with `…`.
const NAME_WIDTH: usize = 24;

fn cut(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(width - 1).collect();
        s.push('…');
        s
    }
}

impl fmt::Display for Metrics {
    /// A per-class table (precision, recall, F1, support) followed by the summary lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .classes
            .iter()
            .map(|c| c.name.chars().count().min(NAME_WIDTH))
            .max()
            .unwrap_or(0)
            .max("class".len());
        writeln!(
            f,
            "{:<width$}  {:>9}  {:>6}  {:>6}  {:>7}",
            "class", "precision", "recall", "f1", "support"
        )?;
        for c in &self.classes {
            // Pad by characters, not bytes, so non-ASCII names line up.
            let name = cut(&c.name, NAME_WIDTH);
            let pad = width - name.chars().count();
            writeln!(
                f,
                "{name}{:pad$}  {:>9.3}  {:>6.3}  {:>6.3}  {:>7}",
                "", c.precision, c.recall, c.f1, c.support
            )?;
        }
        write!(f, "top-1 {:.4}", self.top1)?;
        if let Some(top5) = self.top5 {
            write!(f, "  top-5 {top5:.4}")?;
        }
        write!(
            f,
            "  macro-F1 {:.4}  mean class accuracy {:.4}  ({} samples",
            self.macro_f1, self.mean_class_accuracy, self.count
        )?;
        if let Some(loss) = self.mean_loss {
            write!(f, ", mean loss {loss:.4}")?;
        }
        writeln!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    /// One-hot-ish logits that predict `p`.
    fn predicting(p: usize, k: usize) -> Vec<f32> {
        (0..k).map(|j| if j == p { 2.0 } else { -1.0 }).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn three_classes_by_hand() {
        // (true, predicted): cat×3 right, 1 cat→dog; dog×2 right, 1 dog→bird; bird×1 right,
        // 2 bird→cat.
        let pairs = [
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 1),
            (1, 1),
            (1, 1),
            (1, 2),
            (2, 2),
            (2, 0),
            (2, 0),
        ];
        let classes: Vec<String> = ["cat", "dog", "bird"].map(String::from).to_vec();
        let scores: Vec<f32> = pairs.iter().flat_map(|&(_, p)| predicting(p, 3)).collect();
        let labels: Vec<usize> = pairs.iter().map(|&(t, _)| t).collect();
        let m = Metrics::compute(&scores, &labels, &classes).unwrap();

        assert_eq!(
            m.confusion,
            vec![vec![3, 1, 0], vec![0, 2, 1], vec![2, 0, 1]]
        );
        assert_eq!(m.count, 10);
        close(m.top1, 0.6);
        assert_eq!(m.top5, None);
        // cat: tp 3, predicted 5, support 4 → P 0.6, R 0.75, F1 2·0.45/1.35 = 2/3
        // dog: tp 2, predicted 3, support 3 → P 2/3, R 2/3, F1 2/3
        // bird: tp 1, predicted 2, support 3 → P 0.5, R 1/3, F1 (1/3)/(5/6) = 0.4
        let c = &m.classes;
        assert_eq!(c[0].name, "cat");
        close(c[0].precision, 0.6);
        close(c[0].recall, 0.75);
        close(c[0].f1, 2.0 / 3.0);
        assert_eq!(c[0].support, 4);
        close(c[1].precision, 2.0 / 3.0);
        close(c[1].recall, 2.0 / 3.0);
        close(c[1].f1, 2.0 / 3.0);
        close(c[2].precision, 0.5);
        close(c[2].recall, 1.0 / 3.0);
        close(c[2].f1, 0.4);
        assert_eq!(c[2].support, 3);
        close(m.macro_f1, (2.0 / 3.0 + 2.0 / 3.0 + 0.4) / 3.0);
        close(m.mean_class_accuracy, (0.75 + 2.0 / 3.0 + 1.0 / 3.0) / 3.0);
        assert_eq!(m.mean_loss, None);
        close(accuracy(&scores, &labels), 0.6);
    }

    #[test]
    fn never_predicted_class_has_zero_precision() {
        // Class 2 has samples but is never predicted; class 1 is predicted but has no samples.
        let classes = names(3);
        let pairs = [(0, 0), (0, 1), (2, 0), (2, 0)];
        let scores: Vec<f32> = pairs.iter().flat_map(|&(_, p)| predicting(p, 3)).collect();
        let labels: Vec<usize> = pairs.iter().map(|&(t, _)| t).collect();
        let m = Metrics::compute(&scores, &labels, &classes).unwrap();
        let c = &m.classes;
        close(c[2].precision, 0.0);
        close(c[2].recall, 0.0);
        close(c[2].f1, 0.0);
        assert_eq!(c[2].support, 2);
        // Class 1: predicted once, wrongly; no support → excluded from the macro averages.
        close(c[1].precision, 0.0);
        assert_eq!(c[1].support, 0);
        // Class 0: tp 1, predicted 3, support 2 → P 1/3, R 1/2, F1 0.4.
        close(c[0].f1, 0.4);
        close(m.macro_f1, (0.4 + 0.0) / 2.0);
        close(m.mean_class_accuracy, (0.5 + 0.0) / 2.0);
        close(m.top1, 0.25);
    }

    #[test]
    fn top5_with_more_than_five_classes() {
        let k = 8;
        let classes = names(k);
        // Scores descending by class index except where noted: rank of class c is c.
        let base: Vec<f32> = (0..k).map(|j| (k - j) as f32).collect();
        // Labels at ranks 0, 4, 5, 7 → top-1 1/4, top-5 2/4.
        let labels = [0usize, 4, 5, 7];
        let scores: Vec<f32> = labels.iter().flat_map(|_| base.clone()).collect();
        let m = Metrics::compute(&scores, &labels, &classes).unwrap();
        close(m.top1, 0.25);
        assert_eq!(m.top5, Some(0.5));

        // Ties: an equal score with a lower index ranks first, as in the arg-max.
        let tied = vec![1.0f32; k];
        let m = Metrics::compute(&[tied.clone(), tied].concat(), &[4, 5], &classes).unwrap();
        assert_eq!(m.confusion[4][0], 1);
        assert_eq!(m.top5, Some(0.5));
        close(m.top1, 0.0);
    }

    #[test]
    fn no_top5_with_five_classes() {
        let m = Metrics::compute(&predicting(1, 5), &[1], &names(5)).unwrap();
        assert_eq!(m.top5, None);
        close(m.top1, 1.0);
    }

    #[test]
    fn logits_and_probabilities_agree() {
        let k = 7;
        let classes = names(k);
        let labels: Vec<usize> = (0..40).map(|i| (i * 3) % k).collect();
        // Deterministic pseudo-random logits.
        let mut state = 12345u32;
        let logits: Vec<f32> = (0..labels.len() * k)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((state >> 8) % 1000) as f32 / 100.0 - 5.0
            })
            .collect();
        let probs: Vec<f32> = logits
            .chunks(k)
            .flat_map(|row| {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                let s: f32 = e.iter().sum();
                e.into_iter().map(move |v| v / s)
            })
            .collect();
        let a = Metrics::compute(&logits, &labels, &classes).unwrap();
        let b = Metrics::compute(&probs, &labels, &classes).unwrap();
        assert_eq!(a, b);
        assert!(a.top1 > 0.0 && a.top1 < 1.0, "a mixed case: {}", a.top1);
        assert!(a.top5.is_some_and(|t| t > a.top1));
        close(accuracy(&logits, &labels), a.top1);
    }

    #[test]
    fn errors_name_the_problem() {
        let c = names(3);
        assert!(matches!(
            Metrics::compute(&[], &[], &c),
            Err(ReportError::Empty)
        ));
        assert!(matches!(
            Metrics::compute(&[1.0], &[0], &[]),
            Err(ReportError::NoClasses)
        ));
        let e = Metrics::compute(&[0.0; 5], &[0, 1], &c).unwrap_err();
        assert!(matches!(
            e,
            ReportError::ScoresShape {
                scores: 5,
                samples: 2,
                classes: 3,
                expected: 6
            }
        ));
        assert!(e.to_string().contains("2 labels × 3 classes = 6"), "{e}");
        let e = Metrics::compute(&[0.0; 6], &[0, 3], &c).unwrap_err();
        assert!(matches!(
            e,
            ReportError::LabelOutOfRange {
                sample: 1,
                label: 3,
                classes: 3
            }
        ));
        let e = Metrics::compute(&[0.0, f32::NAN, 0.0], &[0], &c).unwrap_err();
        assert!(matches!(e, ReportError::NonFiniteScore { sample: 0 }));
        assert_eq!(accuracy(&[0.0; 5], &[0, 1]), 0.0);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn serde_round_trip_and_table() {
        let classes: Vec<String> = ["tabby", "a very long class name that goes on and on", "x"]
            .map(String::from)
            .to_vec();
        let scores = [predicting(0, 3), predicting(1, 3), predicting(0, 3)].concat();
        let m = Metrics::compute(&scores, &[0, 1, 2], &classes)
            .unwrap()
            .with_mean_loss(0.25);
        let json = serde_json::to_string(&m).unwrap();
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);

        let table = m.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("class"));
        assert!(lines[1].starts_with("tabby"));
        assert!(
            lines[1].contains("0.500") && lines[1].ends_with("1"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("a very long class name …"),
            "{}",
            lines[2]
        );
        assert!(lines[4].contains("top-1 0.6667"), "{}", lines[4]);
        assert!(lines[4].contains("mean loss 0.2500"), "{}", lines[4]);
        assert!(!lines[4].contains("top-5"));
        // Columns line up: every row is as wide as the header (in characters).
        let width = lines[0].chars().count();
        for l in &lines[1..4] {
            assert_eq!(l.chars().count(), width, "{l}");
        }
    }
}
