//! Knowledge distillation (Hinton, Vinyals, Dean 2015): a student learns from a teacher's
//! softened class probabilities as well as from the labels,
//!
//! ```text
//! loss = α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α)·CE(student, labels)
//! ```
//!
//! T² keeps the soft term's gradients on the scale of the hard term's when T changes. With
//! augmentation off, the teacher's logits of every training image are computed once before
//! the first epoch and reused (the teacher's forward pass is the expensive part); with
//! augmentation on, the teacher sees each augmented batch, the same pixels as the student.

use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::teacher::{Teacher, TeacherError};
use crate::data::{AugmentConfig, Dataset, Image, InputSpec, tensor_of};
use crate::model::Classifier;
use crate::report::{EpochRecord, History};
use crate::train::TrainError;
use crate::train::fit::{FitObserver, correct, epoch_seed, validate};
use crate::train::loss::cross_entropy;
use crate::train::optim::OptimizerConfig;
use crate::train::schedule::{LrSchedule, ScheduleConfig};
use crate::train::source::SplitSource;

/// Why distillation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    #[error("temperature must be a finite number > 0, got {0} (e.g. --temperature 4)")]
    Temperature(f64),
    #[error("alpha must be in [0, 1], got {0} (0 = labels only, 1 = teacher only)")]
    Alpha(f64),
    #[error("{0}")]
    Config(String),
    #[error(
        "the teacher ({teacher}) scores {teacher_classes} classes but the data has {data_classes}: \
         distil with a teacher trained on the same classes"
    )]
    TeacherClasses {
        teacher: String,
        teacher_classes: usize,
        data_classes: usize,
    },
    #[error("alpha is {0} but no teacher was given: pass a teacher, or alpha 0 for labels only")]
    NoTeacher(f64),
    #[error("{0}")]
    Teacher(#[from] TeacherError),
    #[error("data: {0}")]
    Data(#[from] crate::data::DataError),
    #[error("{0}")]
    Train(#[from] TrainError),
    #[error(
        "distillation diverged in epoch {epoch}, batch {batch} (loss is NaN or infinite): \
         lower the learning rate"
    )]
    Diverged { epoch: usize, batch: usize },
}

/// The distillation loss of a batch (mean over its rows): `student` and `teacher` logits
/// N×K, `targets` N×K rows summing to 1 (one-hot labels).
pub fn distillation_loss(
    student: Tensor<2>,
    teacher: Tensor<2>,
    targets: Tensor<2>,
    temperature: f64,
    alpha: f64,
) -> Tensor<1> {
    let hard = cross_entropy(student.clone(), targets);
    if alpha == 0.0 {
        return hard;
    }
    let log_p_student = log_softmax(student.div_scalar(temperature), 1);
    let log_p_teacher = log_softmax(teacher.div_scalar(temperature), 1);
    // KL(p_t ‖ p_s) = Σ_k p_t (log p_t − log p_s).
    let kl = (log_p_teacher.clone().exp() * (log_p_teacher - log_p_student))
        .sum_dim(1)
        .mean();
    let soft = kl.mul_scalar(alpha * temperature * temperature);
    if alpha == 1.0 {
        soft
    } else {
        soft + hard.mul_scalar(1.0 - alpha)
    }
}

/// Everything the distillation loop needs besides the models and the data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistillConfig {
    pub temperature: f64,
    pub alpha: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    /// Per-image augmentation of the training images (`None` = off, teacher logits cached).
    /// MixUp and CutMix are not used: mixed images have no single teacher answer to cache.
    pub augment: Option<AugmentConfig>,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            temperature: 4.0,
            alpha: 0.7,
            epochs: 5,
            batch_size: 128,
            seed: 42,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            augment: None,
        }
    }
}

impl DistillConfig {
    pub fn validate(&self) -> Result<(), DistillError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(DistillError::Temperature(self.temperature));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(DistillError::Alpha(self.alpha));
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(DistillError::Config(
                "epochs and batch-size must be at least 1".into(),
            ));
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return Err(DistillError::Config(format!(
                "lr must be > 0, got {}",
                self.optimizer.lr
            )));
        }
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        Ok(())
    }
}

/// The images to learn from and to validate on, and the student's input.
#[derive(Debug, Clone)]
pub struct DistillData {
    pub dataset: Arc<Dataset>,
    pub train: Vec<usize>,
    /// Validation images (best epoch); empty = the last epoch is the result.
    pub val: Vec<usize>,
    pub input: InputSpec,
}

/// What [`distill`] hands back.
#[derive(Debug)]
pub struct DistillOutcome<M> {
    /// After the epoch with the best validation accuracy (the last without validation).
    pub best: M,
    pub best_epoch: usize,
    pub last: M,
    pub history: History,
    /// Seconds spent in the teacher's forward passes, and how many images it scored.
    pub teacher_seconds: f64,
    pub teacher_images: usize,
}

/// Trains `student` (parameters on the autodiff `device`) on `data.train` with the
/// distillation loss of `config`. `teacher` may be `None` only with α = 0 (plain
/// cross-entropy: the baseline a distilled student is compared with).
pub fn distill<M: Module + Classifier>(
    mut student: M,
    mut teacher: Option<&mut dyn Teacher>,
    data: &DistillData,
    config: &DistillConfig,
    device: &Device,
    observer: &mut dyn FitObserver,
) -> Result<DistillOutcome<M>, DistillError> {
    config.validate()?;
    let ds = &data.dataset;
    let classes = ds.num_classes();
    match teacher.as_deref() {
        None if config.alpha > 0.0 => return Err(DistillError::NoTeacher(config.alpha)),
        Some(t) if t.classes() != classes => {
            return Err(DistillError::TeacherClasses {
                teacher: t.describe(),
                teacher_classes: t.classes(),
                data_classes: classes,
            });
        }
        _ => {}
    }
    if config.alpha == 0.0 {
        teacher = None;
    }
    data.input.validate()?;
    if let Some(&bad) = data.train.iter().chain(&data.val).find(|&&i| i >= ds.len()) {
        return Err(DistillError::Config(format!(
            "image index {bad} is out of range ({} images)",
            ds.len()
        )));
    }
    let steps = data.train.len() / config.batch_size;
    if steps == 0 {
        return Err(DistillError::Config(format!(
            "{} training images make no full batch of {}: lower the batch size",
            data.train.len(),
            config.batch_size
        )));
    }

    // Teacher logits of every training image, once, when the images never change.
    let (mut teacher_seconds, mut teacher_images) = (0.0, 0usize);
    let mut cache: Option<Vec<f32>> = None;
    if config.augment.is_none()
        && let Some(t) = teacher.as_deref_mut()
    {
        let started = Instant::now();
        let mut all = vec![0f32; ds.len() * classes];
        for chunk in data.train.chunks(256) {
            let images: Vec<&Image> = chunk.iter().map(|&i| &ds.images[i]).collect();
            let logits = t.logits(&images)?;
            for (&i, row) in chunk.iter().zip(logits.chunks_exact(classes)) {
                all[i * classes..(i + 1) * classes].copy_from_slice(row);
            }
        }
        teacher_seconds += started.elapsed().as_secs_f64();
        teacher_images += data.train.len();
        cache = Some(all);
    }

    let schedule = LrSchedule::new(config.schedule, config.optimizer.lr, steps, config.epochs);
    let mut optim: ModuleOptimizer = config.optimizer.init();
    let val = (!data.val.is_empty()).then(|| {
        SplitSource::evaluation(
            ds.clone(),
            data.val.clone(),
            config.batch_size.max(64),
            data.input.clone(),
        )
    });
    let eval_device = Device::flex();
    let [h, w] = data.input.size;
    let per_image = data.input.len();
    let mut history = History::new();
    let mut best: Option<(f64, usize, M)> = None;
    let mut step = 0usize;
    let mut one = Vec::with_capacity(per_image);
    for epoch in 0..config.epochs {
        let started = Instant::now();
        let seed = epoch_seed(config.seed, epoch);
        device.seed(seed);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order = data.train.clone();
        order.shuffle(&mut rng);
        observer.epoch_start(epoch + 1, steps);
        let (mut loss_sum, mut right, mut seen) = (0.0, 0usize, 0usize);
        let mut lr = schedule.lr(step);
        for (b, chunk) in order.chunks_exact(config.batch_size).enumerate() {
            let n = chunk.len();
            let augmented: Option<Vec<Image>> = match &config.augment {
                Some(aug) => Some(
                    chunk
                        .iter()
                        .map(|&i| {
                            let mut img = ds.images[i].clone();
                            aug.augment_image(&mut img, &mut rng).map(|()| img)
                        })
                        .collect::<Result<_, _>>()?,
                ),
                None => None,
            };
            let images: Vec<&Image> = match &augmented {
                Some(v) => v.iter().collect(),
                None => chunk.iter().map(|&i| &ds.images[i]).collect(),
            };
            let mut pixels = Vec::with_capacity(n * per_image);
            for img in &images {
                tensor_of(img, &data.input, &mut one)?;
                pixels.extend_from_slice(&one);
            }
            let labels: Vec<usize> = chunk.iter().map(|&i| ds.labels[i]).collect();
            let mut onehot = vec![0f32; n * classes];
            for (r, &l) in labels.iter().enumerate() {
                onehot[r * classes + l] = 1.0;
            }
            let teacher_logits = match (&cache, teacher.as_deref_mut()) {
                (Some(all), _) => Some(
                    chunk
                        .iter()
                        .flat_map(|&i| all[i * classes..(i + 1) * classes].iter().copied())
                        .collect::<Vec<f32>>(),
                ),
                (None, Some(t)) => {
                    let started = Instant::now();
                    let l = t.logits(&images)?;
                    teacher_seconds += started.elapsed().as_secs_f64();
                    teacher_images += n;
                    Some(l)
                }
                (None, None) => None,
            };

            lr = schedule.lr(step);
            let x = Tensor::<4>::from_data(
                TensorData::new(pixels, [n, data.input.channels, h, w]),
                device,
            );
            let targets = Tensor::<2>::from_data(TensorData::new(onehot, [n, classes]), device);
            let logits = student.logits(x);
            let loss = match teacher_logits {
                Some(t) => {
                    let t = Tensor::<2>::from_data(TensorData::new(t, [n, classes]), device);
                    distillation_loss(logits.clone(), t, targets, config.temperature, config.alpha)
                }
                None => cross_entropy(logits.clone(), targets),
            };
            let grads = GradientsParams::from_grads(loss.backward(), &student);
            student = optim.step(lr, student, grads);
            let loss = loss.into_scalar::<f32>() as f64;
            if !loss.is_finite() {
                return Err(DistillError::Diverged {
                    epoch: epoch + 1,
                    batch: b + 1,
                });
            }
            let scores = logits
                .detach()
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| TrainError::Tensor(format!("{e:?}")))?;
            let batch_right = correct(&scores, &labels);
            loss_sum += loss * n as f64;
            right += batch_right;
            seen += n;
            step += 1;
            observer.batch_end(epoch + 1, b + 1, loss, batch_right as f64 / n as f64, n);
        }
        let (val_loss, val_accuracy) = match &val {
            Some(v) => {
                let (l, a) = validate(&student.valid(), v, &eval_device)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: right as f64 / seen.max(1) as f64,
            val_loss,
            val_accuracy,
            learning_rate: lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        observer.epoch_end(&record);
        history.push(record);
        let score = val_accuracy.unwrap_or(f64::INFINITY);
        if best
            .as_ref()
            .is_none_or(|(b, _, _)| score > *b || val_accuracy.is_none())
        {
            best = Some((score, epoch + 1, student.clone()));
        }
    }
    let (_, best_epoch, best_model) = match best {
        Some(b) => b,
        None => (0.0, config.epochs, student.clone()),
    };
    Ok(DistillOutcome {
        best: best_model,
        best_epoch,
        last: student,
        history,
        teacher_seconds,
        teacher_images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    fn log_softmax_f64(z: &[f64], t: f64) -> Vec<f64> {
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max) / t;
        let lse = z.iter().map(|v| (v / t - m).exp()).sum::<f64>().ln() + m;
        z.iter().map(|v| v / t - lse).collect()
    }

    /// The loss in f64, straight from the formula.
    fn by_hand(s: &[[f64; 3]], te: &[[f64; 3]], labels: &[usize], t: f64, alpha: f64) -> f64 {
        let mut total = 0.0;
        for ((s, te), &y) in s.iter().zip(te).zip(labels) {
            let ls = log_softmax_f64(s, t);
            let lt = log_softmax_f64(te, t);
            let kl: f64 = lt.iter().zip(&ls).map(|(a, b)| a.exp() * (a - b)).sum();
            let ce = -log_softmax_f64(s, 1.0)[y];
            total += alpha * t * t * kl + (1.0 - alpha) * ce;
        }
        total / s.len() as f64
    }

    #[test]
    fn loss_matches_the_formula() {
        let device = Device::flex();
        let s = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]];
        let te = [[1.0, 2.0, 0.0], [-1.0, 0.0, 4.0]];
        let labels = [0, 2];
        for (t, alpha) in [(4.0, 0.7), (1.0, 0.5), (2.5, 1.0), (3.0, 0.0)] {
            let loss = distillation_loss(
                Tensor::<2>::from_floats([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], &device),
                Tensor::<2>::from_floats([[1.0, 2.0, 0.0], [-1.0, 0.0, 4.0]], &device),
                Tensor::<2>::from_floats([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], &device),
                t,
                alpha,
            );
            let expected = by_hand(&s, &te, &labels, t, alpha);
            assert!(
                (scalar(loss) - expected).abs() < 1e-5,
                "T={t} α={alpha}: expected {expected}"
            );
        }
    }

    #[test]
    fn alpha_zero_is_cross_entropy_and_a_perfect_copy_costs_nothing_soft() {
        let device = Device::flex();
        let s = Tensor::<2>::from_floats([[0.3, -0.2, 1.5, 0.0]], &device);
        let te = Tensor::<2>::from_floats([[5.0, 1.0, -3.0, 0.0]], &device);
        let y = Tensor::<2>::from_floats([[0.0, 0.0, 1.0, 0.0]], &device);
        let ce = scalar(cross_entropy(s.clone(), y.clone()));
        let d = scalar(distillation_loss(s.clone(), te, y.clone(), 4.0, 0.0));
        assert!((d - ce).abs() < 1e-7);
        // The student equal to the teacher: KL = 0, only (1 − α)·CE is left.
        let d = scalar(distillation_loss(s.clone(), s.clone(), y, 4.0, 0.7));
        assert!((d - 0.3 * ce).abs() < 1e-5, "{d} vs {}", 0.3 * ce);
    }

    #[test]
    fn bad_settings_are_refused() {
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let c = DistillConfig {
                temperature: t,
                ..DistillConfig::default()
            };
            assert!(matches!(c.validate(), Err(DistillError::Temperature(_))));
        }
        for a in [-0.1, 1.1] {
            let c = DistillConfig {
                alpha: a,
                ..DistillConfig::default()
            };
            let e = c
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("alpha must be in [0, 1]"), "{e}");
        }
    }
}
