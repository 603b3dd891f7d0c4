//! Parameters and FLOPs of a `SmallCnn`, computed from its layer shapes.
//!
//! [`Topology`] is what stays fixed when a network is pruned (kernels, strides, which blocks
//! have a projection shortcut); [`Widths`] is what pruning changes (the channels of each
//! residual stage and the internal channels of each block). Together they give the parameter
//! count and the multiply-accumulates of any pruned variant without building it, which is how
//! the pruner finds the filter counts that remove a requested share of the parameters.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use serde::{Deserialize, Serialize};

use crate::model::cnn::SmallCnn;

/// Channel counts of a `SmallCnn`'s prunable channel sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Widths {
    /// Channels of each residual stage: the stem's output for stage 0, and the set every block
    /// of a stage adds into (its identity shortcuts carry it, so all of a stage's blocks share
    /// it).
    pub stages: Vec<usize>,
    /// Output channels of each block's first convolution (= the second one's input).
    pub internal: Vec<usize>,
}

/// Kernel, stride and padding of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// top, left, bottom, right.
    pub padding: [usize; 4],
}

impl ConvShape {
    fn of(conv: &Conv2d) -> ConvShape {
        let padding = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
            PaddingConfig2d::Valid => [0; 4],
            // "Same" keeps the size at stride 1; the CNN never uses it, this is the size rule.
            PaddingConfig2d::Same => {
                let [kh, kw] = conv.kernel_size;
                [(kh - 1) / 2, (kw - 1) / 2, kh / 2, kw / 2]
            }
        };
        ConvShape {
            kernel: conv.kernel_size,
            stride: conv.stride,
            padding,
        }
    }

    /// Output height and width for an input of `hw`.
    pub fn out_size(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        let axis =
            |size: usize, k: usize, s: usize, p: usize| (size + p).saturating_sub(k) / s.max(1) + 1;
        [
            axis(
                h,
                self.kernel[0],
                self.stride[0],
                self.padding[0] + self.padding[2],
            ),
            axis(
                w,
                self.kernel[1],
                self.stride[1],
                self.padding[1] + self.padding[3],
            ),
        ]
    }

    fn area(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
}

/// One residual block's fixed shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTopology {
    /// Index into `Widths::stages` of the channel set the block writes (and, unless it starts
    /// the stage, reads).
    pub stage: usize,
    pub conv1: ConvShape,
    pub conv2: ConvShape,
    /// The 1×1 projection when the block starts a new stage; `None` = identity.
    pub shortcut: Option<ConvShape>,
}

/// Everything about a `SmallCnn` that pruning keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub in_channels: usize,
    pub classes: usize,
    pub stem: ConvShape,
    pub blocks: Vec<BlockTopology>,
}

/// Parameters and multiply-accumulates of a network for one input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Trainable parameters: convolution weights, BatchNorm γ and β, the head's weight and
    /// bias. (`Module::num_params` also counts the BatchNorm running mean and variance, two
    /// more per channel; the ONNX export folds BatchNorm into one bias per channel.)
    pub params: usize,
    /// Multiply-accumulates of one image's forward pass (convolutions and the head; BatchNorm
    /// is folded into the convolutions on export, ReLU, additions and pooling are left out).
    pub macs: u64,
}

impl Cost {
    /// FLOPs of one image, counting a multiply-accumulate as two operations.
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }
}

impl Topology {
    /// Reads the fixed shape of `model`. A block with a projection shortcut starts a new
    /// channel set; blocks with an identity shortcut share their input's.
    pub fn of(model: &SmallCnn) -> Topology {
        // The head's weight is d_input × d_output (burn's row layout).
        let classes = model.head.weight.dims()[1];
        let mut stage = 0;
        let blocks = model
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if i > 0 && b.shortcut.is_some() {
                    stage += 1;
                }
                BlockTopology {
                    stage,
                    conv1: ConvShape::of(&b.conv1.conv),
                    conv2: ConvShape::of(&b.conv2.conv),
                    shortcut: b.shortcut.as_ref().map(|s| ConvShape::of(&s.conv)),
                }
            })
            .collect();
        Topology {
            in_channels: model.stem.conv.weight.dims()[1],
            classes,
            stem: ConvShape::of(&model.stem.conv),
            blocks,
        }
    }

    /// Number of channel sets (`Widths::stages.len()`).
    pub fn stage_count(&self) -> usize {
        self.blocks.last().map_or(1, |b| b.stage + 1)
    }

    /// The channel set block `b` reads: the previous stage's when it starts a stage.
    pub fn input_stage(&self, b: usize) -> usize {
        let block = &self.blocks[b];
        if b > 0 && block.shortcut.is_some() {
            block.stage - 1
        } else {
            block.stage
        }
    }

    /// Parameters and MACs of this topology with `widths`, for `hw`-sized inputs.
    pub fn cost(&self, widths: &Widths, hw: [usize; 2]) -> Cost {
        let conv = |cin: usize, cout: usize, shape: &ConvShape, size: [usize; 2]| {
            let out = shape.out_size(size);
            let weights = cin * cout * shape.area();
            // Weights, then γ and β of the BatchNorm after it.
            (weights + 2 * cout, (weights * out[0] * out[1]) as u64, out)
        };
        let (mut params, mut macs, mut size) =
            conv(self.in_channels, widths.stages[0], &self.stem, hw);
        for (b, block) in self.blocks.iter().enumerate() {
            let cin = widths.stages[self.input_stage(b)];
            let cout = widths.stages[block.stage];
            let mid = widths.internal[b];
            let (p1, m1, out1) = conv(cin, mid, &block.conv1, size);
            let (p2, m2, out2) = conv(mid, cout, &block.conv2, out1);
            params += p1 + p2;
            macs += m1 + m2;
            if let Some(shortcut) = &block.shortcut {
                let (p, m, _) = conv(cin, cout, shortcut, size);
                params += p;
                macs += m;
            }
            size = out2;
        }
        let last = widths.stages[self.stage_count() - 1];
        params += last * self.classes + self.classes;
        macs += (last * self.classes) as u64;
        Cost { params, macs }
    }
}

/// The channel counts `model` has now.
pub fn widths_of(model: &SmallCnn) -> Widths {
    let topology = Topology::of(model);
    let mut stages = vec![model.stem.conv.weight.dims()[0]; topology.stage_count()];
    for (b, block) in model.blocks.iter().enumerate() {
        stages[topology.blocks[b].stage] = block.conv2.conv.weight.dims()[0];
    }
    Widths {
        stages,
        internal: model
            .blocks
            .iter()
            .map(|b| b.conv1.conv.weight.dims()[0])
            .collect(),
    }
}

/// Trainable parameters and MACs of `model` for `hw`-sized inputs.
pub fn cost_of(model: &SmallCnn, hw: [usize; 2]) -> Cost {
    Topology::of(model).cost(&widths_of(model), hw)
}

/// BatchNorm channels of `model` (each has a running mean and variance besides γ and β).
pub fn batch_norm_channels(model: &SmallCnn) -> usize {
    let mut n = model.stem.bn.gamma.dims()[0];
    for b in &model.blocks {
        n += b.conv1.bn.gamma.dims()[0] + b.conv2.bn.gamma.dims()[0];
        n += b.shortcut.as_ref().map_or(0, |s| s.bn.gamma.dims()[0]);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cnn::SmallCnnConfig;
    use burn::module::Module;
    use burn::prelude::*;

    #[test]
    fn params_match_burns_count() -> Result<(), crate::model::cnn::CnnConfigError> {
        let device = Device::flex();
        for (widths, blocks) in [(vec![32, 64, 128], 1), (vec![4, 8], 2), (vec![6], 3)] {
            let model = SmallCnnConfig {
                in_channels: 3,
                classes: 7,
                widths,
                blocks_per_stage: blocks,
                dropout: 0.0,
                ..SmallCnnConfig::default()
            }
            .init(&device)?;
            let cost = cost_of(&model, [28, 28]);
            // burn also counts the two running statistics of every BatchNorm channel.
            assert_eq!(
                cost.params + 2 * batch_norm_channels(&model),
                model.num_params()
            );
        }
        Ok(())
    }

    #[test]
    fn macs_of_the_default_network_by_hand() -> Result<(), crate::model::cnn::CnnConfigError> {
        let model = SmallCnnConfig {
            stem_stride: 1,
            ..SmallCnnConfig::default()
        }
        .init(&Device::flex())?;
        let cost = cost_of(&model, [28, 28]);
        // Stem stride 1, so 28×28: stem 1→32 and block 0 (32→32, twice); 14×14: block 1 (32→64, 64→64, 1×1
        // shortcut 32→64); 7×7: block 2 (64→128, 128→128, shortcut 64→128); head 128→10.
        let expected = 784 * 9 * 32
            + 784 * 9 * 32 * 32 * 2
            + 196 * (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64)
            + 49 * (9 * 64 * 128 + 9 * 128 * 128 + 64 * 128)
            + 128 * 10;
        assert_eq!(cost.macs, expected as u64);
        assert_eq!(cost.flops(), 2 * expected as u64);
        assert_eq!(
            widths_of(&model),
            Widths {
                stages: vec![32, 64, 128],
                internal: vec![32, 64, 128]
            }
        );
        Ok(())
    }
}
