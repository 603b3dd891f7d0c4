//! Batches for training and evaluation, prepared on a background thread.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::input::{fit, write_tensor};
use super::{AugmentConfig, Batch, DataError, Dataset, InputSpec, check_image};

/// SplitMix64 finaliser: derives independent seeds from (seed, epoch, batch).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the worker thread needs; shared with the synchronous path of the tests.
#[derive(Clone)]
struct Plan {
    ds: Arc<Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    input: InputSpec,
    augment: Option<AugmentConfig>,
    seed: u64,
    batches: usize,
}

impl Plan {
    /// Batch `b`: images fitted to the input (as `visionclassify` does), augmented with an RNG
    /// of its own (so the result does not depend on threads or timing), normalised, then
    /// MixUp/CutMix.
    fn batch(&self, b: usize) -> Result<Batch, DataError> {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let items = &self.order[start..end];
        let n = items.len();
        let classes = self.ds.num_classes();
        let per = self.input.len();
        let mut rng = StdRng::seed_from_u64(mix(self.seed, b as u64 + 1));
        let mut batch = Batch {
            images: vec![0.0; n * per],
            targets: vec![0.0; n * classes],
            labels: Vec::with_capacity(n),
            shape: [
                n,
                self.input.channels,
                self.input.size[0],
                self.input.size[1],
            ],
            classes,
        };
        for (slot, &i) in items.iter().enumerate() {
            let fitted = fit(&self.ds.images[i], &self.input)?;
            let out = &mut batch.images[slot * per..(slot + 1) * per];
            match &self.augment {
                Some(aug) if !aug.is_identity_per_image() => {
                    let mut img = fitted.into_owned();
                    aug.augment_image(&mut img, &mut rng)?;
                    write_tensor(&img, &self.input, out);
                }
                _ => write_tensor(&fitted, &self.input, out),
            }
            let label = self.ds.labels[i];
            batch.targets[slot * classes + label] = 1.0;
            batch.labels.push(label);
        }
        if let Some(aug) = &self.augment {
            aug.mix_batch(&mut batch, &mut rng);
        }
        Ok(batch)
    }

    fn run(self, tx: SyncSender<Result<Batch, DataError>>) {
        for b in 0..self.batches {
            let result = self.batch(b);
            let failed = result.is_err();
            // A closed channel means the loader was dropped: stop quietly.
            if tx.send(result).is_err() || failed {
                return;
            }
        }
    }
}

/// An epoch's batches over `indices` of a dataset, as an `Iterator<Item = Batch>`.
///
/// A background thread fits each image to the model's input exactly as `visionclassify`
/// does (see [`super::tensor_of`]), applies the per-image augmentations, normalises into
/// N×C×H×W, and applies MixUp/CutMix, keeping up to `prefetch` (default 3) batches ready so
/// that this overlaps the training step. The same `seed` and `epoch` give the same batches
/// (order and augmentation); each epoch shuffles differently. The last batch may be smaller
/// unless [`Loader::drop_last`] is set.
///
/// The thread starts with the first `next()`. Should preparing a batch fail (an OpenCV error
/// on a validated image, which should not happen), iteration ends early and
/// [`Loader::error`] says why: a training loop should check it after each epoch.
///
/// For pictures much larger than the model's input, call [`Dataset::fitted`] once so epochs
/// do not resize again; the batches are the same.
pub struct Loader {
    plan: Option<Plan>,
    batches: usize,
    drop_last: bool,
    prefetch: usize,
    rx: Option<Receiver<Result<Batch, DataError>>>,
    worker: Option<JoinHandle<()>>,
    error: Option<DataError>,
    yielded: usize,
}

impl Loader {
    /// Checks everything that could fail later (batch size, input spec, augmentation
    /// settings, every index, image and label), so that preparing batches cannot fail on
    /// user input. Indices may repeat (oversampling).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ds: Arc<Dataset>,
        indices: Vec<usize>,
        batch_size: usize,
        input: InputSpec,
        augment: Option<AugmentConfig>,
        shuffle: bool,
        seed: u64,
        epoch: u64,
    ) -> Result<Loader, DataError> {
        if batch_size == 0 {
            return Err(DataError::BatchSize);
        }
        input.validate()?;
        if let Some(a) = &augment {
            a.validate()?;
        }
        let mut checked = vec![false; ds.len()];
        for &i in &indices {
            if i >= ds.len() {
                return Err(DataError::IndexOutOfRange {
                    index: i,
                    len: ds.len(),
                });
            }
            if std::mem::replace(&mut checked[i], true) {
                continue;
            }
            check_image(&ds.images[i]).map_err(|reason| DataError::BadImage {
                index: i,
                origin: ds.origins.get(i).cloned().unwrap_or_default(),
                reason,
            })?;
            let label = ds.labels.get(i).copied().unwrap_or(usize::MAX);
            if label >= ds.num_classes() {
                return Err(DataError::LabelOutOfRange {
                    index: i,
                    label,
                    classes: ds.num_classes(),
                });
            }
        }
        let seed = mix(seed, epoch);
        let mut order = indices;
        if shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(seed));
        }
        let batches = order.len().div_ceil(batch_size);
        Ok(Loader {
            plan: Some(Plan {
                ds,
                order,
                batch_size,
                input,
                augment,
                seed,
                batches,
            }),
            batches,
            drop_last: false,
            prefetch: 3,
            rx: None,
            worker: None,
            error: None,
            yielded: 0,
        })
    }

    /// Leaves out a last batch smaller than the batch size (for BatchNorm, which dislikes
    /// tiny batches). Only before the first `next()`.
    pub fn drop_last(mut self, yes: bool) -> Self {
        self.drop_last = yes;
        self
    }

    /// How many prepared batches may wait (at least 1). Only before the first `next()`.
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches.max(1);
        self
    }

    /// Batches this loader yields in the epoch.
    pub fn len_batches(&self) -> usize {
        match &self.plan {
            Some(p) if self.drop_last => p.order.len() / p.batch_size,
            _ => self.batches,
        }
    }

    /// Why iteration stopped early, if it did.
    pub fn error(&self) -> Option<&DataError> {
        self.error.as_ref()
    }

    fn start(&mut self) {
        let Some(mut plan) = self.plan.take() else {
            return;
        };
        if self.drop_last {
            plan.batches = plan.order.len() / plan.batch_size;
        }
        self.batches = plan.batches;
        let (tx, rx) = sync_channel(self.prefetch);
        let spawned = std::thread::Builder::new()
            .name("data-loader".into())
            .spawn(move || plan.run(tx));
        match spawned {
            Ok(handle) => {
                self.worker = Some(handle);
                self.rx = Some(rx);
            }
            Err(e) => {
                self.error = Some(DataError::Io {
                    path: "data-loader thread".into(),
                    source: e,
                });
            }
        }
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.plan.is_some() {
            self.start();
        }
        if self.yielded >= self.batches {
            return None;
        }
        let received = self.rx.as_ref()?.recv();
        match received {
            Ok(Ok(batch)) => {
                self.yielded += 1;
                Some(batch)
            }
            Ok(Err(e)) => {
                self.error = Some(e);
                self.rx = None;
                None
            }
            Err(_) => {
                self.error.get_or_insert(DataError::Io {
                    path: "data-loader thread".into(),
                    source: std::io::Error::other("the batch thread stopped unexpectedly"),
                });
                self.rx = None;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len_batches().saturating_sub(self.yielded);
        (0, Some(left))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel first makes a worker blocked on `send` return.
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Image;
    use super::*;
    use crate::onnx::metadata::Resize;

    fn toy(n: usize) -> Arc<Dataset> {
        Arc::new(Dataset {
            classes: vec!["a".into(), "b".into(), "c".into()],
            images: (0..n)
                .map(|i| Image {
                    width: 4,
                    height: 3,
                    channels: 1,
                    pixels: vec![i as u8; 12],
                })
                .collect(),
            labels: (0..n).map(|i| i % 3).collect(),
            origins: (0..n).map(|i| format!("#{i}")).collect(),
            predefined_test: None,
            description: "toy".into(),
        })
    }

    fn input() -> InputSpec {
        InputSpec {
            size: [3, 4],
            channels: 1,
            resize: Resize::Stretch,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    #[test]
    fn every_index_once_in_order_without_shuffle() {
        let ds = toy(10);
        let loader =
            Loader::new(ds, (0..10).collect(), 4, input(), None, false, 0, 0).expect("loader");
        assert_eq!(loader.len_batches(), 3);
        let batches: Vec<Batch> = loader.collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].shape, [2, 1, 3, 4]);
        let firsts: Vec<f32> = batches
            .iter()
            .flat_map(|b| b.images.chunks(12).map(|c| c[0]))
            .collect();
        assert_eq!(firsts, (0..10).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(batches[0].labels, vec![0, 1, 2, 0]);
        assert_eq!(batches[0].targets[3..6], [0.0, 1.0, 0.0]);
    }

    #[test]
    fn shuffle_is_reproducible_per_epoch() {
        let ds = toy(50);
        let labels = |epoch| {
            let l = Loader::new(
                ds.clone(),
                (0..50).collect(),
                8,
                input(),
                None,
                true,
                42,
                epoch,
            )
            .expect("loader");
            l.flat_map(|b| {
                b.images
                    .chunks(12)
                    .map(|c| c[0] as usize)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
        };
        let (a, b, c) = (labels(0), labels(0), labels(1));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn drop_last_and_bad_arguments() {
        let ds = toy(10);
        let l = Loader::new(ds.clone(), (0..10).collect(), 4, input(), None, false, 0, 0)
            .expect("loader")
            .drop_last(true);
        assert_eq!(l.len_batches(), 2);
        assert_eq!(l.count(), 2);
        assert!(matches!(
            Loader::new(ds.clone(), vec![0], 0, input(), None, false, 0, 0),
            Err(DataError::BatchSize)
        ));
        assert!(matches!(
            Loader::new(ds.clone(), vec![10], 2, input(), None, false, 0, 0),
            Err(DataError::IndexOutOfRange { index: 10, len: 10 })
        ));
        let bad = AugmentConfig {
            hflip: 2.0,
            ..AugmentConfig::default()
        };
        assert!(Loader::new(ds, vec![1], 2, input(), Some(bad), false, 0, 0).is_err());
    }

    #[test]
    fn dropping_a_loader_mid_epoch_does_not_hang() {
        let ds = toy(100);
        let mut l = Loader::new(ds, (0..100).collect(), 1, input(), None, true, 1, 1)
            .expect("loader")
            .prefetch(1);
        assert!(l.next().is_some());
        drop(l);
    }
}
