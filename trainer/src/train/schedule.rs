//! Learning-rate schedules, computed per optimiser step, each with an optional linear warm-up.

use serde::{Deserialize, Serialize};

/// The schedule as configured (epochs are converted to steps with the number of batches per
/// epoch, so a schedule does not change meaning with the batch size).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Epochs of linear warm-up from `lr · warmup_start_factor` to `lr` (0 = none); the
    /// schedule proper starts after it.
    pub warmup_epochs: f64,
    pub warmup_start_factor: f64,
    /// Step decay: multiply by `gamma` every `step_epochs` epochs.
    pub step_epochs: f64,
    pub gamma: f64,
    /// Cosine: the LR at the end is `lr · min_factor`; cyclical: the low end of the triangle.
    pub min_factor: f64,
    /// Cyclical (triangular): epochs of one full cycle (low → high → low).
    pub cycle_epochs: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            warmup_epochs: 1.0,
            warmup_start_factor: 0.1,
            step_epochs: 5.0,
            gamma: 0.1,
            min_factor: 0.0,
            cycle_epochs: 4.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// The base LR throughout (after warm-up).
    Constant,
    /// `lr · gamma^⌊t / step⌋`.
    Step,
    /// Cosine annealing from `lr` to `lr · min_factor` over the remaining steps.
    Cosine,
    /// Triangular cyclical LR between `lr · min_factor` and `lr` (Smith 2017).
    Cyclical,
}

/// A schedule resolved to steps: `lr(step)` for step 0, 1, ... `total_steps − 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    config: ScheduleConfig,
    base_lr: f64,
    steps_per_epoch: usize,
    total_steps: usize,
}

impl LrSchedule {
    pub fn new(
        config: ScheduleConfig,
        base_lr: f64,
        steps_per_epoch: usize,
        epochs: usize,
    ) -> Self {
        let steps_per_epoch = steps_per_epoch.max(1);
        Self {
            config,
            base_lr,
            steps_per_epoch,
            total_steps: steps_per_epoch * epochs.max(1),
        }
    }

    fn steps(&self, epochs: f64) -> usize {
        (epochs * self.steps_per_epoch as f64).round().max(0.0) as usize
    }

    /// The learning rate of optimiser step `step` (counted from 0 over the whole run).
    pub fn lr(&self, step: usize) -> f64 {
        let c = &self.config;
        let warmup = self.steps(c.warmup_epochs).min(self.total_steps);
        if step < warmup {
            // Linear from start_factor·lr at step 0 to lr at step `warmup`.
            let f =
                c.warmup_start_factor + (1.0 - c.warmup_start_factor) * step as f64 / warmup as f64;
            return self.base_lr * f;
        }
        let t = step - warmup;
        let span = self.total_steps.saturating_sub(warmup).max(1);
        let low = self.base_lr * c.min_factor;
        match c.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Step => {
                let every = self.steps(c.step_epochs).max(1);
                self.base_lr * c.gamma.powi((t / every) as i32)
            }
            ScheduleKind::Cosine => {
                let progress = (t as f64 / span as f64).min(1.0);
                low + (self.base_lr - low) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            ScheduleKind::Cyclical => {
                let cycle = self.steps(c.cycle_epochs).max(2);
                let half = cycle as f64 / 2.0;
                let pos = (t % cycle) as f64;
                // 0 at the cycle's start and end, 1 in its middle.
                let rise = 1.0 - (pos / half - 1.0).abs();
                low + (self.base_lr - low) * rise
            }
        }
    }

    pub fn total_steps(&self) -> usize {
        self.total_steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn config(kind: ScheduleKind, warmup_epochs: f64) -> ScheduleConfig {
        ScheduleConfig {
            kind,
            warmup_epochs,
            warmup_start_factor: 0.0,
            step_epochs: 2.0,
            gamma: 0.5,
            min_factor: 0.1,
            cycle_epochs: 2.0,
        }
    }

    #[test]
    fn warmup_is_linear_then_the_schedule_starts() {
        // 10 steps per epoch, 1 warm-up epoch: 0, 0.1, ..., 0.9 of lr, then lr.
        let s = LrSchedule::new(config(ScheduleKind::Constant, 1.0), 0.2, 10, 5);
        assert!(close(s.lr(0), 0.0));
        assert!(close(s.lr(5), 0.1));
        assert!(close(s.lr(9), 0.18));
        assert!(close(s.lr(10), 0.2));
        assert!(close(s.lr(49), 0.2));
        let mut c = config(ScheduleKind::Constant, 1.0);
        c.warmup_start_factor = 0.5;
        let s = LrSchedule::new(c, 0.2, 10, 5);
        assert!(close(s.lr(0), 0.1));
        assert!(close(s.lr(5), 0.15));
    }

    #[test]
    fn step_decay_halves_every_two_epochs() {
        let s = LrSchedule::new(config(ScheduleKind::Step, 0.0), 1.0, 10, 10);
        assert!(close(s.lr(0), 1.0));
        assert!(close(s.lr(19), 1.0));
        assert!(close(s.lr(20), 0.5));
        assert!(close(s.lr(45), 0.25));
        assert!(close(s.lr(99), 0.0625));
    }

    #[test]
    fn cosine_goes_from_lr_to_min_after_warmup() {
        // 100 steps, 10 warm-up: cosine over the remaining 90.
        let s = LrSchedule::new(config(ScheduleKind::Cosine, 1.0), 1.0, 10, 10);
        assert!(close(s.lr(10), 1.0));
        // Half way (step 10 + 45): (1 + 0.1) / 2.
        assert!(close(s.lr(55), 0.55));
        assert!(s.lr(99) > 0.1 && s.lr(99) < 0.1 + 1e-3);
        assert!(close(s.lr(100), 0.1));
    }

    #[test]
    fn cyclical_is_a_triangle() {
        // Cycle of 2 epochs = 20 steps between 0.1 and 1.0.
        let s = LrSchedule::new(config(ScheduleKind::Cyclical, 0.0), 1.0, 10, 10);
        assert!(close(s.lr(0), 0.1));
        assert!(close(s.lr(5), 0.55));
        assert!(close(s.lr(10), 1.0));
        assert!(close(s.lr(15), 0.55));
        assert!(close(s.lr(20), 0.1));
        assert!(close(s.lr(30), 1.0));
    }
}
