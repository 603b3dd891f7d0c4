//! The plain, inference-only network the graph writer emits: convolutions with BatchNorm
//! already folded in, EfficientNet-Lite's MBConv blocks, the head and the classifier. Built
//! from the packaged weights (`import::lite0`) or from a trained burn model
//! (`model::export`).

/// A dense, contiguous (row-major) `f32` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A convolution with its BatchNorm folded in (and so with a bias).
#[derive(Debug, Clone)]
pub struct Conv {
    /// `[out, in / groups, k, k]`, row-major.
    pub weight: Tensor,
    pub bias: Vec<f32>,
    pub stride: usize,
    pub groups: usize,
}

impl Conv {
    pub fn out_channels(&self) -> usize {
        self.weight.shape[0]
    }

    pub fn in_channels(&self) -> usize {
        self.weight.shape[1] * self.groups
    }

    pub fn kernel(&self) -> usize {
        self.weight.shape[2]
    }
}

/// An inverted-residual (MBConv) block without squeeze-excite.
#[derive(Debug, Clone)]
pub struct Block {
    /// 1×1 expansion + ReLU6; absent when the expansion ratio is 1.
    pub expand: Option<Conv>,
    /// Depthwise k×k + ReLU6.
    pub depthwise: Conv,
    /// 1×1 projection, linear.
    pub project: Conv,
    /// Whether the input is added to the output (stride 1 and equal channels).
    pub residual: bool,
}

impl Block {
    pub fn in_channels(&self) -> usize {
        self.expand
            .as_ref()
            .map_or(self.depthwise.in_channels(), Conv::in_channels)
    }

    pub fn out_channels(&self) -> usize {
        self.project.out_channels()
    }

    pub fn stride(&self) -> usize {
        self.depthwise.stride
    }

    pub fn expand_ratio(&self) -> usize {
        self.depthwise.out_channels() / self.in_channels().max(1)
    }
}

/// The whole network: stem, blocks, head, classifier.
#[derive(Debug, Clone)]
pub struct EfficientNetLite {
    /// 3×3 stride-2 conv + ReLU6.
    pub stem: Conv,
    pub blocks: Vec<Block>,
    /// 1×1 conv + ReLU6.
    pub head: Conv,
    /// `[classes, features]`.
    pub fc_weight: Tensor,
    pub fc_bias: Vec<f32>,
}

impl EfficientNetLite {
    pub fn num_classes(&self) -> usize {
        self.fc_weight.shape[0]
    }

    pub fn input_channels(&self) -> usize {
        self.stem.in_channels()
    }

    /// A one-line-per-block summary (for the CLI and the report).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "stem 3x3/{} {}->{}\n",
            self.stem.stride,
            self.stem.in_channels(),
            self.stem.out_channels()
        );
        for (i, b) in self.blocks.iter().enumerate() {
            s += &format!(
                "block {i:2}: k{} s{} e{} {}->{}{}\n",
                b.depthwise.kernel(),
                b.stride(),
                b.expand_ratio(),
                b.in_channels(),
                b.out_channels(),
                if b.residual { " +skip" } else { "" }
            );
        }
        s += &format!(
            "head 1x1 {}->{}, fc {}->{}",
            self.head.in_channels(),
            self.head.out_channels(),
            self.fc_weight.shape[1],
            self.num_classes()
        );
        s
    }
}
