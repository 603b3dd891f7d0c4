//! Pruning and distillation through the public API: the requested parameter reduction, a
//! pruned network that computes exactly what the unpruned one did when the pruned filters
//! were dead, its ONNX export in ONNX Runtime with the smaller weight shapes, a short
//! distillation on real Fashion-MNIST images (from a burn teacher and from the same teacher
//! exported to ONNX), and the errors a user can cause.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use burn::module::{Module, Param};
use burn::prelude::*;
use vision_trainer::data::{self, DataSpec, Dataset, InputSpec, SplitFractions, Splits};
use vision_trainer::model::cnn::{ConvBn, SmallCnn, SmallCnnConfig};
use vision_trainer::model::export::{check_against_ort, export_small_cnn};
use vision_trainer::onnx::ModelProto;
use vision_trainer::onnx::metadata::{Metadata, ModelInfo, Resize};
use vision_trainer::optimize::{
    DistillConfig, DistillData, DistillError, ModelTeacher, OnnxTeacher, PruneConfig, Scope,
    Target, Teacher, cost_of, distill, prune,
};
use vision_trainer::train::fit::validate;
use vision_trainer::train::source::SplitSource;
use vision_trainer::train::{OptimizerConfig, Quiet};

// Shared with the other test binaries; this one uses only `classify_scored`.
#[allow(dead_code)]
mod common;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn ort_library() -> PathBuf {
    repo_root().join(".deps/onnxruntime/lib/libonnxruntime.so")
}

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vision-trainer-{}-optimize-{name}",
        std::process::id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The Fashion-MNIST recipe's network, seeded.
fn seeded_cnn(device: &Device, seed: u64) -> Result<SmallCnn> {
    device.seed(seed);
    Ok(SmallCnnConfig::default().init(device)?)
}

fn fashion_input() -> InputSpec {
    InputSpec {
        size: [28, 28],
        channels: 1,
        resize: Resize::Stretch,
        scale: 1.0 / 255.0,
        mean: [0.5; 3],
        std: [0.5; 3],
    }
}

fn metadata(classes: usize, optimisation: String) -> Metadata {
    Metadata {
        labels: (0..classes).map(|c| c.to_string()).collect(),
        preprocess: fashion_input().to_preprocess(),
        model: ModelInfo {
            name: "optimize-test".into(),
            version: "1".into(),
            task: "classification".into(),
            architecture: "small-cnn".into(),
            training_data: "test".into(),
            optimisation,
            extra: serde_json::Map::new(),
        },
    }
}

fn random_images(n: usize, device: &Device) -> Tensor<4> {
    Tensor::<4>::random([n, 1, 28, 28], burn::tensor::Distribution::Default, device)
}

#[test]
fn pruning_removes_the_requested_share_of_parameters() -> Result<()> {
    let device = Device::flex();
    let model = seeded_cnn(&device, 3)?;
    let before = cost_of(&model, [28, 28]).params;
    for (scope, stages) in [
        (Scope::Layer, false),
        (Scope::Global, false),
        (Scope::Layer, true),
        (Scope::Global, true),
    ] {
        for fraction in [0.3, 0.5] {
            let config = PruneConfig {
                fraction,
                target: Target::Params,
                scope,
                stages,
            };
            let (pruned, report) = prune(&model, &config, [28, 28])?;
            let removed = 1.0 - cost_of(&pruned, [28, 28]).params as f64 / before as f64;
            ensure!(
                (removed - fraction).abs() <= 0.02,
                "{config:?} removed {removed:.4}"
            );
            // FLOPs shrink too, and the report's figures are the network's own.
            ensure!(report.after.macs < report.before.macs);
            assert_eq!(cost_of(&pruned, [28, 28]), report.after);
            assert_eq!(cost_of(&model, [28, 28]), report.before);
            let logits = pruned.forward(random_images(2, &device));
            assert_eq!(logits.dims(), [2, 10]);
        }
    }
    Ok(())
}

/// Zeroes filters `dead` of `layer` and their BatchNorm γ, β: the channels are exactly 0.
fn kill(layer: &mut ConvBn, dead: &[usize]) {
    let [out, ..] = layer.conv.weight.dims();
    let device = layer.conv.weight.device();
    let mask: Vec<f32> = (0..out)
        .map(|c| if dead.contains(&c) { 0.0 } else { 1.0 })
        .collect();
    let mask = Tensor::<1>::from_data(TensorData::new(mask, [out]), &device);
    layer.conv.weight =
        Param::from_tensor(layer.conv.weight.val() * mask.clone().reshape([out, 1, 1, 1]));
    layer.bn.gamma = Param::from_tensor(layer.bn.gamma.val() * mask.clone());
    layer.bn.beta = Param::from_tensor(layer.bn.beta.val() * mask);
}

#[test]
fn pruning_dead_filters_changes_no_output_and_the_onnx_is_smaller() -> Result<()> {
    let device = Device::flex();
    let mut model = seeded_cnn(&device, 11)?;
    // A quarter of every block's internal filters (32/64/128 → 8/16/32), scattered.
    let mut dead = Vec::new();
    for block in model.blocks.iter_mut() {
        let n = block.conv1.conv.weight.dims()[0];
        let d: Vec<usize> = (0..n).filter(|c| c % 4 == 1).collect();
        kill(&mut block.conv1, &d);
        dead.push(d);
    }
    let model = model.valid();
    let config = PruneConfig {
        fraction: 0.25,
        target: Target::Filters,
        scope: Scope::Layer,
        stages: false,
    };
    let (pruned, report) = prune(&model, &config, [28, 28])?;
    assert_eq!(report.widths_after.internal, [24, 48, 96]);
    assert_eq!(report.widths_after.stages, [32, 64, 128]);
    let images = random_images(8, &device);
    let diff = (model.forward(images.clone()) - pruned.forward(images.clone()))
        .abs()
        .max()
        .into_scalar::<f32>();
    ensure!(
        diff < 1e-5,
        "pruning dead filters changed the logits by {diff}"
    );

    // Both export; the pruned file has the smaller shapes and passes the ORT check.
    let dir = work_dir("export");
    let full_path = dir.join("full.onnx");
    let pruned_path = dir.join("pruned.onnx");
    let full = export_small_cnn(&model, &metadata(10, "fp32".into()), &full_path)?;
    let small = export_small_cnn(&pruned, &metadata(10, report.optimisation()), &pruned_path)?;
    let parity = check_against_ort(&pruned, &pruned_path, images, 1e-4, &ort_library())?;
    ensure!(parity.max_abs_diff < 1e-4);
    // BatchNorm folds into each conv as weight + bias: ONNX params = conv weights + one bias
    // per output channel + head.
    let removed = (full.parameters - small.parameters) as f64 / full.parameters as f64;
    ensure!(
        (0.2..0.26).contains(&removed),
        "ONNX parameters {} -> {} ({removed:.3})",
        full.parameters,
        small.parameters
    );
    let proto = ModelProto::from_bytes(&std::fs::read(&pruned_path)?)?;
    let mut onnx_shapes: Vec<Vec<i64>> = proto
        .graph
        .as_ref()
        .context("graph")?
        .initializer
        .iter()
        .filter(|t| t.dims.len() == 4)
        .map(|t| t.dims.clone())
        .collect();
    let mut burn_shapes: Vec<Vec<i64>> = std::iter::once(&pruned.stem)
        .chain(
            pruned
                .blocks
                .iter()
                .flat_map(|b| [&b.conv1, &b.conv2].into_iter().chain(b.shortcut.as_ref())),
        )
        .map(|l| l.conv.weight.dims().iter().map(|&d| d as i64).collect())
        .collect();
    onnx_shapes.sort();
    burn_shapes.sort();
    assert_eq!(onnx_shapes, burn_shapes);
    assert!(
        onnx_shapes.contains(&vec![96, 64, 3, 3]) && onnx_shapes.contains(&vec![128, 96, 3, 3])
    );
    let meta = proto.metadata("vision.model").unwrap_or_default();
    assert!(meta.contains("\"optimisation\":\"pruned "), "{meta}");
    assert!(meta.contains("(l1, layer)"), "{meta}");
    Ok(())
}

/// The pruned network's ONNX file in `visionclassify` (gst-launch-1.0, PNG files of real
/// Fashion-MNIST test images): the element's top-1 is the pruned burn network's on every image.
#[test]
fn a_pruned_model_gives_the_networks_answers_in_visionclassify() -> Result<()> {
    use opencv::{core, imgcodecs};
    let device = Device::flex();
    let model = seeded_cnn(&device, 23)?.valid();
    let (pruned, report) = prune(&model, &PruneConfig::default(), [28, 28])?;
    ensure!(report.after.params < report.before.params);
    let dir = work_dir("element");
    let path = dir.join("pruned.onnx");
    export_small_cnn(&pruned, &metadata(10, report.optimisation()), &path)?;

    let (ds, _, test) = fashion_subset(1)?;
    let mut answers = Vec::new();
    for &i in test.iter().take(6) {
        let img = &ds.images[i];
        let mut tensor = Vec::new();
        data::tensor_of(img, &fashion_input(), &mut tensor)?;
        let logits = pruned
            .forward(Tensor::<4>::from_data(
                TensorData::new(tensor, [1, 1, 28, 28]),
                &device,
            ))
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| anyhow::anyhow!("reading the logits: {e:?}"))?;
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .context("no logits")?;
        // Softmax probability of the top class, as the element reports it.
        let sum: f32 = logits.iter().map(|&l| (l - logits[best]).exp()).sum();
        let png = dir.join(format!("fashion-{i}.png"));
        let mat = core::Mat::new_rows_cols_with_data(28, 28, img.pixels.as_slice())?;
        let name = png.to_str().context("temporary path is not UTF-8")?;
        ensure!(imgcodecs::imwrite(name, &mat, &core::Vector::new())?);
        let (label, confidence) = common::classify_scored(&path, &png)?;
        answers.push((label, confidence, best.to_string(), f64::from(1.0 / sum)));
    }
    println!("element (label, confidence), network (label, probability): {answers:?}");
    for (label, confidence, network_label, probability) in &answers {
        assert_eq!(label, network_label, "{answers:?}");
        assert!(
            (confidence - probability).abs() < 1e-4,
            "element {confidence} vs network {probability}: {answers:?}"
        );
    }
    // Different images give different scores: the element is not answering from a constant.
    let mut confidences: Vec<f64> = answers.iter().map(|a| a.1).collect();
    confidences.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    assert!(confidences.len() > 1, "{answers:?}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A stratified Fashion-MNIST subset: `per_class` training images per class, the first 1000
/// test images.
fn fashion_subset(per_class: usize) -> Result<(Arc<Dataset>, Vec<usize>, Vec<usize>)> {
    let ds = data::load(&DataSpec::FashionMnist(data::FASHION_MNIST_DIR.into()))
        .context("Fashion-MNIST (Debian dataset-fashion-mnist, scripts/setup.sh)")?;
    let splits = Splits::stratified(
        &ds,
        SplitFractions {
            train: 1.0,
            val: 0.0,
            test: 0.0,
        },
        7,
    )?;
    let train = data::subset_per_class(&ds, &splits.train, per_class, 7);
    let test: Vec<usize> = ds
        .predefined_test
        .clone()
        .context("Fashion-MNIST has a test set")?
        .into_iter()
        .take(1000)
        .collect();
    Ok((Arc::new(ds), train, test))
}

fn small_config() -> SmallCnnConfig {
    SmallCnnConfig {
        widths: vec![8, 16, 32],
        dropout: 0.0,
        ..SmallCnnConfig::default()
    }
}

#[test]
fn a_short_distillation_beats_chance_widely_from_burn_and_onnx_teachers() -> Result<()> {
    let (ds, train, test) = fashion_subset(60)?;
    let input = fashion_input();
    let data = DistillData {
        dataset: ds.clone(),
        train: train.clone(),
        val: Vec::new(),
        input: input.clone(),
    };
    let config = DistillConfig {
        epochs: 3,
        batch_size: 30,
        optimizer: OptimizerConfig {
            lr: 0.05,
            ..OptimizerConfig::default()
        },
        ..DistillConfig::default()
    };
    let device = Device::flex().autodiff();
    let test_source = SplitSource::evaluation(ds.clone(), test.clone(), 250, input.clone());

    // The teacher: the default CNN from the labels alone (α = 0 needs no teacher).
    let teacher_model = distill(
        seeded_cnn(&device, 1)?,
        None,
        &data,
        &DistillConfig {
            alpha: 0.0,
            ..config.clone()
        },
        &device,
        &mut Quiet,
    )?
    .best
    .valid();
    let (_, teacher_accuracy) = validate(&teacher_model, &test_source, &Device::flex())?;
    ensure!(
        teacher_accuracy > 0.5,
        "teacher accuracy {teacher_accuracy}"
    );

    // The same teacher as an ONNX file gives the same logits through ONNX Runtime.
    let onnx_path = work_dir("teacher").join("teacher.onnx");
    export_small_cnn(&teacher_model, &metadata(10, "fp32".into()), &onnx_path)?;
    let mut onnx_teacher = OnnxTeacher::load(&onnx_path, &ort_library())?;
    assert_eq!(onnx_teacher.classes(), 10);
    assert_eq!(onnx_teacher.input(), &input);
    let mut burn_teacher = ModelTeacher::new(teacher_model, input.clone(), 10, "burn teacher");
    let some: Vec<&data::Image> = test[..16].iter().map(|&i| &ds.images[i]).collect();
    let (a, b) = (burn_teacher.logits(&some)?, onnx_teacher.logits(&some)?);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    ensure!(diff < 1e-3, "ONNX and burn teacher logits differ by {diff}");

    // A smaller student from the ONNX teacher (logits cached once: no augmentation).
    device.seed(2);
    let outcome = distill(
        small_config().init(&device)?,
        Some(&mut onnx_teacher),
        &data,
        &config,
        &device,
        &mut Quiet,
    )?;
    assert_eq!(outcome.teacher_images, train.len());
    assert_eq!(outcome.history.epochs.len(), 3);
    let (_, accuracy) = validate(&outcome.best.valid(), &test_source, &Device::flex())?;
    // Chance is 10 %.
    ensure!(accuracy > 0.5, "distilled student accuracy {accuracy}");
    Ok(())
}

#[test]
fn mistakes_get_actionable_errors() -> Result<()> {
    let device = Device::flex();
    let model = seeded_cnn(&device, 5)?;
    for fraction in [0.0, 1.0, 1.3, -0.5] {
        let err = prune(
            &model,
            &PruneConfig {
                fraction,
                ..PruneConfig::default()
            },
            [28, 28],
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        ensure!(err.contains("between 0 and 1"), "{fraction}: {err}");
    }

    // A 4-class teacher for 10-class data.
    let (ds, train, _) = fashion_subset(3)?;
    let four = SmallCnnConfig {
        classes: 4,
        ..small_config()
    }
    .init(&device)?;
    let mut teacher = ModelTeacher::new(four, fashion_input(), 4, "four-class teacher");
    let data = DistillData {
        dataset: ds,
        train,
        val: Vec::new(),
        input: fashion_input(),
    };
    let autodiff = Device::flex().autodiff();
    let student = small_config().init(&autodiff)?;
    let err = distill(
        student.clone(),
        Some(&mut teacher),
        &data,
        &DistillConfig::default(),
        &autodiff,
        &mut Quiet,
    )
    .err();
    let message = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    ensure!(
        matches!(err, Some(DistillError::TeacherClasses { .. }))
            && message.contains("scores 4 classes but the data has 10"),
        "{message}"
    );
    // α > 0 without a teacher, and a bad temperature.
    let err = distill(
        student.clone(),
        None,
        &data,
        &DistillConfig::default(),
        &autodiff,
        &mut Quiet,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    ensure!(err.contains("no teacher was given"), "{err}");
    let err = distill(
        student,
        Some(&mut teacher),
        &data,
        &DistillConfig {
            temperature: 0.0,
            ..DistillConfig::default()
        },
        &autodiff,
        &mut Quiet,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    ensure!(err.contains("temperature must be"), "{err}");
    // A missing ONNX teacher names the file.
    let missing = work_dir("missing").join("nope.onnx");
    let err = OnnxTeacher::load(&missing, &ort_library())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("nope.onnx"), "{err}");
    Ok(())
}
