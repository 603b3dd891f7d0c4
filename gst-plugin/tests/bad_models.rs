//! The malformed-model corpus: every file of `tests/data/bad-models/` (made by
//! `scripts/bad-models.py`, listed with its reason in `cases.json`) must be refused with an
//! error that names the file and the reason, never a panic or an abort: through the plain-Rust
//! loading API ([`Runner::open`], [`engine::attach`]) and through the element (the state
//! change to PAUSED fails with that message on the bus).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod support;

use gstvision::engine::{self, EngineSettings, Request};
use gstvision::model::{self, MAX_BATCH_VALUES, Overrides, Runner, RunnerConfig};
use serde::Deserialize;
use support::plugin::{data, init, ort_library, start_error_of};

/// The corpus must keep at least this many cases (issue 14).
const MIN_CASES: usize = 25;

#[derive(Debug, Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    file: String,
    what: String,
    stage: Stage,
    /// A substring the error message must contain.
    reason: String,
}

/// Where a case must fail.
#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum Stage {
    /// Opening the session or describing the model.
    Open,
    /// The engine's warm-up run on a zero batch (the session opens).
    FirstRun,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(data("bad-models"))
}

/// The manifest's cases, checked against the folder: every model file has a case and every
/// case a file.
fn corpus() -> Vec<(PathBuf, Case)> {
    let dir = corpus_dir();
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("cases.json");
    let manifest: Manifest = serde_json::from_str(&text).expect("cases.json parses");
    assert!(
        manifest.cases.len() >= MIN_CASES,
        "{} cases, at least {MIN_CASES} wanted",
        manifest.cases.len()
    );
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = manifest.cases.iter().map(|c| c.file.clone()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every .onnx file has a case, every case a file"
    );
    manifest
        .cases
        .into_iter()
        .map(|c| (dir.join(&c.file), c))
        .collect()
}

/// What is missing from an error message: the file's path, the case's reason.
fn missing(message: &str, path: &Path, case: &Case) -> Option<String> {
    let path = path.display().to_string();
    let absent: Vec<&str> = [path.as_str(), case.reason.as_str()]
        .into_iter()
        .filter(|n| !message.contains(n))
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} ({}): {message:?} lacks {absent:?}",
            case.file, case.what
        )
    })
}

fn load_runtime() {
    model::load_runtime(Some(Path::new(&ort_library())), &[]).expect("ONNX Runtime loads");
}

fn request(path: &Path, batch_size: usize) -> Request {
    Request {
        instance_id: None,
        element: "bad-models".into(),
        settings: EngineSettings {
            runner: RunnerConfig {
                model: path.to_path_buf(),
                threads: 1,
                ..RunnerConfig::default()
            },
            batch_size,
            timeout: Duration::from_millis(10),
            workers: 1,
        },
        overrides: Overrides::default(),
    }
}

/// Runs `f`, turning a panic into a failure line.
fn no_panic<T>(file: &str, what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let text = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{file}: {what} panicked: {text}")
    })
}

#[test]
fn every_bad_model_is_refused_by_the_loading_api_with_its_reason() {
    load_runtime();
    let mut failures = Vec::new();
    for (path, case) in corpus() {
        let req = request(&path, 4);
        // Runner::open: the session and the description.
        match no_panic(&case.file, "Runner::open", || {
            Runner::open(&req.settings.runner, &req.overrides).map(|_| ())
        }) {
            Err(panicked) => failures.push(panicked),
            Ok(Ok(())) if case.stage == Stage::Open => {
                failures.push(format!("{}: Runner::open accepted it", case.file))
            }
            Ok(Err(e)) if case.stage == Stage::FirstRun => failures.push(format!(
                "{}: must open and fail only when run, but: {e}",
                case.file
            )),
            Ok(Err(e)) => failures.extend(missing(&e.to_string(), &path, &case)),
            Ok(Ok(())) => {}
        }
        // engine::attach: what the element calls (open, limits, tensors, warm-up runs).
        match no_panic(&case.file, "engine::attach", || {
            engine::attach(&req).map(|_| ())
        }) {
            Err(panicked) => failures.push(panicked),
            Ok(Ok(())) => failures.push(format!("{}: engine::attach accepted it", case.file)),
            Ok(Err(e)) => failures.extend(missing(&e.to_string(), &path, &case)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_bad_model_fails_the_elements_start_naming_file_and_reason() {
    init();
    let mut failures = Vec::new();
    for (path, case) in corpus() {
        let element = gst::ElementFactory::make("visionclassify")
            .property("model", path.to_string_lossy().as_ref())
            .property("ort-library", ort_library())
            .build()
            .expect("visionclassify");
        // start_error_of asserts that the state change fails and returns the bus error.
        match no_panic(&case.file, "the pipeline", || start_error_of(&element)) {
            Err(panicked) => failures.push(panicked),
            Ok(message) => failures.extend(missing(&message, &path, &case)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A good model with a batch beyond [`MAX_BATCH_VALUES`]: refused with the limit named,
/// before the batch tensor is allocated.
#[test]
fn a_batch_beyond_the_limit_is_refused_before_allocation() {
    load_runtime();
    let path = PathBuf::from(data("color3.onnx"));
    // color3 takes 3 × 32 × 32 = 3072 values per image.
    let images = MAX_BATCH_VALUES / 3072 + 1;
    let e = engine::attach(&request(&path, images))
        .map(|_| ())
        .expect_err("beyond the limit");
    let m = e.to_string();
    for needle in [
        path.display().to_string(),
        format!("batch-size {images}"),
        "MAX_BATCH_VALUES".into(),
    ] {
        assert!(m.contains(&needle), "{m:?} lacks {needle:?}");
    }
    // The same model at an ordinary batch opens.
    let ok = engine::attach(&request(&path, 4));
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
}
