//! The class-balanced sampler: an epoch of training images drawn with replacement, each with a
//! weight of 1 / (images of its class), so that every class is seen about equally often (a few
//! hundred captured frames of a rare class count as much as thousands of a common one).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Dataset;

/// Draws epochs from a fixed list of training indices.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancedSampler {
    indices: Vec<usize>,
    /// Running sum of the weights, for drawing by binary search.
    cumulative: Vec<f64>,
}

impl BalancedSampler {
    /// A sampler over `indices` of `ds` (indices whose label is out of range get no weight).
    pub fn new(ds: &Dataset, indices: &[usize]) -> Self {
        let counts = ds.class_counts(indices);
        let mut total = 0.0;
        let cumulative = indices
            .iter()
            .map(|&i| {
                let n = ds
                    .labels
                    .get(i)
                    .and_then(|&l| counts.get(l))
                    .copied()
                    .unwrap_or(0);
                if n > 0 {
                    total += 1.0 / n as f64;
                }
                total
            })
            .collect();
        Self {
            indices: indices.to_vec(),
            cumulative,
        }
    }

    /// Images per epoch: as many as the split holds, as without the sampler.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The indices of one epoch, in drawing order; the same `seed` and `epoch` give the same
    /// draw.
    pub fn epoch(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        if total <= 0.0 {
            return Vec::new();
        }
        let mut rng = StdRng::seed_from_u64(
            seed ^ epoch
                .wrapping_add(1)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(17),
        );
        (0..self.indices.len())
            .map(|_| {
                let x = rng.random::<f64>() * total;
                let k = self.cumulative.partition_point(|&c| c <= x);
                self.indices[k.min(self.indices.len() - 1)]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Image;
    use super::*;

    /// `per_class[c]` 1×1 images of class c.
    fn toy(per_class: &[usize]) -> Dataset {
        let mut ds = Dataset {
            classes: (0..per_class.len()).map(|c| format!("c{c}")).collect(),
            images: Vec::new(),
            labels: Vec::new(),
            origins: Vec::new(),
            predefined_test: None,
            description: "toy".into(),
        };
        for (c, &n) in per_class.iter().enumerate() {
            for _ in 0..n {
                ds.origins.push(format!("f{}", ds.images.len()));
                ds.images.push(Image {
                    width: 1,
                    height: 1,
                    channels: 1,
                    pixels: vec![0],
                });
                ds.labels.push(c);
            }
        }
        ds
    }

    #[test]
    fn classes_are_drawn_about_equally_often() {
        // 900 : 90 : 10 images; 20 epochs of 1000 draws.
        let ds = toy(&[900, 90, 10]);
        let sampler = BalancedSampler::new(&ds, &ds.all_indices());
        let mut counts = [0usize; 3];
        for epoch in 0..20 {
            let drawn = sampler.epoch(5, epoch);
            assert_eq!(drawn.len(), 1000);
            for c in ds.class_counts(&drawn).iter().enumerate() {
                counts[c.0] += c.1;
            }
        }
        for (class, &n) in counts.iter().enumerate() {
            let share = n as f64 / 20_000.0;
            assert!(
                (share - 1.0 / 3.0).abs() < 0.02,
                "class {class}: {share:.3}"
            );
        }
        // The rare class's 10 images are all drawn, each many times.
        let rare = sampler.epoch(5, 0);
        let distinct: std::collections::BTreeSet<_> = rare.iter().filter(|&&i| i >= 990).collect();
        assert_eq!(distinct.len(), 10);
    }

    #[test]
    fn draws_are_deterministic_per_seed_and_epoch() {
        let ds = toy(&[50, 5]);
        let indices: Vec<usize> = (0..55).filter(|i| i % 3 != 0).collect();
        let sampler = BalancedSampler::new(&ds, &indices);
        assert_eq!(sampler.epoch(1, 0), sampler.epoch(1, 0));
        assert_ne!(sampler.epoch(1, 0), sampler.epoch(1, 1));
        assert_ne!(sampler.epoch(1, 0), sampler.epoch(2, 0));
        assert!(sampler.epoch(1, 0).iter().all(|i| indices.contains(i)));
    }

    #[test]
    fn an_empty_split_draws_nothing() {
        let ds = toy(&[3, 3]);
        assert!(BalancedSampler::new(&ds, &[]).epoch(0, 0).is_empty());
    }
}
