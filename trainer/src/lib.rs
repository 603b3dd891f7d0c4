//! The visionclassify trainer: imports pretrained weights, trains, fine-tunes, evaluates,
//! exports and optimises the ONNX models `visionclassify` loads, with the `vision.*` metadata
//! contract of models/README.md.

pub mod batch_norm;
pub mod data;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod model;
pub mod onnx;
pub mod optimize;
pub mod project;
pub mod quantize;
pub mod report;
pub mod retrain;
pub mod train;

/// Real data for unit tests, fetched into `.deps/` by scripts/setup.sh (the README's test
/// command runs it first).
#[cfg(test)]
pub(crate) fn test_deps(relative: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.deps")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh first",
        path.display()
    );
    path
}
