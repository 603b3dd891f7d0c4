//! Classification losses on soft targets (one-hot, label-smoothed or MixUp/CutMix-mixed rows).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

/// Which loss the training loop minimises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LossConfig {
    pub kind: LossKind,
    /// ε of label smoothing: the target row becomes `(1 − ε)·t + ε/K`. 0 = off.
    pub label_smoothing: f64,
    /// γ of the focal loss (ignored by cross-entropy); 0 makes focal equal cross-entropy.
    pub focal_gamma: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::CrossEntropy,
            label_smoothing: 0.0,
            focal_gamma: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// `−Σ_k t_k log p_k`, averaged over the batch.
    CrossEntropy,
    /// `−Σ_k t_k (1 − p_k)^γ log p_k` (Lin et al. 2017): down-weights easy examples.
    Focal,
}

impl LossConfig {
    /// The mean loss of a batch: `logits` N×K, `targets` N×K rows that sum to 1.
    pub fn loss(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        let targets = smooth(targets, self.label_smoothing);
        match self.kind {
            LossKind::CrossEntropy => cross_entropy(logits, targets),
            LossKind::Focal => focal(logits, targets, self.focal_gamma),
        }
    }
}

/// `(1 − ε)·t + ε/K` per row.
pub fn smooth(targets: Tensor<2>, epsilon: f64) -> Tensor<2> {
    if epsilon == 0.0 {
        return targets;
    }
    let [_, k] = targets.dims();
    targets
        .mul_scalar(1.0 - epsilon)
        .add_scalar(epsilon / k as f64)
}

/// Mean over the batch of `−Σ_k t_k log softmax(z)_k`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let log_p = log_softmax(logits, 1);
    (targets * log_p).sum_dim(1).mean().neg()
}

/// Mean over the batch of `−Σ_k t_k (1 − p_k)^γ log p_k`.
pub fn focal(logits: Tensor<2>, targets: Tensor<2>, gamma: f64) -> Tensor<1> {
    let log_p = log_softmax(logits, 1);
    if gamma == 0.0 {
        return (targets * log_p).sum_dim(1).mean().neg();
    }
    // (1 − p) is clamped away from 0 so that pow has a finite gradient for γ < 1.
    let weight = log_p
        .clone()
        .exp()
        .neg()
        .add_scalar(1.0)
        .clamp_min(1e-12)
        .powf_scalar(gamma);
    (targets * weight * log_p).sum_dim(1).mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    fn logits_and_targets(device: &Device) -> (Tensor<2>, Tensor<2>) {
        let logits = Tensor::<2>::from_floats([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], device);
        let targets = Tensor::<2>::from_floats([[1.0, 0.0, 0.0], [0.0, 0.3, 0.7]], device);
        (logits, targets)
    }

    /// −Σ t log softmax, by hand in f64.
    fn by_hand(logits: &[[f64; 3]], targets: &[[f64; 3]]) -> f64 {
        let mut total = 0.0;
        for (z, t) in logits.iter().zip(targets) {
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            total -= t.iter().zip(z).map(|(t, z)| t * (z - lse)).sum::<f64>();
        }
        total / logits.len() as f64
    }

    #[test]
    fn cross_entropy_matches_the_formula() {
        let device = Device::flex();
        let (logits, targets) = logits_and_targets(&device);
        let expected = by_hand(
            &[[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]],
            &[[1.0, 0.0, 0.0], [0.0, 0.3, 0.7]],
        );
        assert!((scalar(cross_entropy(logits, targets)) - expected).abs() < 1e-5);
    }

    #[test]
    fn focal_with_gamma_zero_is_cross_entropy() {
        let device = Device::flex();
        let (logits, targets) = logits_and_targets(&device);
        let ce = scalar(cross_entropy(logits.clone(), targets.clone()));
        let focal_loss = LossConfig {
            kind: LossKind::Focal,
            label_smoothing: 0.0,
            focal_gamma: 0.0,
        }
        .loss(logits.clone(), targets.clone());
        assert!((scalar(focal_loss) - ce).abs() < 1e-6);
        // The generic path (not the γ = 0 shortcut) agrees too, and γ > 0 shrinks the loss.
        let tiny_gamma = scalar(focal(logits.clone(), targets.clone(), 1e-9));
        assert!((tiny_gamma - ce).abs() < 1e-5);
        assert!(scalar(focal(logits, targets, 2.0)) < ce);
    }

    #[test]
    fn label_smoothing_by_hand() {
        let device = Device::flex();
        // K = 4, ε = 0.1: the hot class gets 0.9 + 0.025 = 0.925, the others 0.025.
        let targets = Tensor::<2>::from_floats([[0.0, 1.0, 0.0, 0.0]], &device);
        let smoothed = smooth(targets, 0.1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let expected = [0.025, 0.925, 0.025, 0.025];
        assert_eq!(smoothed.len(), 4);
        for (a, b) in smoothed.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{smoothed:?}");
        }
        // Zero logits: every log p = −ln 4, so the smoothed loss is ln 4 whatever ε is.
        let config = LossConfig {
            label_smoothing: 0.1,
            ..LossConfig::default()
        };
        let loss = config.loss(
            Tensor::zeros([1, 4], &device),
            Tensor::<2>::from_floats([[0.0, 1.0, 0.0, 0.0]], &device),
        );
        assert!((scalar(loss) - 4f64.ln()).abs() < 1e-5);
        // Logits [2, 0, 0, 0] on class 0: loss = −(0.925·(2 − lse) + 3·0.025·(0 − lse)).
        let loss = config.loss(
            Tensor::<2>::from_floats([[2.0, 0.0, 0.0, 0.0]], &device),
            Tensor::<2>::from_floats([[1.0, 0.0, 0.0, 0.0]], &device),
        );
        let lse = (2f64.exp() + 3.0).ln();
        let expected = -(0.925 * (2.0 - lse) + 0.075 * (-lse));
        assert!((scalar(loss) - expected).abs() < 1e-5);
    }
}
