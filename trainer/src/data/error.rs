//! What can go wrong while loading, splitting, augmenting or batching a dataset.

use std::path::PathBuf;

/// Every error of the data layer; each message names the file, folder, line or value to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "unknown data source `{spec}`: use folder:PATH, csv:PATH, fashion-mnist, \
         fashion-mnist:DIR, or the path of an existing image folder"
    )]
    UnknownSpec { spec: String },
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("{} is not a directory (an image folder needs one sub-folder per class)", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} has no class sub-folders: put the images of each class in a folder of its own \
         (the folder name is the class name)",
        path.display()
    )]
    NoClassFolders { path: PathBuf },
    #[error("class folder {} is empty: it holds no PNG or JPEG images", folder.display())]
    EmptyClassFolder { folder: PathBuf },
    #[error("{}: corrupt or unsupported image ({reason})", path.display())]
    Decode { path: PathBuf, reason: String },
    #[error("{}: not a valid IDX file: {reason}", path.display())]
    Idx { path: PathBuf, reason: String },
    #[error("{} line {line}: {reason}", path.display())]
    CsvLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{} holds no `path,label` rows", path.display())]
    CsvEmpty { path: PathBuf },
    #[error(
        "{source_name} has {found} class(es) ({names}); a classifier needs at least 2",
        names = names.join(", ")
    )]
    TooFewClasses {
        source_name: String,
        found: usize,
        names: Vec<String>,
    },
    #[error("split fractions {train}/{val}/{test} are invalid: {reason}")]
    Fractions {
        train: f32,
        val: f32,
        test: f32,
        reason: String,
    },
    #[error(
        "class `{class}` has only {available} image(s) outside the test set; with these split \
         fractions none is left for training (add images or lower the val/test fractions)"
    )]
    NoTrainingImages { class: String, available: usize },
    #[error("image {index} ({origin}) is in both the {first} and the {second} split")]
    SplitOverlap {
        index: usize,
        origin: String,
        first: &'static str,
        second: &'static str,
    },
    #[error(
        "the same file {origin} is in both the {first} split (image {first_index}) and the \
         {second} split (image {second_index})"
    )]
    OriginOverlap {
        origin: String,
        first: &'static str,
        first_index: usize,
        second: &'static str,
        second_index: usize,
    },
    #[error("image index {index} is out of range: the dataset has {len} images")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("label {label} of image {index} is out of range: the dataset has {classes} classes")]
    LabelOutOfRange {
        index: usize,
        label: usize,
        classes: usize,
    },
    #[error("image {index} ({origin}) is malformed: {reason}")]
    BadImage {
        index: usize,
        origin: String,
        reason: String,
    },
    #[error("invalid model input: {reason}")]
    BadInput { reason: String },
    #[error("invalid augmentation setting: {reason}")]
    BadAugment { reason: String },
    #[error("batch size must be at least 1")]
    BatchSize,
    #[error("{} already holds files; write the image folder into a new or empty directory", path.display())]
    DirNotEmpty { path: PathBuf },
    #[error("cannot write {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error(
        "extra data {}: class folder `{class}` is not a class of the base data set (known: {})",
        folder.display(),
        known.join(", ")
    )]
    UnknownExtraClass {
        folder: PathBuf,
        class: String,
        known: Vec<String>,
    },
    #[error(
        "extra data {}: no PNG or JPEG images in its class folders (expected \
         <class>/<image>.png, as visionclassify captures them)",
        path.display()
    )]
    NoExtraImages { path: PathBuf },
    #[error("OpenCV failed while {context}: {source}")]
    OpenCv {
        context: &'static str,
        #[source]
        source: opencv::Error,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataError::NotFound { path }
            } else {
                DataError::Io { path, source }
            }
        }
    }
}

pub(crate) fn cv_err(context: &'static str) -> impl FnOnce(opencv::Error) -> DataError {
    move |source| DataError::OpenCv { context, source }
}
