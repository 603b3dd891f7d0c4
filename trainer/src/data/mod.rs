//! Datasets: loading (image folder, Fashion-MNIST IDX, CSV of path,label), stratified splits,
//! class-balance report, augmentation and batching into the model's input tensor.
//!
//! Burn-free on purpose: everything here works on plain `Vec`s so that it is fast to test and
//! shared by training, evaluation, calibration (quantization) and export checks.
//!
//! The public API below is the contract the `train`, `model` and `quantize` modules code
//! against; its bodies live in the sub-modules.

use std::path::PathBuf;

/// One decoded image: 8-bit, rows packed, HWC; `channels` is 1 (grey) or 3 (RGB order).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// Where a dataset comes from (CLI: `--data folder:PATH`, `--data fashion-mnist[:DIR]`,
/// `--data csv:PATH`).
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    /// One sub-folder per class (sorted by name = class id), PNG/JPEG files inside.
    Folder(PathBuf),
    /// Fashion-MNIST IDX files (Debian `dataset-fashion-mnist`: /usr/share/datasets/fashion-mnist).
    FashionMnist(PathBuf),
    /// A CSV file of `path,label` rows (paths relative to the CSV's folder).
    Csv(PathBuf),
}

/// A loaded dataset, all images in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Class names, index = class id.
    pub classes: Vec<String>,
    pub images: Vec<Image>,
    pub labels: Vec<usize>,
    /// Provenance of each image (file path, or `file#index` for IDX), for overlap checks and
    /// error messages.
    pub origins: Vec<String>,
    /// Indices of a test set the source defines itself (Fashion-MNIST's 10 000 test images);
    /// `None` when the split decides.
    pub predefined_test: Option<Vec<usize>>,
    /// Short human description (written into the model's `training_data`).
    pub description: String,
}

/// Index lists into a `Dataset`; disjoint by construction and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// A batch ready for a model: `images` is N×C×H×W f32 already normalised as the exported
/// model's `vision.preprocess` says; `targets` is N×classes (one-hot, label-smoothed by the
/// loss, or mixed by MixUp/CutMix); `labels` are the hard labels (the dominant one when mixed).
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Vec<f32>,
    pub targets: Vec<f32>,
    pub labels: Vec<usize>,
    pub shape: [usize; 4],
    pub classes: usize,
}
