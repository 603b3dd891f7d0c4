//! EfficientNet-Lite0 (the "lite" variant: no squeeze-excite, ReLU6, fixed stem and head)
//! built from an `efficientnet_pytorch`-style state dict, with BatchNorm folded into the
//! convolutions.
//!
//! The block layout (how many blocks, expansion ratio, kernel size, channels) is read from
//! the tensor names and shapes. Strides cannot be seen in weights: they come from the
//! EfficientNet stage table (the first block of each stage of output channels has the
//! stage's stride; stages 2, 3, 4 and 6 of 7 downsample), which gives stride 2 at blocks 1,
//! 3, 5 and 11 for Lite0.

use super::pth::{PthError, StateDict};
use crate::batch_norm::{self, BatchNormParams};
use crate::onnx::network::{Block, Conv, EfficientNetLite};

/// BatchNorm epsilon of the TensorFlow EfficientNet-Lite checkpoints.
pub const BN_EPS: f32 = 1e-3;

/// Lite0's blocks as `(expansion ratio, kernel, stride, output channels)`: what the packaged
/// weights contain (checked against them in the tests). The one architecture table: the burn
/// network is built from it without the weights (to load a checkpoint into), and the importer
/// takes each stage's stride from it ([`stage_strides`]; the Lite family shares them).
pub const LITE0_BLOCKS: [(usize, usize, usize, usize); 16] = [
    (1, 3, 1, 16),
    (6, 3, 2, 24),
    (6, 3, 1, 24),
    (6, 5, 2, 40),
    (6, 5, 1, 40),
    (6, 3, 2, 80),
    (6, 3, 1, 80),
    (6, 3, 1, 80),
    (6, 5, 1, 112),
    (6, 5, 1, 112),
    (6, 5, 1, 112),
    (6, 5, 2, 192),
    (6, 5, 1, 192),
    (6, 5, 1, 192),
    (6, 5, 1, 192),
    (6, 3, 1, 320),
];
/// Output channels of Lite0's stem.
pub const LITE0_STEM: usize = 32;

/// Stride of the first block of each stage (a stage is a run of blocks with the same output
/// channels), read from [`LITE0_BLOCKS`].
pub fn stage_strides() -> Vec<usize> {
    LITE0_BLOCKS
        .iter()
        .enumerate()
        .filter(|&(i, b)| i == 0 || LITE0_BLOCKS[i - 1].3 != b.3)
        .map(|(_, b)| b.2)
        .collect()
}

/// Why a state dict is not an EfficientNet-Lite this code can build.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error(transparent)]
    Weights(#[from] PthError),
    #[error("not an EfficientNet-Lite state dict: {0}")]
    Layout(String),
}

impl EfficientNetLite {
    /// Builds the network from `efficientnet_pytorch` names: `_conv_stem`, `_bn0`,
    /// `_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`, `_conv_head`,
    /// `_bn1`, `_fc`.
    pub fn from_state_dict(sd: &StateDict) -> Result<EfficientNetLite, ArchError> {
        let layout = |s: String| ArchError::Layout(s);
        if let Some(se) = sd.names().iter().find(|n| n.contains("_se_")) {
            return Err(layout(format!(
                "it has squeeze-excite weights ({se}); this is a full EfficientNet, not Lite"
            )));
        }
        let stem = conv_bn(sd, "_conv_stem", "_bn0", 2, 1)?;
        let stage_strides = stage_strides();

        let count = (0..)
            .take_while(|i| sd.contains(&format!("_blocks.{i}._depthwise_conv.weight")))
            .count();
        if count == 0 {
            return Err(layout(
                "it has no `_blocks.N._depthwise_conv` weights".into(),
            ));
        }
        let mut blocks = Vec::with_capacity(count);
        let mut stage = 0usize;
        let mut channels = stem.out_channels();
        for i in 0..count {
            let p = format!("_blocks.{i}");
            let dw_shape = sd
                .shape(&format!("{p}._depthwise_conv.weight"))
                .unwrap_or_default();
            let proj_shape = sd
                .shape(&format!("{p}._project_conv.weight"))
                .ok_or_else(|| layout(format!("block {i} has no _project_conv")))?;
            let (hidden, out) = match (dw_shape, proj_shape) {
                ([h, 1, k, k2, ..], [o, ..]) if k == k2 => (*h, *o),
                _ => {
                    return Err(layout(format!(
                        "block {i}: depthwise weight {dw_shape:?} is not [C, 1, k, k]"
                    )));
                }
            };
            // A change of channels starts a new stage (block 0 starts stage 0).
            let first_of_stage = i == 0 || out != channels;
            if i > 0 && first_of_stage {
                stage += 1;
            }
            let stride = if first_of_stage {
                *stage_strides.get(stage).ok_or_else(|| {
                    layout(format!(
                        "block {i} starts stage {} but EfficientNet has {}",
                        stage + 1,
                        stage_strides.len()
                    ))
                })?
            } else {
                1
            };
            let expand = if sd.contains(&format!("{p}._expand_conv.weight")) {
                Some(conv_bn(
                    sd,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    1,
                    1,
                )?)
            } else {
                None
            };
            let expected_hidden = expand.as_ref().map_or(channels, Conv::out_channels);
            if hidden != expected_hidden {
                return Err(layout(format!(
                    "block {i}: depthwise conv has {hidden} channels, expected {expected_hidden}"
                )));
            }
            let depthwise = conv_bn(
                sd,
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                stride,
                hidden,
            )?;
            let project = conv_bn(
                sd,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                1,
                1,
            )?;
            if project.in_channels() != hidden {
                return Err(layout(format!(
                    "block {i}: projection takes {} channels, the depthwise conv gives {hidden}",
                    project.in_channels()
                )));
            }
            let block = Block {
                residual: stride == 1 && channels == out,
                expand,
                depthwise,
                project,
            };
            channels = out;
            blocks.push(block);
        }
        if stage + 1 != stage_strides.len() {
            return Err(layout(format!(
                "it has {} stages of blocks, EfficientNet has {}",
                stage + 1,
                stage_strides.len()
            )));
        }

        let head = conv_bn(sd, "_conv_head", "_bn1", 1, 1)?;
        if head.in_channels() != channels {
            return Err(layout(format!(
                "the head conv takes {} channels, the last block gives {channels}",
                head.in_channels()
            )));
        }
        let fc_weight = sd.f32("_fc.weight")?;
        let fc_bias = sd.f32("_fc.bias")?.data;
        match fc_weight.shape[..] {
            [classes, features] if features == head.out_channels() && fc_bias.len() == classes => {}
            _ => {
                return Err(layout(format!(
                    "_fc.weight {:?} / _fc.bias [{}] do not fit {} features",
                    fc_weight.shape,
                    fc_bias.len(),
                    head.out_channels()
                )));
            }
        }
        Ok(EfficientNetLite {
            stem,
            blocks,
            head,
            fc_weight,
            fc_bias,
        })
    }
}

/// Loads `{conv}.weight` and folds `{bn}.{weight,bias,running_mean,running_var}` into it:
/// `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`.
fn conv_bn(
    sd: &StateDict,
    conv: &str,
    bn: &str,
    stride: usize,
    groups: usize,
) -> Result<Conv, ArchError> {
    let mut weight = sd.f32(&format!("{conv}.weight"))?;
    if weight.shape.len() != 4 {
        return Err(ArchError::Layout(format!(
            "{conv}.weight has shape {:?}, expected 4 dimensions",
            weight.shape
        )));
    }
    if sd.contains(&format!("{conv}.bias")) {
        return Err(ArchError::Layout(format!(
            "{conv} has a bias; EfficientNet convs before BatchNorm have none"
        )));
    }
    let out = weight.shape[0];
    let gamma = sd.f32(&format!("{bn}.weight"))?.data;
    let beta = sd.f32(&format!("{bn}.bias"))?.data;
    let mean = sd.f32(&format!("{bn}.running_mean"))?.data;
    let var = sd.f32(&format!("{bn}.running_var"))?.data;
    if [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != out) {
        return Err(ArchError::Layout(format!(
            "{bn} does not have {out} channels like {conv}"
        )));
    }
    let mut bias = vec![0.0; out];
    let params = BatchNormParams {
        gamma: &gamma,
        beta: &beta,
        mean: &mean,
        var: &var,
        epsilon: f64::from(BN_EPS),
    };
    batch_norm::fold(&mut weight.data, &mut bias, &params)
        .map_err(|e| ArchError::Layout(format!("{conv} + {bn}: {e}")))?;
    Ok(Conv {
        weight,
        bias,
        stride,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_their_strides_come_from_the_block_table() {
        // EfficientNet-B0's block arguments, shared by the Lite family: 7 stages.
        assert_eq!(stage_strides(), [1, 2, 2, 2, 1, 2, 1]);
    }

    #[test]
    fn lite0_layout_from_the_real_weights() -> Result<(), ArchError> {
        let path = crate::test_deps("weights/efficientnet-lite0-57934424.pth");
        let net = EfficientNetLite::from_state_dict(&StateDict::open(&path)?)?;
        assert_eq!(net.blocks.len(), 16);
        let strides: Vec<_> = net.blocks.iter().map(Block::stride).collect();
        assert_eq!(strides, [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]);
        let kernels: Vec<_> = net.blocks.iter().map(|b| b.depthwise.kernel()).collect();
        assert_eq!(kernels, [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]);
        assert_eq!(net.blocks[0].expand_ratio(), 1);
        assert!(net.blocks[1..].iter().all(|b| b.expand_ratio() == 6));
        let skips = net.blocks.iter().filter(|b| b.residual).count();
        assert_eq!(skips, 9);
        assert_eq!(net.head.out_channels(), 1280);
        assert_eq!(net.num_classes(), 1000);
        Ok(())
    }
}
