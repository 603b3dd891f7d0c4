//! Turning a model's raw scores into a classification: softmax when the output is logits,
//! top-k, threshold and label lookup.

use std::sync::Arc;

use crate::contract::ScoreKind;

/// One class of a result.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScore {
    pub class_id: u32,
    pub label: Arc<str>,
    pub confidence: f32,
}

/// The result for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Up to top-k classes at or above the threshold, most confident first. Empty when even
    /// the best class is below the threshold.
    pub classes: Vec<ClassScore>,
    /// The best class, whether or not it passed the threshold (so a consumer can see how far
    /// below it was).
    pub best: ClassScore,
}

impl Classification {
    pub fn below_threshold(&self) -> bool {
        self.classes.is_empty()
    }
}

/// Scores → [`Classification`], with scratch space reused across frames.
#[derive(Debug, Clone)]
pub struct Scorer {
    kind: ScoreKind,
    labels: Vec<Arc<str>>,
    top_k: usize,
    threshold: f32,
    probs: Vec<f32>,
    order: Vec<u32>,
}

impl Scorer {
    /// `top_k` is clamped to at least 1 and at most the number of labels.
    pub fn new(kind: ScoreKind, labels: &[String], top_k: usize, threshold: f32) -> Self {
        let labels: Vec<Arc<str>> = labels.iter().map(|l| Arc::from(l.as_str())).collect();
        Self {
            kind,
            top_k: top_k.clamp(1, labels.len().max(1)),
            threshold,
            probs: Vec::with_capacity(labels.len()),
            order: Vec::with_capacity(labels.len()),
            labels,
        }
    }

    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// Classifies one image's scores (`num_classes` values). Returns `None` for an empty
    /// or mismatched score vector, or when the scores hold no number at all (NaN).
    pub fn classify(&mut self, scores: &[f32]) -> Option<Classification> {
        if scores.is_empty() || scores.len() != self.labels.len() {
            return None;
        }
        self.probs.clear();
        match self.kind {
            ScoreKind::Probabilities => self.probs.extend_from_slice(scores),
            ScoreKind::Logits => softmax_into(scores, &mut self.probs),
        }
        self.order.clear();
        self.order.extend(0..self.probs.len() as u32);
        let probs = &self.probs;
        let key = |i: &u32| {
            let p = probs[*i as usize];
            if p.is_nan() { f32::NEG_INFINITY } else { p }
        };
        // Partial selection then a sort of the head: O(n + k log k) for 1000 classes.
        let k = self.top_k;
        if k < self.order.len() {
            self.order
                .select_nth_unstable_by(k - 1, |a, b| key(b).total_cmp(&key(a)));
            self.order.truncate(k);
        }
        self.order.sort_by(|a, b| key(b).total_cmp(&key(a)));
        let make = |i: u32| ClassScore {
            class_id: i,
            label: self.labels[i as usize].clone(),
            confidence: self.probs[i as usize],
        };
        let best = make(*self.order.first()?);
        if best.confidence.is_nan() {
            return None;
        }
        let classes = self
            .order
            .iter()
            .filter(|&&i| self.probs[i as usize] >= self.threshold)
            .map(|&i| make(i))
            .collect();
        Some(Classification { classes, best })
    }
}

/// Numerically stable softmax.
fn softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    out.extend(logits.iter().map(|&v| (v - max).exp()));
    let sum: f32 = out.iter().filter(|v| !v.is_nan()).sum();
    if sum > 0.0 {
        out.iter_mut().for_each(|v| *v /= sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn softmax_of_logits_sums_to_one_and_orders() {
        let mut s = Scorer::new(ScoreKind::Logits, &labels(3), 3, 0.0);
        let c = s.classify(&[1.0, 3.0, 2.0]).expect("result");
        let ids: Vec<u32> = c.classes.iter().map(|c| c.class_id).collect();
        assert_eq!(ids, vec![1, 2, 0]);
        let sum: f32 = c.classes.iter().map(|c| c.confidence).sum();
        assert!((sum - 1.0).abs() < 1e-5);
        // e^3 / (e^1 + e^2 + e^3)
        assert!((c.best.confidence - 0.665_240_9).abs() < 1e-5);
        assert_eq!(&*c.best.label, "c1");
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let mut s = Scorer::new(ScoreKind::Logits, &labels(2), 1, 0.0);
        let c = s.classify(&[1000.0, 0.0]).expect("result");
        assert_eq!(c.best.class_id, 0);
        assert!((c.best.confidence - 1.0).abs() < 1e-6);
    }

    #[test]
    fn probabilities_are_taken_as_is() {
        let mut s = Scorer::new(ScoreKind::Probabilities, &labels(4), 2, 0.0);
        let c = s.classify(&[0.1, 0.2, 0.6, 0.1]).expect("result");
        assert_eq!(c.classes.len(), 2);
        assert_eq!(c.classes[0].class_id, 2);
        assert_eq!(c.classes[0].confidence, 0.6);
        assert_eq!(c.classes[1].class_id, 1);
    }

    #[test]
    fn threshold_drops_classes_but_keeps_best() {
        let mut s = Scorer::new(ScoreKind::Probabilities, &labels(3), 3, 0.5);
        let c = s.classify(&[0.3, 0.4, 0.3]).expect("result");
        assert!(c.below_threshold());
        assert_eq!(c.best.class_id, 1);
        let c = s.classify(&[0.1, 0.7, 0.2]).expect("result");
        assert_eq!(c.classes.len(), 1);
    }

    #[test]
    fn top_k_is_clamped_and_sorted_on_many_classes() {
        let mut s = Scorer::new(ScoreKind::Probabilities, &labels(1000), 5, 0.0);
        let mut scores = vec![0.0f32; 1000];
        for (i, v) in [
            (17, 0.5),
            (999, 0.2),
            (3, 0.1),
            (500, 0.09),
            (42, 0.08),
            (7, 0.01),
        ] {
            scores[i] = v;
        }
        let c = s.classify(&scores).expect("result");
        let ids: Vec<u32> = c.classes.iter().map(|c| c.class_id).collect();
        assert_eq!(ids, vec![17, 999, 3, 500, 42]);
        let mut s = Scorer::new(ScoreKind::Probabilities, &labels(2), 10, 0.0);
        assert_eq!(s.classify(&[0.5, 0.5]).expect("result").classes.len(), 2);
    }

    #[test]
    fn mismatched_or_nan_scores_give_none() {
        let mut s = Scorer::new(ScoreKind::Probabilities, &labels(3), 1, 0.0);
        assert!(s.classify(&[0.1, 0.2]).is_none());
        assert!(s.classify(&[f32::NAN, f32::NAN, f32::NAN]).is_none());
        let c = s.classify(&[f32::NAN, 0.2, 0.1]).expect("result");
        assert_eq!(c.best.class_id, 1);
    }
}
