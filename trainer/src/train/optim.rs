//! Optimisers (burn-optim): SGD with momentum (optionally Nesterov) and AdamW, with weight
//! decay and optional gradient clipping.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    /// Base learning rate (the schedule scales it per step).
    pub lr: f64,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    pub nesterov: bool,
    /// SGD: L2 penalty added to the gradient; AdamW: decoupled decay.
    pub weight_decay: f64,
    /// AdamW β₁, β₂.
    pub beta1: f64,
    pub beta2: f64,
    /// Clip the global gradient norm of each parameter to this value (0 = off).
    pub grad_clip_norm: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Sgd,
    Adamw,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            grad_clip_norm: 0.0,
        }
    }
}

impl OptimizerConfig {
    /// A fresh optimiser with empty state.
    pub fn init(&self) -> ModuleOptimizer {
        let clip = (self.grad_clip_norm > 0.0)
            .then_some(GradientClippingConfig::Norm(self.grad_clip_norm as f32));
        match self.kind {
            OptimizerKind::Sgd => SgdConfig::new()
                .with_momentum((self.momentum > 0.0).then_some(MomentumConfig {
                    momentum: self.momentum,
                    dampening: 0.0,
                    nesterov: self.nesterov,
                }))
                .with_weight_decay(
                    (self.weight_decay > 0.0)
                        .then(|| WeightDecayConfig::new(self.weight_decay as f32)),
                )
                .with_gradient_clipping(clip)
                .init(),
            OptimizerKind::Adamw => AdamWConfig::new()
                .with_beta_1(self.beta1 as f32)
                .with_beta_2(self.beta2 as f32)
                .with_weight_decay(self.weight_decay as f32)
                .with_grad_clipping(clip)
                .init(),
        }
    }
}
