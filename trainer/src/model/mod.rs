//! Model architectures in burn and their ONNX export.
//!
//! - `cnn`: the small residual CNN trained from scratch (Fashion-MNIST and similar).
//! - `efficientnet`: EfficientNet-Lite0 with the packaged ImageNet weights, for transfer
//!   learning (frozen backbone + new head, then fine-tuning of the last blocks).
//! - `export`: ONNX for both, BatchNorm folded, checked against the burn forward pass in ORT.

use burn::prelude::*;

/// What the training loop needs from an architecture: images N×C×H×W (normalised as the
/// model's `vision.preprocess` says) in, logits N×classes out.
pub trait Classifier<B: Backend> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
}
