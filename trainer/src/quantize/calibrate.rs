//! Calibration: the float model runs in ONNX Runtime on calibration images with every tensor
//! to be quantized added as a graph output; each tensor's range is then chosen by MinMax,
//! Percentile or Entropy (KL divergence between the float histogram and its int8 version, as
//! TensorRT and ONNX Runtime do).
//!
//! Statistics are kept per side of zero: a histogram of the positive values over `[0, max]`
//! and one of the magnitudes of the negative values over `[0, -min]`, so that a tensor after
//! ReLU (all non-negative) gets its whole 256-level range and a signed one is clipped on each
//! side by its own tail. Two passes: min/max first, then the histograms over those ranges.

use std::collections::HashMap;

use ort::environment::Environment;
use ort::value::TensorRef;

use crate::onnx::{ModelProto, data_type};

use super::evaluate::{SessionOptions, session};
use super::graph::value_info;
use super::{Images, QuantizeError};

/// Bins of each side's histogram (TensorRT and ORT use 2048).
pub const BINS: usize = 2048;

/// How a tensor's range is chosen from what calibration saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip each side at this percentile of its values (e.g. 99.999).
    Percentile(f64),
    /// Clip each side where the KL divergence between the float distribution and its
    /// quantized version is smallest.
    Entropy,
}

/// The float range a tensor is quantized over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// What calibration saw of one tensor.
#[derive(Debug, Clone)]
pub struct TensorStats {
    pub min: f32,
    pub max: f32,
    /// Counts of positive values over `[0, max]`.
    pub positive: Vec<u64>,
    /// Counts of `-x` for the negative values over `[0, -min]`.
    pub negative: Vec<u64>,
}

impl TensorStats {
    fn new() -> TensorStats {
        TensorStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            positive: Vec::new(),
            negative: Vec::new(),
        }
    }

    fn observe_range(&mut self, values: &[f32]) {
        for &v in values {
            if v.is_finite() {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
        }
    }

    fn observe_histogram(&mut self, values: &[f32]) {
        if self.positive.is_empty() {
            self.positive = vec![0; BINS];
            self.negative = vec![0; BINS];
        }
        let pos_scale = if self.max > 0.0 {
            BINS as f32 / self.max
        } else {
            0.0
        };
        let neg_scale = if self.min < 0.0 {
            BINS as f32 / -self.min
        } else {
            0.0
        };
        for &v in values {
            if v > 0.0 {
                let b = ((v * pos_scale) as usize).min(BINS - 1);
                self.positive[b] += 1;
            } else if v < 0.0 {
                let b = ((-v * neg_scale) as usize).min(BINS - 1);
                self.negative[b] += 1;
            }
        }
    }

    /// The range to quantize over; always contains 0 (so that zero is exact, as padding
    /// needs).
    pub fn range(&self, method: RangeMethod) -> Range {
        let (min, max) = if self.min <= self.max {
            (self.min.min(0.0), self.max.max(0.0))
        } else {
            (0.0, 0.0)
        };
        let side = |hist: &[u64], extent: f32, levels: usize| match method {
            RangeMethod::MinMax => extent,
            _ if hist.is_empty() || extent <= 0.0 => extent,
            RangeMethod::Percentile(p) => percentile_threshold(hist, extent, p),
            RangeMethod::Entropy => entropy_threshold(hist, extent, levels),
        };
        // A one-sided tensor has all 256 levels on its side, a two-sided one about half.
        let levels = if min < 0.0 && max > 0.0 { 128 } else { 256 };
        Range {
            min: -side(&self.negative, -min, levels),
            max: side(&self.positive, max, levels),
        }
    }
}

/// The smallest bin edge below which `percentile` % of the histogram's values lie.
pub fn percentile_threshold(hist: &[u64], extent: f32, percentile: f64) -> f32 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return extent;
    }
    let wanted = total as f64 * (percentile / 100.0).clamp(0.0, 1.0);
    let mut cumulative = 0u64;
    for (i, &c) in hist.iter().enumerate() {
        cumulative += c;
        if cumulative as f64 >= wanted {
            return extent * (i + 1) as f32 / hist.len() as f32;
        }
    }
    extent
}

/// The bin edge that minimises KL(P‖Q), where P is the histogram clipped there (the values
/// beyond folded into its last bin) and Q is P quantized into `levels` bins and expanded back.
///
/// Candidates are searched on a coarse grid of about 128 edges, then bin by bin around the
/// best one: the same minimum as TensorRT's bin-by-bin search in a tenth of the time.
pub fn entropy_threshold(hist: &[u64], extent: f32, levels: usize) -> f32 {
    let bins = hist.len();
    if bins <= levels || hist.iter().all(|&c| c == 0) {
        return extent;
    }
    let mut suffix = vec![0u64; bins + 1];
    for i in (0..bins).rev() {
        suffix[i] = suffix[i + 1] + hist[i];
    }
    let mut p = vec![0f64; bins];
    let mut q = vec![0f64; bins];
    let mut kl_at = |i: usize| -> f64 {
        let p = &mut p[..i];
        for (d, &c) in p.iter_mut().zip(&hist[..i]) {
            *d = c as f64;
        }
        p[i - 1] += suffix[i] as f64;
        let q = &mut q[..i];
        let merged = i / levels;
        for k in 0..levels {
            let start = k * merged;
            let end = if k + 1 == levels { i } else { start + merged };
            let sum: f64 = hist[start..end].iter().map(|&c| c as f64).sum();
            let nonzero = p[start..end].iter().filter(|&&v| v > 0.0).count();
            for (qv, &pv) in q[start..end].iter_mut().zip(&p[start..end]) {
                *qv = if pv > 0.0 && nonzero > 0 {
                    sum / nonzero as f64
                } else {
                    0.0
                };
            }
        }
        kl_divergence(p, q)
    };
    let step = ((bins - levels) / 128).max(1);
    let mut best = (f64::INFINITY, bins);
    let mut i = levels;
    while i <= bins {
        let kl = kl_at(i);
        if kl < best.0 {
            best = (kl, i);
        }
        i += step;
    }
    let coarse = best.1;
    for i in coarse.saturating_sub(step - 1).max(levels)..=(coarse + step - 1).min(bins) {
        let kl = kl_at(i);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    extent * best.1 as f32 / bins as f32
}

/// KL(P‖Q) of two unnormalised histograms; where Q is empty but P is not, Q gets a small
/// share (the smoothing ORT and TensorRT apply) so that clipping is penalised, not infinite.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    const EPS: f64 = 1e-4;
    // (total, zeros, amount taken from each non-zero entry) of a histogram.
    let smoothing = |h: &[f64]| {
        let total: f64 = h.iter().sum();
        let zeros = h.iter().filter(|&&v| v == 0.0).count();
        let nonzero = h.len() - zeros;
        let take = if nonzero > 0 {
            EPS * zeros as f64 / nonzero as f64
        } else {
            0.0
        };
        (total, take)
    };
    let ((pt, ptake), (qt, qtake)) = (smoothing(p), smoothing(q));
    if pt == 0.0 || qt == 0.0 {
        return f64::INFINITY;
    }
    let smooth = |v: f64, total: f64, take: f64| {
        if v == 0.0 {
            EPS
        } else {
            (v / total - take).max(EPS)
        }
    };
    p.iter()
        .zip(q)
        .map(|(&pv, &qv)| {
            let ps = smooth(pv, pt, ptake);
            let qs = smooth(qv, qt, qtake);
            ps * (ps / qs).ln()
        })
        .sum()
}

/// Runs the float model on `images` and returns the statistics of each of `tensors`.
/// `histograms` is false for MinMax, which needs only the first pass.
pub fn collect(
    env: &Environment,
    model: &ModelProto,
    tensors: &[String],
    images: &Images,
    histograms: bool,
    options: &SessionOptions,
) -> Result<HashMap<String, TensorStats>, QuantizeError> {
    if images.is_empty() {
        return Err(QuantizeError::EmptyCalibration);
    }
    let mut augmented = model.clone();
    let graph = augmented
        .graph
        .as_mut()
        .ok_or(QuantizeError::NotAModel("no graph".into()))?;
    let input = graph
        .input
        .first()
        .and_then(|i| i.name.clone())
        .ok_or(QuantizeError::NotAModel("the graph has no input".into()))?;
    let existing: std::collections::HashSet<String> =
        graph.output.iter().filter_map(|o| o.name.clone()).collect();
    for t in tensors {
        if !existing.contains(t) && *t != input {
            graph.output.push(value_info(t, data_type::FLOAT));
        }
    }
    let mut session = session(env, &augmented.to_bytes(), options)?;
    let batch = images.batch_size_for(model);
    let mut stats: HashMap<String, TensorStats> = tensors
        .iter()
        .map(|t| (t.clone(), TensorStats::new()))
        .collect();
    let passes = if histograms { 2 } else { 1 };
    for pass in 0..passes {
        for (data, shape, _) in images.padded_batches(batch) {
            let run = |e: ort::Error| QuantizeError::Runtime(e.to_string());
            let tensor = TensorRef::from_array_view((shape, data.as_slice())).map_err(run)?;
            let outputs = session
                .run(ort::inputs![input.as_str() => tensor])
                .map_err(run)?;
            for t in tensors {
                let values: &[f32] = if *t == input {
                    &data
                } else {
                    let v = outputs
                        .get(t)
                        .ok_or_else(|| QuantizeError::Runtime(format!("no output `{t}`")))?;
                    v.try_extract_tensor::<f32>().map_err(run)?.1
                };
                let s = stats
                    .get_mut(t)
                    .ok_or_else(|| QuantizeError::Runtime(format!("no statistics for `{t}`")))?;
                if pass == 0 {
                    s.observe_range(values);
                } else {
                    s.observe_histogram(values);
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_cuts_the_rare_tail() {
        // 99 990 values in the first bin, 10 outliers in the last.
        let mut hist = vec![0u64; 100];
        hist[0] = 99_990;
        hist[99] = 10;
        assert_eq!(percentile_threshold(&hist, 10.0, 99.99), 0.1);
        assert_eq!(percentile_threshold(&hist, 10.0, 99.999), 10.0);
        assert_eq!(percentile_threshold(&[0; 4], 3.0, 99.0), 3.0);
    }

    #[test]
    fn entropy_keeps_a_uniform_distribution_whole() {
        let hist = vec![1000u64; 2048];
        let t = entropy_threshold(&hist, 8.0, 128);
        assert!(t > 7.9, "threshold {t}");
    }

    #[test]
    fn entropy_clips_a_long_sparse_tail() {
        // A bell of mass near zero and a handful of far outliers: clipping them costs little
        // KL, resolving the bell finely gains a lot.
        let mut hist: Vec<u64> = (0..2048)
            .map(|i| {
                let x = i as f64 / 64.0;
                (1e6 * (-x * x / 2.0).exp()) as u64
            })
            .collect();
        hist[2047] += 3;
        hist[1500] += 2;
        let t = entropy_threshold(&hist, 32.0, 128);
        assert!(t > 2.0 && t < 8.0, "threshold {t}");
    }

    #[test]
    fn ranges_contain_zero_and_respect_sides() {
        let mut s = TensorStats::new();
        let values: Vec<f32> = (0..1000).map(|i| i as f32 / 100.0 + 1.0).collect();
        s.observe_range(&values);
        s.observe_histogram(&values);
        let r = s.range(RangeMethod::MinMax);
        assert_eq!((r.min, r.max), (0.0, 10.99));
        let r = s.range(RangeMethod::Percentile(99.0));
        assert_eq!(r.min, 0.0);
        assert!(r.max < 10.99 && r.max > 10.8, "{r:?}");
        let r = s.range(RangeMethod::Entropy);
        assert!(r.max > 10.5, "uniform values are not clipped: {r:?}");
    }
}
