//! Hyper-parameter search: random sampling of learning rate, batch size, weight decay and
//! augmentation strength, then successive halving (Jamieson & Talwalkar 2016): every trial is
//! trained for `min_epochs` on the training split and scored on the validation split, the best
//! 1/eta go on with eta times the epochs, until one is left or `max_epochs` is reached.
//! Each rung trains from scratch, so a trial's score at a budget does not depend on the
//! budgets before it.

use std::fs;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::TrainConfig;
use super::fit::StopMetric;

/// Ranges to sample from (log-uniform for LR and weight decay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SearchSpace {
    pub lr: [f64; 2],
    pub batch_sizes: Vec<usize>,
    pub weight_decay: [f64; 2],
    pub augment_strength: [f64; 2],
}

impl Default for SearchSpace {
    fn default() -> Self {
        Self {
            lr: [0.01, 0.3],
            batch_sizes: vec![64, 128, 256],
            weight_decay: [1e-5, 1e-3],
            augment_strength: [0.0, 1.0],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SearchConfig {
    /// Trials sampled for the first rung.
    pub trials: usize,
    /// Epochs of the first rung.
    pub min_epochs: usize,
    /// No rung trains longer than this.
    pub max_epochs: usize,
    /// Keep the best 1/eta at every rung and multiply the epochs by eta.
    pub eta: usize,
    /// Seed of the sampling (the trials themselves use the base config's seed).
    pub seed: u64,
    pub space: SearchSpace,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            trials: 9,
            min_epochs: 1,
            max_epochs: 9,
            eta: 3,
            seed: 7,
            space: SearchSpace::default(),
        }
    }
}

/// One sampled point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub lr: f64,
    pub batch_size: usize,
    pub weight_decay: f64,
    pub augment_strength: f64,
}

impl Params {
    pub fn apply(&self, base: &TrainConfig, epochs: usize) -> TrainConfig {
        let mut c = base.clone();
        c.optimizer.lr = self.lr;
        c.batch_size = self.batch_size;
        c.optimizer.weight_decay = self.weight_decay;
        c.augment_strength = self.augment_strength;
        c.epochs = epochs;
        c
    }
}

/// What a trial reports at one rung.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RungResult {
    pub epochs: usize,
    pub val_accuracy: f64,
    pub val_loss: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub id: usize,
    pub params: Params,
    /// One entry per rung the trial reached.
    pub rungs: Vec<RungResult>,
}

impl Trial {
    /// The score of the last rung reached (higher is better for both metrics here).
    fn score(&self, metric: StopMetric) -> f64 {
        self.rungs
            .last()
            .map_or(f64::NEG_INFINITY, |r| match metric {
                StopMetric::ValAccuracy => r.val_accuracy,
                StopMetric::ValLoss => -r.val_loss,
            })
    }
}

/// The search's result: every trial, best first (furthest rung, then score).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub metric: StopMetric,
    pub trials: Vec<Trial>,
}

impl Leaderboard {
    pub fn best(&self) -> Option<&Trial> {
        self.trials.first()
    }

    /// A Markdown table of the trials, best first.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| rank | trial | lr | batch | weight decay | augment | epochs | val acc | val loss |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (rank, t) in self.trials.iter().enumerate() {
            let Some(r) = t.rungs.last() else { continue };
            s.push_str(&format!(
                "| {} | {} | {:.4} | {} | {:.1e} | {:.2} | {} | {:.4} | {:.4} |\n",
                rank + 1,
                t.id,
                t.params.lr,
                t.params.batch_size,
                t.params.weight_decay,
                t.params.augment_strength,
                r.epochs,
                r.val_accuracy,
                r.val_loss
            ));
        }
        s
    }

    /// Writes `leaderboard.json`, `leaderboard.md` and `best-config.toml` (the base config
    /// with the best trial's values and `epochs` set to the budget it reached).
    pub fn write(&self, dir: &Path, base: &TrainConfig) -> Result<Vec<PathBuf>, TrainError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let json = dir.join("leaderboard.json");
        let text = serde_json::to_string_pretty(self)?;
        fs::write(&json, text).map_err(io(&json))?;
        let md = dir.join("leaderboard.md");
        fs::write(&md, self.table()).map_err(io(&md))?;
        let mut written = vec![json, md];
        if let Some(best) = self.best()
            && let Some(rung) = best.rungs.last()
        {
            let toml = dir.join("best-config.toml");
            fs::write(&toml, best.params.apply(base, rung.epochs).to_toml()?).map_err(io(&toml))?;
            written.push(toml);
        }
        Ok(written)
    }
}

fn log_uniform(rng: &mut StdRng, [lo, hi]: [f64; 2]) -> f64 {
    if lo <= 0.0 || hi <= lo {
        return lo;
    }
    (rng.random_range(lo.ln()..=hi.ln())).exp()
}

/// The first rung's points, drawn from `config.space` with `config.seed`.
pub fn sample(config: &SearchConfig) -> Result<Vec<Params>, TrainError> {
    let space = &config.space;
    if space.batch_sizes.is_empty() || space.batch_sizes.contains(&0) {
        return Err(TrainError::Config(
            "search batch-sizes must list at least one size > 0".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    Ok((0..config.trials)
        .map(|_| {
            let [alo, ahi] = space.augment_strength;
            Params {
                lr: log_uniform(&mut rng, space.lr),
                batch_size: space.batch_sizes[rng.random_range(0..space.batch_sizes.len())],
                weight_decay: log_uniform(&mut rng, space.weight_decay),
                augment_strength: if ahi > alo {
                    rng.random_range(alo..=ahi)
                } else {
                    alo
                },
            }
        })
        .collect())
}

/// Runs successive halving. `train` trains one configuration (its `epochs` set to the rung's
/// budget) and returns its validation result; `on_rung` sees the leaderboard after each rung.
pub fn successive_halving(
    base: &TrainConfig,
    config: &SearchConfig,
    train: &mut dyn FnMut(usize, &TrainConfig) -> Result<RungResult, TrainError>,
    on_rung: &mut dyn FnMut(&Leaderboard),
) -> Result<Leaderboard, TrainError> {
    if config.trials == 0 || config.min_epochs == 0 || config.eta < 2 {
        return Err(TrainError::Config(
            "search needs trials >= 1, min-epochs >= 1 and eta >= 2".into(),
        ));
    }
    let metric = base.early_stopping.metric;
    let mut trials: Vec<Trial> = sample(config)?
        .into_iter()
        .enumerate()
        .map(|(id, params)| Trial {
            id: id + 1,
            params,
            rungs: Vec::new(),
        })
        .collect();
    let mut alive: Vec<usize> = (0..trials.len()).collect();
    let mut epochs = config.min_epochs;
    let mut board = Leaderboard {
        metric,
        trials: Vec::new(),
    };
    loop {
        for &i in &alive {
            let run = trials[i].params.apply(base, epochs);
            let result = train(trials[i].id, &run)?;
            trials[i].rungs.push(result);
        }
        board.trials = ranked(&trials, metric);
        on_rung(&board);
        let keep = (alive.len() / config.eta).max(1);
        let next_epochs = epochs.saturating_mul(config.eta).min(config.max_epochs);
        if alive.len() == 1 || next_epochs <= epochs {
            break;
        }
        alive.sort_by(|&a, &b| trials[b].score(metric).total_cmp(&trials[a].score(metric)));
        alive.truncate(keep);
        epochs = next_epochs;
    }
    Ok(board)
}

/// Furthest rung first, then best score.
fn ranked(trials: &[Trial], metric: StopMetric) -> Vec<Trial> {
    let mut sorted = trials.to_vec();
    sorted.sort_by(|a, b| {
        b.rungs
            .len()
            .cmp(&a.rungs.len())
            .then(b.score(metric).total_cmp(&a.score(metric)))
    });
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic objective: best at lr = 0.05, improving with epochs.
    fn objective(c: &TrainConfig) -> RungResult {
        let miss = (c.optimizer.lr.ln() - 0.05f64.ln()).abs();
        let acc = 1.0 - miss / 10.0 - 1.0 / (c.epochs as f64 + 1.0);
        RungResult {
            epochs: c.epochs,
            val_accuracy: acc,
            val_loss: 1.0 - acc,
            seconds: 0.0,
        }
    }

    #[test]
    fn halving_keeps_the_best_third_and_triples_the_budget() -> Result<(), TrainError> {
        let config = SearchConfig {
            trials: 9,
            min_epochs: 1,
            max_epochs: 9,
            eta: 3,
            ..SearchConfig::default()
        };
        let mut calls = Vec::new();
        let board = successive_halving(
            &TrainConfig::default(),
            &config,
            &mut |id, c| {
                calls.push((id, c.epochs));
                Ok(objective(c))
            },
            &mut |_| {},
        )?;
        // 9 trials × 1 epoch, 3 × 3, 1 × 9.
        let budgets: Vec<usize> = calls.iter().map(|c| c.1).collect();
        assert_eq!(budgets, [[1; 9].as_slice(), &[3; 3], &[9]].concat());
        let best = board.best().ok_or(TrainError::NoTrials)?;
        assert_eq!(best.rungs.len(), 3);
        // The winner is the sampled LR closest to 0.05 (the objective's optimum).
        let closest = sample(&config)?
            .iter()
            .map(|p| (p.lr.ln() - 0.05f64.ln()).abs())
            .fold(f64::INFINITY, f64::min);
        assert!(((best.params.lr.ln() - 0.05f64.ln()).abs() - closest).abs() < 1e-12);
        assert!(board.table().lines().count() == 2 + 9);
        Ok(())
    }

    #[test]
    fn samples_stay_in_their_ranges_and_repeat_with_the_seed() -> Result<(), TrainError> {
        let config = SearchConfig::default();
        let a = sample(&config)?;
        assert_eq!(a, sample(&config)?);
        for p in &a {
            assert!((0.01..=0.3).contains(&p.lr));
            assert!((1e-5..=1e-3).contains(&p.weight_decay));
            assert!(config.space.batch_sizes.contains(&p.batch_size));
            assert!((0.0..=1.0).contains(&p.augment_strength));
        }
        Ok(())
    }
}
