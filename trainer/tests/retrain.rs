//! Retraining from captured frames on real Fashion-MNIST images (Debian dataset-fashion-mnist),
//! CI-sized: a small CNN trained on a 3-class image folder, then retrained with `--from`, a
//! captured folder (PNGs with `.json` sidecars, as visionclassify writes them) of a shifted
//! look (inverted images) and the class-balanced sampler; the gate's decision is checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use vision_trainer::data::{self, DataSpec, Dataset};
use vision_trainer::retrain::{self, REJECTED_MODEL, RETRAIN_REPORT};
use vision_trainer::train::run::RunOptions;

mod tiny;
use tiny::{CLASSES, recipe};

/// Base folder, captured folder and the base run trained on the base folder alone.
struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    captured: PathBuf,
    run: PathBuf,
}

const BASE_PER_CLASS: usize = 100;
/// Captured (inverted) frames of Sneaker and Bag; none of Trouser (a class without a folder).
const CAPTURED_PER_CLASS: usize = 80;

/// The first `n` images of each of `classes` from `ds`, after `skip` of each.
fn pick(ds: &Dataset, classes: &[usize], skip: usize, n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for &c in classes {
        out.extend(
            (0..ds.len())
                .filter(|&i| ds.labels[i] == c)
                .skip(skip)
                .take(n),
        );
    }
    out
}

fn make_fixture() -> Result<Fixture> {
    let ds = data::load(&DataSpec::from_str("fashion-mnist")?)
        .context("Fashion-MNIST is missing: run scripts/setup.sh")?;
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("base");
    data::write_image_folder(&ds, &pick(&ds, &CLASSES, 0, BASE_PER_CLASS), &base)?;

    // The field: Sneakers and Bags seen inverted (light background), captured with sidecars.
    let mut field = ds.clone();
    for img in &mut field.images {
        for p in &mut img.pixels {
            *p = 255 - *p;
        }
    }
    let captured = dir.path().join("captured");
    let shots = pick(&field, &CLASSES[1..], BASE_PER_CLASS, CAPTURED_PER_CLASS);
    data::write_image_folder(&field, &shots, &captured)?;
    for class in std::fs::read_dir(&captured)? {
        for png in std::fs::read_dir(class?.path())? {
            let png = png?.path();
            let sidecar = png.with_extension("json");
            std::fs::write(
                &sidecar,
                r#"{"model":"base","top_k":[["Trouser",0.41]],"timestamp":"2026-12-04T10:00:00Z"}"#,
            )?;
        }
    }

    let run = dir.path().join("base-run");
    vision_trainer::train::run::run(
        &recipe(&base),
        &RunOptions {
            out: run.clone(),
            export: true,
            ..RunOptions::default()
        },
    )?;
    Ok(Fixture {
        _dir: dir,
        base,
        captured,
        run,
    })
}

fn fixture() -> Result<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| make_fixture().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("building the base run failed: {e}"))
}

fn trainer(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_vision-trainer"))
        .args(args)
        .output()?)
}

fn read_report(out: &Path) -> Result<serde_json::Value> {
    let path = out.join(RETRAIN_REPORT);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn retraining_on_captured_frames_beats_the_old_model_on_them() -> Result<()> {
    let f = fixture()?;
    assert!(f.run.join("model.onnx").is_file());
    let out = tempfile::tempdir()?;
    let mut config = recipe(&f.base);
    config.extra_data = Some(format!("folder:{}", f.captured.display()));
    config.balanced_sampler = true;
    // Continuing from trained weights: a gentler LR than from scratch.
    config.optimizer.lr = 0.05;
    config.epochs = 8;
    let (summary, report) = retrain::retrain(
        &config,
        &RunOptions {
            out: out.path().to_path_buf(),
            from: Some(f.run.clone()),
            ..RunOptions::default()
        },
        0.0,
    )?;
    println!("{}", report.text());

    // 2 × 80 captured frames: 16 of each class held out for the test.
    assert_eq!(report.test_images.captured, 32);
    assert_eq!(report.test_images.base, 60);
    assert_eq!(summary.test.count, 92);
    let balance = std::fs::read_to_string(out.path().join("balance.txt"))?;
    assert!(
        balance.contains("160 image(s): train 112, val 16, test 32"),
        "{balance}"
    );

    let (old, new) = (report.old.captured, report.new.captured);
    let (Some(old), Some(new)) = (old, new) else {
        bail!("no captured test part in {report:?}");
    };
    assert!(new > old, "captured test top-1: old {old:.3}, new {new:.3}");
    assert!(report.accepted, "{}", report.text());
    assert!(out.path().join("model.onnx").is_file());
    assert!(!out.path().join(REJECTED_MODEL).exists());

    let json = read_report(out.path())?;
    assert_eq!(json["decision"], "deployed the new model");
    assert_eq!(json["accepted"], true);
    assert_eq!(json["test_images"]["all"], 92);
    assert!(json["old"]["base"].is_f64() && json["new"]["all"].is_f64());
    Ok(())
}

#[test]
fn a_gate_the_new_model_cannot_pass_keeps_the_old_model() -> Result<()> {
    let f = fixture()?;
    let out = tempfile::tempdir()?;
    let out = out.path().join("retrained");
    // A stale model.onnx from an earlier run into the same folder must not survive.
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("model.onnx"), b"stale")?;
    let data = format!("folder:{}", f.base.display());
    let extra = format!("folder:{}", f.captured.display());
    let from = f.run.display().to_string();
    let out_arg = out.display().to_string();
    let output = trainer(&[
        "train",
        "--quiet",
        "--data",
        &data,
        "--extra-data",
        &extra,
        "--from",
        &from,
        "--min-gain",
        "1.0",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--seed",
        "3",
        "--out",
        &out_arg,
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("kept the old model"), "{stderr}");
    assert!(!out.join("model.onnx").exists());
    assert!(out.join(REJECTED_MODEL).is_file());
    let json = read_report(&out)?;
    assert_eq!(json["accepted"], false);
    assert_eq!(json["decision"], "kept the old model");
    assert_eq!(json["min_gain"], 1.0);
    Ok(())
}

#[test]
fn an_extra_folder_with_an_unknown_class_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ds = data::load(&DataSpec::from_str("fashion-mnist")?)
        .context("Fashion-MNIST is missing: run scripts/setup.sh")?;
    let base = dir.path().join("base");
    data::write_image_folder(&ds, &pick(&ds, &[0, 1], 0, 10), &base)?;
    let extra = dir.path().join("extra");
    data::write_image_folder(&ds, &pick(&ds, &[1, 5], 10, 2), &extra)?;
    let data = format!("folder:{}", base.display());
    let extra = format!("folder:{}", extra.display());
    let out = dir.path().join("run").display().to_string();
    let output = trainer(&[
        "train",
        "--quiet",
        "--data",
        &data,
        "--extra-data",
        &extra,
        "--out",
        &out,
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("`Sandal`"), "{stderr}");
    assert!(stderr.contains("known: T-shirt_top, Trouser"), "{stderr}");
    Ok(())
}

#[test]
fn from_a_run_with_other_classes_is_refused() -> Result<()> {
    let f = fixture()?;
    let dir = tempfile::tempdir()?;
    let ds = data::load(&DataSpec::from_str("fashion-mnist")?)
        .context("Fashion-MNIST is missing: run scripts/setup.sh")?;
    let base = dir.path().join("base");
    data::write_image_folder(&ds, &pick(&ds, &[1, 8], 0, 10), &base)?;
    let data = format!("folder:{}", base.display());
    let from = f.run.display().to_string();
    let out = dir.path().join("run").display().to_string();
    let output = trainer(&[
        "train", "--quiet", "--data", &data, "--from", &from, "--out", &out,
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr
            .contains("knows the classes [Bag, Sneaker, Trouser] but the data has [Bag, Trouser]"),
        "{stderr}"
    );
    // Retraining into the run it starts from would overwrite the old model.
    let output = trainer(&[
        "train",
        "--quiet",
        "--data",
        &format!("folder:{}", f.base.display()),
        "--from",
        &from,
        "--out",
        &from,
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is the --from run folder"), "{stderr}");
    assert!(f.run.join("model.onnx").is_file());
    Ok(())
}
