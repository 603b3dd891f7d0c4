//! The small residual CNN trained from scratch.
//!
//! ```text
//! stem: 3×3 conv (stride `stem_stride`: 1 keeps the resolution, 2 halves it early, which on
//!   the flex CPU backend is ~4× less work for every later layer) + BN + ReLU
//! stage s (width widths[s]): blocks_per_stage residual blocks; the first block of every stage
//!   after the first has stride 2 (halves H and W) and a 1×1 conv + BN shortcut
//! global average pooling → dropout → linear head (logits)
//! ```
//!
//! The public field layout below (`ConvBn`, `ResidualBlock`, `SmallCnn`, field names and order,
//! bias-free convolutions with explicit k/2 padding, `shortcut: Option<ConvBn>`) is what
//! `model/export.rs` reads to write the ONNX graph: change it only together with the export.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use super::Classifier;

/// Convolution without bias followed by BatchNorm (the activation is applied by the caller).
#[derive(Module, Debug)]
pub struct ConvBn {
    /// k×k, no bias, padding k/2 on every side (`PaddingConfig2d::Explicit`).
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let pad = kernel / 2;
        Self {
            conv: Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(out_channels).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// `relu(conv2(relu(conv1(x))) + shortcut(x))`; `conv1` carries the stride, `shortcut` is a
/// 1×1 ConvBn with the same stride when the shape changes, the identity otherwise.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    pub shortcut: Option<ConvBn>,
}

impl ResidualBlock {
    fn new(in_channels: usize, out_channels: usize, stride: usize, device: &Device) -> Self {
        let shortcut = (stride != 1 || in_channels != out_channels)
            .then(|| ConvBn::new(in_channels, out_channels, 1, stride, device));
        Self {
            conv1: ConvBn::new(in_channels, out_channels, 3, stride, device),
            conv2: ConvBn::new(out_channels, out_channels, 3, 1, device),
            shortcut,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let skip = match &self.shortcut {
            Some(shortcut) => shortcut.forward(x.clone()),
            None => x.clone(),
        };
        let y = relu(self.conv1.forward(x));
        relu(self.conv2.forward(y) + skip)
    }
}

/// The architecture's hyper-parameters (saved next to every checkpoint so that it can be
/// rebuilt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmallCnnConfig {
    /// 1 for grey, 3 for RGB input.
    pub in_channels: usize,
    pub classes: usize,
    /// Channels of each stage (the stem has `widths[0]`); every stage after the first halves
    /// the resolution.
    pub widths: Vec<usize>,
    pub blocks_per_stage: usize,
    /// Dropout probability before the head.
    pub dropout: f64,
    /// Stride of the stem convolution (1 or 2).
    #[serde(default = "one")]
    pub stem_stride: usize,
}

fn one() -> usize {
    1
}

impl Default for SmallCnnConfig {
    /// The Fashion-MNIST recipe's network (models/recipes/fashion-mnist-cnn.toml).
    fn default() -> Self {
        Self {
            in_channels: 1,
            classes: 10,
            widths: vec![32, 64, 128],
            blocks_per_stage: 1,
            dropout: 0.2,
            stem_stride: 2,
        }
    }
}

/// Why a `SmallCnnConfig` cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CnnConfigError {
    #[error("the CNN needs at least one stage width (widths = [])")]
    NoStages,
    #[error("CNN widths, in_channels, classes and blocks_per_stage must all be > 0")]
    Zero,
    #[error("dropout must be in [0, 1), got {0}")]
    Dropout(f64),
    #[error("the stem stride must be 1 or 2, got {0}")]
    StemStride(usize),
}

impl SmallCnnConfig {
    pub fn validate(&self) -> Result<(), CnnConfigError> {
        if self.widths.is_empty() {
            return Err(CnnConfigError::NoStages);
        }
        if self.in_channels == 0
            || self.classes == 0
            || self.blocks_per_stage == 0
            || self.widths.contains(&0)
        {
            return Err(CnnConfigError::Zero);
        }
        if !(1..=2).contains(&self.stem_stride) {
            return Err(CnnConfigError::StemStride(self.stem_stride));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(CnnConfigError::Dropout(self.dropout));
        }
        Ok(())
    }

    /// A freshly initialised network (burn's default initialisers, seeded by the device's
    /// RNG: call `device.seed(..)` first for reproducible weights).
    pub fn init(&self, device: &Device) -> Result<SmallCnn, CnnConfigError> {
        self.validate()?;
        let stem = ConvBn::new(
            self.in_channels,
            self.widths[0],
            3,
            self.stem_stride,
            device,
        );
        let mut blocks = Vec::new();
        let mut channels = self.widths[0];
        for (stage, &width) in self.widths.iter().enumerate() {
            for b in 0..self.blocks_per_stage {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(ResidualBlock::new(channels, width, stride, device));
                channels = width;
            }
        }
        Ok(SmallCnn {
            stem,
            blocks,
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(channels, self.classes).init(device),
        })
    }
}

/// See the module documentation for the layout (read by `model/export.rs`).
#[derive(Module, Debug)]
pub struct SmallCnn {
    pub stem: ConvBn,
    pub blocks: Vec<ResidualBlock>,
    pub dropout: Dropout,
    pub head: Linear,
}

impl SmallCnn {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.stem.forward(images));
        for block in &self.blocks {
            x = block.forward(x);
        }
        // Global average pooling: N×C×H×W → N×C.
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dims(&[2, 3]).reshape([n, c]);
        self.head.forward(self.dropout.forward(pooled))
    }
}

impl Classifier for SmallCnn {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> SmallCnnConfig {
        SmallCnnConfig {
            in_channels: 1,
            classes: 4,
            widths: vec![4, 8],
            blocks_per_stage: 2,
            dropout: 0.0,
            stem_stride: 1,
        }
    }

    #[test]
    fn layout_follows_the_config() -> Result<(), CnnConfigError> {
        let device = Device::flex();
        let model = tiny().init(&device)?;
        assert_eq!(model.blocks.len(), 4);
        // Only the first block of stage 2 changes shape: stride 2 and 4 → 8 channels.
        let with_shortcut: Vec<bool> = model.blocks.iter().map(|b| b.shortcut.is_some()).collect();
        assert_eq!(with_shortcut, [false, false, true, false]);
        assert_eq!(model.blocks[2].conv1.conv.stride, [2, 2]);
        assert_eq!(model.blocks[3].conv1.conv.stride, [1, 1]);
        assert!(model.stem.conv.bias.is_none());
        assert_eq!(model.head.weight.dims(), [8, 4]);
        Ok(())
    }

    #[test]
    fn logits_have_one_row_per_image() -> Result<(), CnnConfigError> {
        let device = Device::flex();
        let model = tiny().init(&device)?;
        let logits = model.logits(Tensor::zeros([3, 1, 12, 12], &device));
        assert_eq!(logits.dims(), [3, 4]);
        Ok(())
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = tiny();
        c.widths.clear();
        assert_eq!(c.validate(), Err(CnnConfigError::NoStages));
        let mut c = tiny();
        c.dropout = 1.0;
        assert_eq!(c.validate(), Err(CnnConfigError::Dropout(1.0)));
    }
}
