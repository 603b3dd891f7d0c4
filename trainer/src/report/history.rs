//! The per-epoch numbers of a training run.

use serde::{Deserialize, Serialize};

/// What one epoch of training measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, counted from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Training top-1 accuracy over the epoch (0..=1).
    pub train_accuracy: f64,
    /// Validation loss after the epoch; `None` when the run has no validation set.
    pub val_loss: Option<f64>,
    /// Validation top-1 accuracy after the epoch (0..=1); `None` without a validation set.
    pub val_accuracy: Option<f64>,
    /// Learning rate used in the epoch (the last one, when a schedule changes it per batch).
    pub learning_rate: f64,
    /// Wall-clock seconds the epoch took, validation included.
    pub seconds: f64,
}

/// Which number of an [`EpochRecord`] to compare in [`History::best`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Lowest training loss.
    TrainLoss,
    /// Highest training accuracy.
    TrainAccuracy,
    /// Lowest validation loss.
    ValLoss,
    /// Highest validation accuracy.
    ValAccuracy,
}

impl Metric {
    /// The value of this metric in `record`, if it has one.
    pub fn value(self, record: &EpochRecord) -> Option<f64> {
        match self {
            Metric::TrainLoss => Some(record.train_loss),
            Metric::TrainAccuracy => Some(record.train_accuracy),
            Metric::ValLoss => record.val_loss,
            Metric::ValAccuracy => record.val_accuracy,
        }
    }

    /// Whether a higher value is better (accuracies) or a lower one (losses).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::TrainAccuracy | Metric::ValAccuracy)
    }
}

/// All epochs of a run, in order; what `history.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// One record per finished epoch.
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the record of a finished epoch.
    pub fn push(&mut self, record: EpochRecord) {
        self.epochs.push(record);
    }

    /// The last finished epoch.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// The epoch with the best value of `metric` (lowest loss, highest accuracy); the earliest
    /// of equal values. Epochs without that value (no validation) or with a NaN are skipped;
    /// `None` when no epoch has it.
    pub fn best(&self, metric: Metric) -> Option<&EpochRecord> {
        let mut best: Option<(&EpochRecord, f64)> = None;
        for record in &self.epochs {
            let Some(v) = metric.value(record).filter(|v| !v.is_nan()) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((_, b)) if metric.higher_is_better() => v > b,
                Some((_, b)) => v < b,
            };
            if better {
                best = Some((record, v));
            }
        }
        best.map(|(record, _)| record)
    }

    /// Total wall-clock seconds of all epochs.
    pub fn total_seconds(&self) -> f64 {
        self.epochs.iter().map(|r| r.seconds).sum()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A record for tests: accuracy follows the loss, validation loss follows its accuracy.
    pub(crate) fn record(epoch: usize, train_loss: f64, val_acc: Option<f64>) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss,
            train_accuracy: 1.0 - train_loss / 2.0,
            val_loss: val_acc.map(|a| 1.0 - a),
            val_accuracy: val_acc,
            learning_rate: 0.01,
            seconds: 2.5,
        }
    }

    #[test]
    fn best_picks_lowest_loss_and_highest_accuracy() {
        let mut h = History::new();
        assert!(h.best(Metric::TrainLoss).is_none());
        h.push(record(1, 1.0, Some(0.5)));
        h.push(record(2, 0.6, Some(0.8)));
        h.push(record(3, 0.4, Some(0.7)));
        h.push(record(4, f64::NAN, Some(0.8)));
        assert_eq!(h.best(Metric::TrainLoss).map(|r| r.epoch), Some(3));
        assert_eq!(h.best(Metric::TrainAccuracy).map(|r| r.epoch), Some(3));
        // Equal values: the earliest wins.
        assert_eq!(h.best(Metric::ValAccuracy).map(|r| r.epoch), Some(2));
        assert_eq!(h.best(Metric::ValLoss).map(|r| r.epoch), Some(2));
        assert_eq!(h.last().map(|r| r.epoch), Some(4));
        assert!((h.total_seconds() - 10.0).abs() < 1e-12);
    }

    #[test]
    fn best_without_validation_is_none() {
        let h = History {
            epochs: vec![record(1, 1.0, None), record(2, 0.5, None)],
        };
        assert!(h.best(Metric::ValAccuracy).is_none());
        assert_eq!(h.best(Metric::TrainLoss).map(|r| r.epoch), Some(2));
    }

    #[test]
    fn serde_round_trip() {
        let h = History {
            epochs: vec![record(1, 1.0, None), record(2, 0.5, Some(0.75))],
        };
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains("\"val_accuracy\":null"), "{json}");
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }
}
