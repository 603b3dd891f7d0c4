//! Folding a BatchNorm (its running statistics) into the convolution before it: the one copy
//! of the arithmetic, used by the import of the packaged EfficientNet-Lite0 weights, the ONNX
//! export of the burn networks and quantize's graph pass.
//!
//! `w' = w·γ/√(σ²+ε)`, `b' = β + (b − μ)·γ/√(σ²+ε)`, computed in f64 so that folding adds no
//! rounding of its own.

/// One BatchNorm's per-channel parameters.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormParams<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub mean: &'a [f32],
    pub var: &'a [f32],
    pub epsilon: f64,
}

/// The BatchNorm and the convolution do not have the same number of output channels.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("a BatchNorm of {batch_norm} channels follows a convolution of {conv}")]
pub struct ChannelMismatch {
    pub batch_norm: usize,
    pub conv: usize,
}

/// Folds `bn` into a convolution's `weight` (output-channel major: `bias.len()` rows) and
/// `bias` (zeros for a convolution without one).
pub fn fold(
    weight: &mut [f32],
    bias: &mut [f32],
    bn: &BatchNormParams<'_>,
) -> Result<(), ChannelMismatch> {
    let out = bias.len();
    let params = [bn.gamma, bn.beta, bn.mean, bn.var];
    let mismatch = params.iter().find(|v| v.len() != out);
    if let Some(v) = mismatch {
        return Err(ChannelMismatch {
            batch_norm: v.len(),
            conv: out,
        });
    }
    if out == 0 || !weight.len().is_multiple_of(out) {
        return Err(ChannelMismatch {
            batch_norm: out,
            conv: weight.len(),
        });
    }
    let per_out = weight.len() / out;
    for o in 0..out {
        let k = f64::from(bn.gamma[o]) / (f64::from(bn.var[o]) + bn.epsilon).sqrt();
        for w in &mut weight[o * per_out..(o + 1) * per_out] {
            *w = (f64::from(*w) * k) as f32;
        }
        bias[o] = (f64::from(bn.beta[o]) + (f64::from(bias[o]) - f64::from(bn.mean[o])) * k) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_scale_and_shift_per_output_channel() {
        // Two output channels of two weights each.
        let mut w = [1.0, 2.0, 3.0, 4.0];
        let mut b = [0.0, 1.0];
        let bn = BatchNormParams {
            gamma: &[2.0, 1.0],
            beta: &[0.5, -1.0],
            mean: &[1.0, 3.0],
            var: &[4.0, 0.25],
            epsilon: 0.0,
        };
        fold(&mut w, &mut b, &bn).expect("matching channels");
        // k = [2/2, 1/0.5] = [1, 2]
        assert_eq!(w, [1.0, 2.0, 6.0, 8.0]);
        assert_eq!(b, [0.5 + (0.0 - 1.0), -1.0 + (1.0 - 3.0) * 2.0]);
    }

    #[test]
    fn a_mismatch_is_an_error() {
        let bn = BatchNormParams {
            gamma: &[1.0; 3],
            beta: &[0.0; 3],
            mean: &[0.0; 3],
            var: &[1.0; 3],
            epsilon: 1e-5,
        };
        let e = fold(&mut [0.0; 4], &mut [0.0; 2], &bn).unwrap_err();
        assert_eq!(
            e,
            ChannelMismatch {
                batch_norm: 3,
                conv: 2
            }
        );
    }
}
