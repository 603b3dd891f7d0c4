//! Model architectures in burn and their ONNX export.
//!
//! - `cnn`: the small residual CNN trained from scratch (Fashion-MNIST and similar).
//! - `efficientnet`: EfficientNet-Lite0 with the packaged ImageNet weights, for transfer
//!   learning (frozen backbone + new head, then fine-tuning of the last blocks).
//! - `export`: ONNX for both, BatchNorm folded, checked against the burn forward pass in ORT.
//!
//! burn 0.22 has no backend type parameter: a tensor's backend (flex, with or without
//! autodiff) lives in its `Device`, so modules and this trait are not generic. Training uses
//! `Device::flex().autodiff()`, validation `module.valid()` (plain flex, BatchNorm on running
//! statistics, dropout off).

pub mod cnn;
pub mod efficientnet;
pub mod export;

use burn::prelude::*;

/// What the training loop needs from an architecture: images N×C×H×W (normalised as the
/// model's `vision.preprocess` says) in, logits N×classes out.
pub trait Classifier {
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}
