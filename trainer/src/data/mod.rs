//! Datasets: loading (image folder, Fashion-MNIST IDX, CSV of path,label), stratified splits,
//! class-balance report, augmentation and batching into the model's input tensor.
//!
//! Burn-free on purpose: everything here works on plain `Vec`s so that it is fast to test and
//! shared by training, evaluation, calibration (quantization) and export checks.
//!
//! The public API below is the contract the `train`, `model` and `quantize` modules code
//! against; its bodies live in the sub-modules:
//!
//! - loading: [`load`] from a [`DataSpec`] (`folder.rs`, `idx.rs`, `csv.rs`, decoding in
//!   `decode.rs`); [`write_image_folder`] writes a subset back as PNGs.
//! - splits: [`SplitFractions`], [`Splits::stratified`], [`Splits::check_disjoint`],
//!   [`subset_per_class`] (`split.rs`).
//! - extra data: [`merge_extra`] appends a second labelled folder (captured frames) to a
//!   base data set and its splits (`extra.rs`).
//! - balance: [`balance_report`] (`balance.rs`); [`BalancedSampler`], class-balanced epochs
//!   drawn with replacement (`sampler.rs`).
//! - augmentation: [`AugmentConfig`] and the per-image / per-batch operations (`augment.rs`).
//! - model input: [`InputSpec`], [`tensor_of`]; the same resize as `visionclassify`
//!   (`input.rs`).
//! - batching: [`Loader`], a background thread that prepares batches (`loader.rs`).

mod augment;
mod balance;
mod csv;
mod decode;
mod error;
mod extra;
mod folder;
mod idx;
mod input;
mod loader;
mod sampler;
mod split;

pub use augment::{
    AugmentConfig, BlurAug, ColorJitter, CropAug, EraseAug, MixAug, RotateAug, sample_beta,
};
pub use balance::{BalanceReport, ClassBalance, IMBALANCE_WARN_RATIO, balance_report};
pub use error::DataError;
pub use extra::{ExtraPart, merge_extra};
pub use folder::write_image_folder;
pub use idx::{FASHION_MNIST_CLASSES, FASHION_MNIST_DIR};
pub use input::{InputContractError, InputSpec, tensor_of};
pub use loader::Loader;
pub use sampler::BalancedSampler;
pub use split::{DuplicateReport, SplitFractions, split_per_class, subset_per_class};

use std::path::{Path, PathBuf};
use std::str::FromStr;

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
///
/// All images of a dataset have the same number of channels: an image folder or CSV whose
/// images are all grey stays 1-channel; as soon as one image is in colour, the grey ones are
/// expanded to RGB by replication.
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

impl Image {
    /// Values per image: width × height × channels.
    pub fn len(&self) -> usize {
        self.width * self.height * self.channels
    }

    /// True when the image has no pixels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The channel values of pixel (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * self.channels;
        &self.pixels[i..i + self.channels]
    }

    /// The same image with 3 channels (grey replicated); RGB images are returned as they are.
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        Image {
            width: self.width,
            height: self.height,
            channels: 3,
            pixels: self.pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        }
    }
}

impl DataSpec {
    /// The folder or file the data comes from.
    pub fn path(&self) -> &Path {
        match self {
            DataSpec::Folder(p) | DataSpec::FashionMnist(p) | DataSpec::Csv(p) => p,
        }
    }
}

impl std::fmt::Display for DataSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSpec::Folder(p) => write!(f, "folder:{}", p.display()),
            DataSpec::FashionMnist(p) => write!(f, "fashion-mnist:{}", p.display()),
            DataSpec::Csv(p) => write!(f, "csv:{}", p.display()),
        }
    }
}

impl FromStr for DataSpec {
    type Err = DataError;

    /// Parses `folder:PATH`, `csv:PATH`, `fashion-mnist` (the Debian package's folder),
    /// `fashion-mnist:DIR`, or a bare path: an existing directory is an image folder and an
    /// existing `.csv` file a CSV list. Paths are not checked here except for the bare form;
    /// [`load`] reports missing ones.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let non_empty = |rest: &str| {
            if rest.is_empty() {
                Err(DataError::UnknownSpec { spec: s.to_owned() })
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        if let Some(rest) = s.strip_prefix("folder:") {
            return Ok(DataSpec::Folder(non_empty(rest)?));
        }
        if let Some(rest) = s.strip_prefix("csv:") {
            return Ok(DataSpec::Csv(non_empty(rest)?));
        }
        if s == "fashion-mnist" {
            return Ok(DataSpec::FashionMnist(PathBuf::from(FASHION_MNIST_DIR)));
        }
        if let Some(rest) = s.strip_prefix("fashion-mnist:") {
            return Ok(DataSpec::FashionMnist(non_empty(rest)?));
        }
        let path = Path::new(s);
        if !s.is_empty() && path.is_dir() {
            return Ok(DataSpec::Folder(path.to_path_buf()));
        }
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if is_csv && path.is_file() {
            return Ok(DataSpec::Csv(path.to_path_buf()));
        }
        Err(DataError::UnknownSpec { spec: s.to_owned() })
    }
}

/// Loads a whole dataset into memory.
///
/// Errors name what to fix: a missing path, a file that is not a directory, an empty class
/// folder, an image that cannot be decoded, a malformed IDX file or CSV line, fewer than two
/// classes.
pub fn load(spec: &DataSpec) -> Result<Dataset, DataError> {
    let ds = match spec {
        DataSpec::Folder(dir) => folder::load(dir)?,
        DataSpec::FashionMnist(dir) => idx::load_fashion_mnist(dir)?,
        DataSpec::Csv(file) => csv::load(file)?,
    };
    if ds.classes.len() < 2 {
        return Err(DataError::TooFewClasses {
            source_name: spec.to_string(),
            found: ds.classes.len(),
            names: ds.classes.clone(),
        });
    }
    Ok(ds)
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when the dataset has no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Channels of the images (1 or 3; all images share it), 0 for an empty dataset.
    pub fn channels(&self) -> usize {
        self.images.first().map_or(0, |i| i.channels)
    }

    /// Images per class among `indices` (out-of-range indices are not counted).
    pub fn class_counts(&self, indices: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &i in indices {
            if let Some(&l) = self.labels.get(i)
                && let Some(c) = counts.get_mut(l)
            {
                *c += 1;
            }
        }
        counts
    }

    /// Every index, 0..len.
    pub fn all_indices(&self) -> Vec<usize> {
        (0..self.len()).collect()
    }

    /// Checks that labels, origins and images agree and every image is well formed
    /// (1 or 3 channels, a pixel buffer of width × height × channels bytes).
    pub fn validate(&self) -> Result<(), DataError> {
        let n = self.images.len();
        if self.labels.len() != n || self.origins.len() != n {
            return Err(DataError::BadImage {
                index: n,
                origin: self.description.clone(),
                reason: format!(
                    "{n} images but {} labels and {} origins",
                    self.labels.len(),
                    self.origins.len()
                ),
            });
        }
        for (i, img) in self.images.iter().enumerate() {
            check_image(img).map_err(|reason| DataError::BadImage {
                index: i,
                origin: self.origins[i].clone(),
                reason,
            })?;
            if self.labels[i] >= self.classes.len() {
                return Err(DataError::LabelOutOfRange {
                    index: i,
                    label: self.labels[i],
                    classes: self.classes.len(),
                });
            }
        }
        Ok(())
    }
}

/// Why an image cannot be used, if it cannot.
pub(crate) fn check_image(img: &Image) -> Result<(), String> {
    if img.width == 0 || img.height == 0 {
        return Err(format!("it is empty ({}x{})", img.width, img.height));
    }
    if img.channels != 1 && img.channels != 3 {
        return Err(format!(
            "it has {} channels; 1 or 3 are supported",
            img.channels
        ));
    }
    if img.pixels.len() != img.len() {
        return Err(format!(
            "{}x{}x{} needs {} bytes but it holds {}",
            img.width,
            img.height,
            img.channels,
            img.len(),
            img.pixels.len()
        ));
    }
    Ok(())
}

/// Class names of a sorted set of labels; the class id is the position.
pub(crate) fn sorted_classes<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = names.into_iter().collect();
    set.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_every_form() {
        assert_eq!(
            "folder:/x/y".parse::<DataSpec>().ok(),
            Some(DataSpec::Folder("/x/y".into()))
        );
        assert_eq!(
            "csv:list.csv".parse::<DataSpec>().ok(),
            Some(DataSpec::Csv("list.csv".into()))
        );
        assert_eq!(
            "fashion-mnist".parse::<DataSpec>().ok(),
            Some(DataSpec::FashionMnist(FASHION_MNIST_DIR.into()))
        );
        assert_eq!(
            "fashion-mnist:/d".parse::<DataSpec>().ok(),
            Some(DataSpec::FashionMnist("/d".into()))
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            dir.to_str().and_then(|d| d.parse::<DataSpec>().ok()),
            Some(DataSpec::Folder(dir.clone()))
        );
        for bad in ["", "folder:", "mnist", "/no/such/dir/anywhere", "csv:"] {
            let err = bad.parse::<DataSpec>().err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("unknown data source")),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn spec_round_trips_through_display() {
        for spec in [
            DataSpec::Folder("/a b/c".into()),
            DataSpec::Csv("x.csv".into()),
            DataSpec::FashionMnist("/d".into()),
        ] {
            assert_eq!(spec.to_string().parse::<DataSpec>().ok(), Some(spec));
        }
    }

    #[test]
    fn validate_names_the_bad_image() {
        let ds = Dataset {
            classes: vec!["a".into(), "b".into()],
            images: vec![
                Image {
                    width: 2,
                    height: 1,
                    channels: 1,
                    pixels: vec![0, 1],
                },
                Image {
                    width: 2,
                    height: 2,
                    channels: 1,
                    pixels: vec![0, 1],
                },
            ],
            labels: vec![0, 1],
            origins: vec!["one".into(), "two".into()],
            predefined_test: None,
            description: "t".into(),
        };
        let err = ds.validate().unwrap_err().to_string();
        assert!(
            err.contains("image 1 (two)") && err.contains("needs 4 bytes"),
            "{err}"
        );
        assert_eq!(ds.class_counts(&[0, 1, 1, 7]), vec![1, 2]);
        assert_eq!(ds.images[0].to_rgb().pixels, vec![0, 0, 0, 1, 1, 1]);
    }
}
