//! ONNX export of the burn models: the written graphs run in ONNX Runtime and agree with the
//! trainer's forward pass on real photos (BatchNorm folded, dropout gone, symbolic batch), a
//! file that does not agree is removed, the EfficientNet transfer model loads in
//! `visionclassify` with the trainer's top-1, and the burn EfficientNet with its ImageNet head
//! finds the cat and the espresso like the imported ORT model does.
//!
//! Needs `.deps/` from scripts/setup.sh and, for the element test, the plugin built
//! (`cargo build -p gst-plugin-vision`); scripts/test.sh does both.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::tensor::Distribution;
use gstvision::contract::{ColorName, LayoutName};
use vision_trainer::import;
use vision_trainer::import::labels;
use vision_trainer::import::pth::StateDict;
use vision_trainer::model::Classifier;
use vision_trainer::model::cnn::{SmallCnn, SmallCnnConfig};
use vision_trainer::model::efficientnet::{EffnetClassifier, FEATURES};
use vision_trainer::model::export::{
    check_against_ort, effnet_onnx, export_effnet, export_small_cnn,
};
use vision_trainer::onnx::graph::{self as onnx_export, ExportError, Padding};
use vision_trainer::onnx::metadata::{Metadata, ModelInfo, Preprocess, Resize};
use vision_trainer::onnx::network::EfficientNetLite;
use vision_trainer::onnx::runtime::{self as verify, LogitsSession, RgbImage};
use vision_trainer::onnx::{Dim, ModelProto, ValueInfoProto};

mod common;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn deps(relative: &str) -> Result<PathBuf> {
    let path = repo_root().join(".deps").join(relative);
    ensure!(
        path.exists(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    Ok(path)
}

fn ort_library() -> Result<PathBuf> {
    deps("onnxruntime/lib/libonnxruntime.so")
}

fn weights() -> Result<PathBuf> {
    deps("weights/efficientnet-lite0-57934424.pth")
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vision-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

const PHOTOS: [&str; 4] = [
    "chelsea.png",
    "coffee.png",
    "astronaut.png",
    "motorcycle_left.png",
];

fn photos() -> Result<Vec<RgbImage>> {
    PHOTOS
        .iter()
        .map(|p| Ok(verify::read_png(&deps(&format!("data/photos/{p}"))?)?))
        .collect()
}

/// The photos as the model's input tensor, preprocessed as `pre` says (as the element does).
fn batch(images: &[RgbImage], pre: &Preprocess, device: &Device) -> Tensor<4> {
    let [h, w] = pre.size;
    let mut data = Vec::new();
    for img in images {
        verify::push_tensor(img, pre, &mut data);
    }
    let channels = if pre.color == ColorName::Gray { 1 } else { 3 };
    Tensor::from_data(
        TensorData::new(data, [images.len(), channels, h, w]),
        device,
    )
}

fn floats(data: TensorData) -> Result<Vec<f32>> {
    data.try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a tensor: {e:?}"))
}

fn metadata(labels: Vec<String>, preprocess: Preprocess, architecture: &str) -> Metadata {
    let mut extra = serde_json::Map::new();
    extra.insert("metrics".into(), serde_json::json!({"test_accuracy": 0.5}));
    Metadata {
        labels,
        preprocess,
        model: ModelInfo {
            name: format!("test-{architecture}"),
            version: "1".into(),
            task: "classification".into(),
            architecture: architecture.into(),
            training_data: "test photos".into(),
            optimisation: "fp32".into(),
            extra,
        },
    }
}

fn gray28() -> Preprocess {
    Preprocess {
        size: [28, 28],
        layout: LayoutName::Nchw,
        color: ColorName::Gray,
        resize: Resize::Stretch,
        scale: 1.0 / 255.0,
        mean: [0.286; 3],
        std: [0.353; 3],
    }
}

/// A tiny SmallCnn with non-trivial BatchNorm: γ and β random, running statistics from a few
/// training-mode forward passes (momentum 0.1) on shifted, scaled random data.
fn tiny_cnn() -> Result<SmallCnn> {
    let device = Device::flex().autodiff();
    device.seed(7);
    let config = SmallCnnConfig {
        in_channels: 1,
        classes: 5,
        widths: vec![6, 12],
        blocks_per_stage: 1,
        dropout: 0.3,
        // A strided stem (the default recipe's) as well as a strided stage.
        stem_stride: 2,
    };
    let mut model = config.init(&device)?;
    let randomize = |bn: &mut burn::nn::BatchNorm| {
        let [c] = bn.gamma.dims();
        bn.gamma = Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(0.5, 1.5),
            &device,
        ));
        bn.beta = Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(-0.5, 0.5),
            &device,
        ));
    };
    randomize(&mut model.stem.bn);
    for block in &mut model.blocks {
        randomize(&mut block.conv1.bn);
        randomize(&mut block.conv2.bn);
        if let Some(s) = &mut block.shortcut {
            randomize(&mut s.bn);
        }
    }
    for _ in 0..5 {
        let x = Tensor::<4>::random([8, 1, 28, 28], Distribution::Normal(0.7, 2.0), &device);
        let _ = model.logits(x);
    }
    let mean = floats(model.valid().stem.bn.running_mean.value().into_data())?;
    ensure!(
        mean.iter().any(|m| m.abs() > 0.01),
        "training-mode passes did not move the running mean: {mean:?}"
    );
    Ok(model)
}

fn op_types(model: &ModelProto) -> Vec<String> {
    let mut ops: Vec<String> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .filter_map(|n| n.op_type.clone())
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

#[test]
fn small_cnn_export_matches_burn_with_batchnorm_folded() -> Result<()> {
    let dir = scratch("cnn")?;
    let path = dir.join("cnn.onnx");
    let model = tiny_cnn()?;
    let labels: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    let meta = metadata(labels.clone(), gray28(), "small-cnn");
    let summary = export_small_cnn(&model, &meta, &path)?;
    println!(
        "small cnn: {} bytes, {} parameters, {} nodes, exported in {:.1} ms",
        summary.bytes,
        summary.parameters,
        summary.nodes,
        summary.elapsed.as_secs_f64() * 1e3
    );

    // The graph: no BatchNorm, no Dropout, symbolic batch, the contract filled.
    let proto = ModelProto::from_bytes(&std::fs::read(&path)?)?;
    assert_eq!(proto.opset_import[0].version, Some(17));
    assert_eq!(
        op_types(&proto),
        [
            "Add",
            "Conv",
            "Flatten",
            "Gemm",
            "GlobalAveragePool",
            "Relu"
        ]
    );
    let graph = proto.graph.as_ref().context("no graph")?;
    let input = [
        Dim::Symbolic("N"),
        Dim::Fixed(1),
        Dim::Fixed(28),
        Dim::Fixed(28),
    ];
    assert_eq!(
        graph.input[0],
        ValueInfoProto::float_tensor("input", &input)
    );
    let output = [Dim::Symbolic("N"), Dim::Fixed(5)];
    assert_eq!(
        graph.output[0],
        ValueInfoProto::float_tensor("logits", &output)
    );
    let pre: serde_json::Value =
        serde_json::from_str(proto.metadata("vision.preprocess").unwrap_or(""))?;
    assert_eq!(pre["color"], "GRAY");
    assert_eq!(pre["size"], serde_json::json!([28, 28]));
    let got: Vec<String> = serde_json::from_str(proto.metadata("vision.labels").unwrap_or(""))?;
    assert_eq!(got, labels);
    let info: serde_json::Value =
        serde_json::from_str(proto.metadata("vision.model").unwrap_or(""))?;
    assert_eq!(info["architecture"], "small-cnn");
    assert_eq!(info["optimisation"], "fp32");
    assert_eq!(info["metrics"]["test_accuracy"], 0.5);

    // Parity on real photos, batch of 4 (and so a symbolic batch dimension).
    let images = batch(&photos()?, &gray28(), &Device::flex());
    let report = check_against_ort(&model, &path, images.clone(), 1e-4, &ort_library()?)?;
    println!("small cnn parity: {report:?}");
    assert_eq!(report.images, 4);
    assert_eq!(report.top1_agreement, 100.0);
    assert!(report.max_abs_diff <= 1e-4);

    // The check is not blind: the same file against the model with its stem BatchNorm
    // statistics reset fails, and the file is removed.
    let mut other = model.clone();
    let [c] = other.stem.bn.gamma.dims();
    other.stem.bn.running_mean = RunningState::new(Tensor::zeros([c], &Device::flex()));
    other.stem.bn.running_var = RunningState::new(Tensor::ones([c], &Device::flex()));
    match check_against_ort(&other, &path, images, 1e-4, &ort_library()?) {
        Err(ExportError::Parity { max_abs_diff, .. }) => assert!(max_abs_diff > 1e-3),
        other => bail!("a model with other BatchNorm statistics passed: {other:?}"),
    }
    assert!(!path.exists(), "a file that failed its check was kept");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn export_refuses_inconsistent_metadata() -> Result<()> {
    let dir = scratch("refuse")?;
    let model = tiny_cnn()?;
    let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let err = export_small_cnn(
        &model,
        &metadata(labels, gray28(), "small-cnn"),
        &dir.join("x.onnx"),
    );
    assert!(
        matches!(
            err,
            Err(ExportError::LabelCount {
                classes: 5,
                labels: 2
            })
        ),
        "{err:?}"
    );
    let labels: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    let rgb = Preprocess {
        color: ColorName::Rgb,
        ..gray28()
    };
    let err = export_small_cnn(
        &model,
        &metadata(labels, rgb, "small-cnn"),
        &dir.join("x.onnx"),
    )
    .err()
    .context("an RGB contract for a one-channel model was accepted")?;
    assert!(err.to_string().contains("GRAY"), "{err}");
    assert!(!dir.join("x.onnx").exists());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// ImageNet class ids kept by the 10-class transfer model: one cat, espresso, and eight
/// classes the photos are not (so the expected top-1 has a clear margin).
const SUBSET: [usize; 10] = [285, 967, 0, 1, 407, 417, 508, 817, 948, 980];

/// The ImageNet model with its head cut to [`SUBSET`]: a 10-class transfer model whose
/// answers are known.
fn ten_class_model(device: &Device) -> Result<(EffnetClassifier, Vec<String>)> {
    let mut model = EffnetClassifier::imagenet(&weights()?, Padding::TfSame, device)?;
    let idx = Tensor::<1, Int>::from_data(
        TensorData::new(SUBSET.map(|i| i as i64).to_vec(), [SUBSET.len()]),
        device,
    );
    let w = model.head.weight.val().select(1, idx.clone());
    let b = model
        .head
        .bias
        .as_ref()
        .context("the ImageNet head has a bias")?
        .val()
        .select(0, idx);
    model.head.weight = Param::from_tensor(w);
    model.head.bias = Some(Param::from_tensor(b));
    let all = labels::imagenet(&deps("data/imagenet")?)?;
    Ok((model, SUBSET.iter().map(|&i| all[i].clone()).collect()))
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

fn rows(t: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, c] = t.dims();
    let v = floats(t.into_data())?;
    Ok(v.chunks_exact(c).map(<[f32]>::to_vec).collect())
}

#[test]
fn burn_efficientnet_with_the_imagenet_head_matches_the_imported_model() -> Result<()> {
    let device = Device::flex();
    let model = EffnetClassifier::imagenet(&weights()?, Padding::TfSame, &device)?;
    let labels = labels::imagenet(&deps("data/imagenet")?)?;
    let pre = import::preprocess(Resize::CenterCrop);
    let images = batch(&photos()?[..2], &pre, &device);

    let started = Instant::now();
    let ours = rows(model.logits(images.clone()))?;
    println!(
        "burn forward, 2 images: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let ranked: Vec<_> = ours.iter().map(|l| verify::ranked(l, &labels)).collect();
    for r in &ranked {
        let top: Vec<String> = r[..3]
            .iter()
            .map(|s| format!("{} {:.3}", s.label, s.probability))
            .collect();
        println!("burn: {}", top.join(", "));
    }
    assert!(
        ["Egyptian cat", "tabby", "tiger cat"].contains(&ranked[0][0].label.as_str()),
        "chelsea: {:?}",
        &ranked[0][..3]
    );
    assert_eq!(
        ranked[1][0].label,
        "espresso",
        "coffee: {:?}",
        &ranked[1][..3]
    );

    // The imported model (the `import` graph from the same weights) in ONNX Runtime.
    let net = EfficientNetLite::from_state_dict(&StateDict::open(&weights()?)?)?;
    let meta = metadata(labels.clone(), pre.clone(), "efficientnet-lite0");
    let proto = onnx_export::efficientnet_lite(&net, 224, Padding::TfSame, &meta)?;
    let mut session = LogitsSession::new(
        verify::load_runtime(&ort_library()?)?,
        &proto.to_bytes(),
        1000,
    )?;
    let input = floats(images.into_data())?;
    let theirs = session.run(&input, [2, 3, 224, 224])?;
    let max_diff = ours
        .iter()
        .flatten()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("burn vs imported ORT model: max |logit diff| {max_diff:.2e}");
    assert!(max_diff < 1e-3, "max |logit diff| {max_diff}");
    for (o, t) in ours.iter().zip(theirs.chunks_exact(1000)) {
        assert_eq!(argmax(o), argmax(t));
    }

    // The export of the burn module is the import's graph.
    let exported = effnet_onnx(&model, &meta)?;
    assert_eq!(exported.graph, proto.graph);
    Ok(())
}

#[test]
fn efficientnet_transfer_model_exports_and_visionclassify_agrees() -> Result<()> {
    let dir = scratch("effnet")?;
    let path = dir.join("effnet10.onnx");
    let device = Device::flex();
    let (model, labels) = ten_class_model(&device)?;
    assert_eq!(model.classes(), 10);
    let pre = import::preprocess(Resize::CenterCrop);
    let meta = metadata(labels.clone(), pre.clone(), "efficientnet-lite0");

    let summary = export_effnet(&model, &meta, &path)?;
    println!(
        "effnet 10 classes: {:.1} MB, {} parameters, {} nodes, exported in {:.0} ms",
        summary.bytes as f64 / 1e6,
        summary.parameters,
        summary.nodes,
        summary.elapsed.as_secs_f64() * 1e3
    );
    // 3.35 M folded backbone parameters + 1280 × 10 + 10 for the head.
    assert!(
        (3_300_000..3_400_000).contains(&summary.parameters),
        "{}",
        summary.parameters
    );

    let photos = photos()?;
    let images = batch(&photos, &pre, &device);
    let report = check_against_ort(&model, &path, images.clone(), 1e-4, &ort_library()?)?;
    println!("effnet parity: {report:?}");
    assert_eq!(report.top1_agreement, 100.0);

    // The trainer's top-1 on the photos, and the element's on the same files.
    let ours = rows(model.logits(images.narrow(0, 0, 2)))?;
    let trainer: Vec<&str> = ours.iter().map(|l| labels[argmax(l)].as_str()).collect();
    assert_eq!(trainer, ["Egyptian cat", "espresso"]);
    for (photo, expected) in PHOTOS[..2].iter().zip(trainer) {
        let got = common::classify(&path, &deps(&format!("data/photos/{photo}"))?)?;
        assert_eq!(got, expected, "{photo}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn efficientnet_head_only_training_path_uses_cached_features() -> Result<()> {
    // The frozen-feature path gives the same logits as the whole network.
    let device = Device::flex();
    let (model, _) = ten_class_model(&device)?;
    let pre = import::preprocess(Resize::CenterCrop);
    let images = batch(&photos()?[..2], &pre, &device);
    let features = model.features(images.clone());
    assert_eq!(features.dims(), [2, FEATURES]);
    let a = rows(model.classify_features(features))?;
    let b = rows(model.logits(images))?;
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    Ok(())
}

/// Forward time of the burn EfficientNet on flex (batch 8, 224×224); a measurement, not a
/// test: `cargo test -p vision-trainer --test export -- --ignored --nocapture`.
#[test]
#[ignore]
fn efficientnet_forward_timing() -> Result<()> {
    let device = Device::flex();
    let model = EffnetClassifier::imagenet(&weights()?, Padding::TfSame, &device)?;
    let x = Tensor::<4>::random([8, 3, 224, 224], Distribution::Default, &device);
    let _ = model.logits(x.clone()).into_data();
    let rounds = 3;
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = model.logits(x.clone()).into_data();
    }
    let per_image = started.elapsed().as_secs_f64() / (rounds * 8) as f64;
    println!(
        "burn EfficientNet-Lite0 forward, flex, batch 8 at 224: {:.1} ms/image ({:.1} img/s)",
        per_image * 1e3,
        1.0 / per_image
    );
    let ad = Device::flex().autodiff();
    let frozen = EffnetClassifier::imagenet(&weights()?, Padding::TfSame, &ad)?.freeze_backbone();
    let xa = Tensor::<4>::random([8, 3, 224, 224], Distribution::Default, &ad);
    let started = Instant::now();
    let _grads = frozen.logits(xa).mean().backward();
    println!(
        "frozen-backbone train step (forward + backward), batch 8: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
