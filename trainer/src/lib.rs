//! The visionclassify trainer: imports pretrained weights and writes the ONNX models
//! `visionclassify` loads, with the `vision.*` metadata contract of models/README.md.
//!
//! So far: `import` of the pretrained EfficientNet-Lite0 ImageNet classifier (legacy PyTorch
//! pickle reader, EfficientNet-Lite builder with BatchNorm folding, ONNX emitter, ONNX Runtime
//! check). Training, evaluation and quantization land with the rest of the trainer issue.

pub mod efficientnet;
pub mod export;
pub mod import;
pub mod labels;
pub mod onnx;
pub mod pickle;
pub mod pth;
pub mod verify;

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
