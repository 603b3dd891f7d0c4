//! [`BatchSource`] over the data layer's [`Loader`]: one loader (one background thread) per
//! pass, seeded with the run's seed and the epoch.

use std::sync::Arc;

use super::{BatchSource, TrainError};
use crate::data::{AugmentConfig, BalancedSampler, Batch, Dataset, InputSpec, Loader};

/// One split of a dataset, batched for the model.
#[derive(Debug, Clone)]
pub struct SplitSource {
    pub dataset: Arc<Dataset>,
    pub indices: Vec<usize>,
    pub batch_size: usize,
    pub input: InputSpec,
    pub augment: Option<AugmentConfig>,
    /// Shuffle every epoch (training) or keep the order (evaluation).
    pub shuffle: bool,
    /// Leave out a last partial batch (training: BatchNorm and tiny batches do not mix).
    pub drop_last: bool,
    pub seed: u64,
    /// Class-balanced epochs drawn with replacement from `indices` instead of a shuffle.
    pub sampler: Option<Arc<BalancedSampler>>,
}

impl SplitSource {
    /// A training pass: shuffled, augmented, full batches only.
    pub fn training(
        dataset: Arc<Dataset>,
        indices: Vec<usize>,
        batch_size: usize,
        input: InputSpec,
        augment: Option<AugmentConfig>,
        seed: u64,
    ) -> Self {
        Self {
            dataset,
            indices,
            batch_size,
            input,
            augment,
            shuffle: true,
            drop_last: true,
            seed,
            sampler: None,
        }
    }

    /// Each epoch draws `indices.len()` images with replacement, weight 1 / (images of the
    /// class among `indices`), reproducible per (seed, epoch).
    pub fn balanced(mut self) -> Self {
        self.sampler = Some(Arc::new(BalancedSampler::new(&self.dataset, &self.indices)));
        self
    }

    /// An evaluation pass: every image once, in order, unaugmented.
    pub fn evaluation(
        dataset: Arc<Dataset>,
        indices: Vec<usize>,
        batch_size: usize,
        input: InputSpec,
    ) -> Self {
        Self {
            dataset,
            indices,
            batch_size,
            input,
            augment: None,
            shuffle: false,
            drop_last: false,
            seed: 0,
            sampler: None,
        }
    }

    /// The hard labels of the pass, in order (meaningful for unshuffled sources).
    pub fn labels(&self) -> Vec<usize> {
        self.indices
            .iter()
            .filter_map(|&i| self.dataset.labels.get(i).copied())
            .collect()
    }
}

/// Yields the loader's batches, then its error if it stopped early.
struct Checked {
    loader: Loader,
    done: bool,
}

impl Iterator for Checked {
    type Item = Result<Batch, TrainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.loader.next() {
            Some(batch) => Some(Ok(batch)),
            None => {
                self.done = true;
                self.loader
                    .error()
                    .map(|e| Err(TrainError::Loader(e.to_string())))
            }
        }
    }
}

impl BatchSource for SplitSource {
    fn batches(
        &self,
        epoch: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch, TrainError>> + '_>, TrainError> {
        let indices = match &self.sampler {
            Some(sampler) => sampler.epoch(self.seed, epoch as u64),
            None => self.indices.clone(),
        };
        let loader = Loader::new(
            self.dataset.clone(),
            indices,
            self.batch_size,
            self.input.clone(),
            self.augment,
            self.shuffle,
            self.seed,
            epoch as u64,
        )?
        .drop_last(self.drop_last);
        Ok(Box::new(Checked {
            loader,
            done: false,
        }))
    }

    fn batch_count(&self) -> usize {
        if self.batch_size == 0 {
            return 0;
        }
        if self.drop_last {
            self.indices.len() / self.batch_size
        } else {
            self.indices.len().div_ceil(self.batch_size)
        }
    }
}
