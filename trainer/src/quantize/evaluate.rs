//! Running a model in ONNX Runtime for the gate: logits on an image set, top-1 accuracy (or
//! agreement with the float parent when the set has no labels), and throughput at a batch
//! size, measured for the parent and the candidate interleaved with the same session options.

use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;

use super::{Images, QuantizeError};

/// Session options shared by every model being compared.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// Intra-op threads (0 = ORT's default: one per core).
    pub threads: usize,
    /// Whether idle ORT workers spin; off as in `visionclassify`.
    pub spinning: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            spinning: false,
        }
    }
}

/// A CPU session over a serialized model.
pub fn session(
    env: &Environment,
    model: &[u8],
    options: &SessionOptions,
) -> Result<Session, QuantizeError> {
    let load = |e: String| QuantizeError::Runtime(format!("cannot load the model: {e}"));
    let mut builder = Session::builder(env).map_err(|e| load(e.to_string()))?;
    builder = builder
        .with_intra_op_spinning(options.spinning)
        .map_err(|e| load(e.to_string()))?;
    if options.threads > 0 {
        builder = builder
            .with_intra_threads(options.threads)
            .map_err(|e| load(e.to_string()))?;
    }
    builder
        .commit_from_memory(model)
        .map_err(|e| load(e.to_string()))
}

/// The first output of `session` for every image, concatenated (N × classes).
pub fn logits(
    session: &mut Session,
    images: &Images,
    batch: usize,
) -> Result<Vec<f32>, QuantizeError> {
    let run = |e: ort::Error| QuantizeError::Runtime(e.to_string());
    let input = session
        .inputs()
        .first()
        .map(|i| i.name().to_owned())
        .ok_or_else(|| QuantizeError::NotAModel("the model has no input".into()))?;
    let mut all = Vec::new();
    for (data, shape, real) in images.padded_batches(batch) {
        let tensor = TensorRef::from_array_view((shape.clone(), data.as_slice())).map_err(run)?;
        let outputs = session
            .run(ort::inputs![input.as_str() => tensor])
            .map_err(run)?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>().map_err(run)?;
        let per = values.len() / shape[0].max(1);
        all.extend_from_slice(&values[..per * real]);
    }
    Ok(all)
}

/// The index of the largest logit of each row.
pub fn top1(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks_exact(classes.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect()
}

/// Percentage of `predicted` equal to `truth`.
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let hits = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    100.0 * hits as f64 / truth.len() as f64
}

/// Images per second of each session at `batch`, measured in `rounds` interleaved rounds of
/// at least `round_time` each (after a warm-up); the median round of each session.
pub fn interleaved_throughput(
    sessions: &mut [&mut Session],
    images: &Images,
    batch: usize,
    rounds: usize,
    round_time: Duration,
) -> Result<Vec<f64>, QuantizeError> {
    let run = |e: ort::Error| QuantizeError::Runtime(e.to_string());
    let (data, shape, _) = images
        .padded_batches(batch)
        .next()
        .ok_or(QuantizeError::EmptyCalibration)?;
    let mut per_session: Vec<Vec<f64>> = vec![Vec::new(); sessions.len()];
    for round in 0..=rounds {
        for (s, rates) in sessions.iter_mut().zip(per_session.iter_mut()) {
            let input = s
                .inputs()
                .first()
                .map(|i| i.name().to_owned())
                .ok_or_else(|| QuantizeError::NotAModel("the model has no input".into()))?;
            let start = Instant::now();
            let mut runs = 0usize;
            while runs < 2 || start.elapsed() < round_time {
                let tensor =
                    TensorRef::from_array_view((shape.clone(), data.as_slice())).map_err(run)?;
                s.run(ort::inputs![input.as_str() => tensor]).map_err(run)?;
                runs += 1;
            }
            // Round 0 is the warm-up.
            if round > 0 {
                rates.push((runs * batch) as f64 / start.elapsed().as_secs_f64());
            }
        }
    }
    Ok(per_session.into_iter().map(median).collect())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top1_and_accuracy() {
        let p = top1(&[0.1, 0.9, 0.0, 3.0, -1.0, 2.0], 3);
        assert_eq!(p, [1, 0]);
        assert_eq!(accuracy(&p, &[1, 2]), 50.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
