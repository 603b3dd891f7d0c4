//! Where `scripts/setup.sh` put the project's dependencies: the project root (the nearest
//! folder with `.deps/`) and the default paths under it, looked up once here for every
//! command.

use std::path::{Path, PathBuf};

/// The ONNX Runtime library under the project root, where the set-up installs it; the
/// element finds the same file from `target/{debug,release}/`
/// (`gstvision::model::project_local_candidates`).
pub const ORT_LIBRARY: &str = ".deps/onnxruntime/lib/libonnxruntime.so";

/// The library name the system's dynamic loader looks up when there is no project-local one.
pub const SYSTEM_ORT_LIBRARY: &str = "libonnxruntime.so";

/// The nearest folder from the current directory upwards that has `.deps/` (where
/// scripts/setup.sh puts the EfficientNet weights and ONNX Runtime), else the current
/// directory.
pub fn project_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors()
        .find(|d| d.join(".deps").is_dir())
        .map_or_else(|| cwd.clone(), Path::to_path_buf)
}

/// The ONNX Runtime library to load, in the element's order (`gstvision::model::load_runtime`):
/// the one given (`--ort-library`, which clap fills from `ORT_DYLIB_PATH`), then the
/// project-local one when it exists, then the system's.
pub fn ort_library(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| ort_library_under(&project_root()))
}

/// The project-local library under `root` when it exists, else the system's.
pub fn ort_library_under(root: &Path) -> PathBuf {
    let local = root.join(ORT_LIBRARY);
    if local.is_file() {
        local
    } else {
        PathBuf::from(SYSTEM_ORT_LIBRARY)
    }
}
