//! Quantization on real models and real images: the imported ImageNet EfficientNet-Lite0 on
//! crops of scikit-image's photos (agreement with the float model), a nearest-centroid
//! Fashion-MNIST classifier built here (test-split accuracy through the gate), the quantized
//! model in `visionclassify`, and the errors a user can cause.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use gstvision::contract::{ColorName, LayoutName};
use vision_trainer::data::{self, DataSpec};
use vision_trainer::import::{self, ImportOptions};
use vision_trainer::onnx::metadata::{Preprocess, Resize};
use vision_trainer::onnx::{
    AttributeProto, Dim, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, data_type,
};
use vision_trainer::quantize::{
    self, Activations, EvalSet, Images, Method, QuantizeError, QuantizeOptions, QuantizeReport,
    sets,
};

mod common;

use common::classify;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

fn env() -> Result<&'static ort::environment::Environment> {
    let lib = repo_root().join(".deps/onnxruntime/lib/libonnxruntime.so");
    Ok(vision_trainer::onnx::runtime::load_runtime(&lib)?)
}

fn work_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vision-trainer-{}-quantize", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The imported EfficientNet-Lite0, once per test binary.
fn effnet() -> Result<&'static (PathBuf, ModelProto)> {
    static MODEL: OnceLock<Result<(PathBuf, ModelProto), String>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let opts = ImportOptions::project_defaults(&repo_root(), work_dir().join("lite0.onnx"));
            import::import(&opts).map_err(|e| e.to_string())?;
            let bytes = std::fs::read(&opts.out).map_err(|e| e.to_string())?;
            let model = ModelProto::from_bytes(&bytes).map_err(|e| e.to_string())?;
            Ok((opts.out, model))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("import: {e}"))
}

fn photo_sets(model: &ModelProto, calibration: usize, test: usize) -> Result<(Images, EvalSet)> {
    Ok(sets::photos(
        &repo_root().join(".deps/data/photos"),
        model,
        calibration,
        test,
    )?)
}

/// Short throughput measurement: tests check correctness, the benchmark measures speed.
fn test_options(method: Method) -> QuantizeOptions {
    let mut o = QuantizeOptions::new(method);
    o.throughput_rounds = 1;
    o.round_time = Duration::from_millis(30);
    o
}

fn count_ops(m: &ModelProto, op: &str) -> usize {
    m.graph.as_ref().map_or(0, |g| {
        g.node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some(op))
            .count()
    })
}

fn quantize_effnet(method: Method) -> Result<(ModelProto, QuantizeReport)> {
    let (_, model) = effnet()?;
    // 120 test crops: at 40 one crop is 2.5 points of agreement, and the resampler change of
    // issue 16 (own area filter, 8-bit rounding) moved the 40-crop figure from >= 90 % to
    // 87.5 % (5 crops) while the mean logit error stayed 0.16; on 120 crops it is 93.3 %.
    let (calib, test) = photo_sets(model, 24, 120)?;
    let opts = test_options(method);
    let (candidate, summary) = quantize::quantize(env()?, model, &calib, &opts)?;
    let report = quantize::evaluate(env()?, model, &candidate, summary, &test, &opts)?;
    Ok((candidate, report))
}

#[test]
fn static_int8_effnet_agrees_with_float_on_photo_crops() -> Result<()> {
    let (q, report) = quantize_effnet(Method::Entropy)?;
    println!("{}", report.text());
    // Every convolution, residual Add, the pooling and the classifier are quantized, and
    // every ReLU6 is folded into the quantized output before it.
    let (_, float) = effnet()?;
    let selected: usize = ["Conv", "Gemm", "Add", "GlobalAveragePool"]
        .iter()
        .map(|op| count_ops(float, op))
        .sum();
    assert_eq!(
        report.transform.quantized_nodes, selected,
        "{:?}",
        report.transform
    );
    assert_eq!(report.transform.fused_activations, count_ops(float, "Clip"));
    ensure!(count_ops(&q, "QuantizeLinear") > 60);
    ensure!(
        count_ops(&q, "Clip") == 0,
        "ReLU6 folded into the quantized outputs"
    );
    ensure!(
        report.candidate.bytes * 10 < report.parent.bytes * 3,
        "int8 file is under 30 % of float: {} vs {}",
        report.candidate.bytes,
        report.parent.bytes
    );
    // An ImageNet model on 40 crops: the top-1 class stays the same for nearly all, and the
    // logits move by a fraction of their spread (ImageNet logits span about ±10).
    ensure!(
        report.agreement >= 90.0,
        "agreement {:.1} %",
        report.agreement
    );
    ensure!(
        report.mean_abs_logit_error < 0.5,
        "mean logit error {}",
        report.mean_abs_logit_error
    );
    Ok(())
}

#[test]
fn dynamic_and_fp16_effnet_stay_close_to_float() -> Result<()> {
    let (d, report) = quantize_effnet(Method::Dynamic)?;
    println!("{}", report.text());
    ensure!(count_ops(&d, "MatMulInteger") == 1 && count_ops(&d, "DynamicQuantizeLinear") == 1);
    ensure!(
        report.agreement >= 95.0,
        "dynamic agreement {}",
        report.agreement
    );

    let (h, report) = quantize_effnet(Method::Fp16)?;
    println!("{}", report.text());
    let g = h.graph.as_ref().context("graph")?;
    ensure!(
        g.initializer
            .iter()
            .filter(|t| t.data_type == Some(data_type::FLOAT))
            .count()
            == 0,
        "all weights are fp16"
    );
    ensure!(report.candidate.bytes * 10 < report.parent.bytes * 6);
    ensure!(
        report.agreement >= 95.0,
        "fp16 agreement {} (one near-tie crop may flip)",
        report.agreement
    );
    ensure!(
        report.max_abs_logit_error < 0.2,
        "fp16 logit error {}",
        report.max_abs_logit_error
    );
    Ok(())
}

#[test]
fn visionclassify_loads_the_int8_model_unchanged() -> Result<()> {
    let (q, report) = quantize_effnet(Method::Percentile)?;
    let mut q = q;
    quantize::describe(&mut q, &report, "lite0.onnx")?;
    // Written whatever the gate says: this test is about the element loading the model.
    let out = work_dir().join("lite0.int8.onnx");
    vision_trainer::onnx::graph::write(&q, &out)?;
    let info: serde_json::Value =
        serde_json::from_str(q.metadata("vision.model").context("vision.model")?)?;
    assert_eq!(
        info["optimisation"].as_str(),
        Some(report.optimisation.as_str())
    );
    assert!(
        report
            .optimisation
            .starts_with("int8-qdq percentile-99.999 per-channel")
    );
    let photos = repo_root().join(".deps/data/photos");
    let cat = classify(&out, &photos.join("chelsea.png"))?;
    assert!(
        ["Egyptian cat", "tabby", "tiger cat"].contains(&cat.as_str()),
        "chelsea.png: {cat}"
    );
    assert_eq!(classify(&out, &photos.join("coffee.png"))?, "espresso");
    Ok(())
}

/// A nearest-centroid Fashion-MNIST classifier: Flatten → Gemm with weights 2·cₖ and biases
/// −|cₖ|² from the class means of the first training images (about 68 % top-1).
fn centroid_model() -> Result<ModelProto> {
    let ds = data::load(&DataSpec::FashionMnist(data::FASHION_MNIST_DIR.into()))?;
    let test: std::collections::HashSet<usize> = ds
        .predefined_test
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut sums = vec![vec![0f64; 784]; 10];
    let mut counts = [0usize; 10];
    for i in (0..ds.len()).filter(|i| !test.contains(i)).take(6000) {
        let l = ds.labels[i];
        counts[l] += 1;
        for (s, &p) in sums[l].iter_mut().zip(&ds.images[i].pixels) {
            *s += f64::from(p) / 255.0;
        }
    }
    let mut w = Vec::with_capacity(7840);
    let mut b = Vec::with_capacity(10);
    for (s, &n) in sums.iter().zip(&counts) {
        let c: Vec<f32> = s.iter().map(|v| (v / n.max(1) as f64) as f32).collect();
        b.push(-c.iter().map(|v| v * v).sum::<f32>());
        w.extend(c.iter().map(|v| 2.0 * v));
    }
    let graph = GraphProto {
        node: vec![
            NodeProto {
                input: vec!["input".into()],
                output: vec!["flat".into()],
                name: Some("flatten".into()),
                op_type: Some("Flatten".into()),
                attribute: vec![AttributeProto::int("axis", 1)],
                ..Default::default()
            },
            NodeProto {
                input: vec!["flat".into(), "w".into(), "b".into()],
                output: vec!["logits".into()],
                name: Some("fc".into()),
                op_type: Some("Gemm".into()),
                attribute: vec![AttributeProto::int("transB", 1)],
                ..Default::default()
            },
        ],
        name: Some("centroids".into()),
        initializer: vec![
            TensorProto::float("w", &[10, 784], &w),
            TensorProto::float("b", &[10], &b),
        ],
        input: vec![ValueInfoProto::float_tensor(
            "input",
            &[
                Dim::Symbolic("N"),
                Dim::Fixed(1),
                Dim::Fixed(28),
                Dim::Fixed(28),
            ],
        )],
        output: vec![ValueInfoProto::float_tensor(
            "logits",
            &[Dim::Symbolic("N"), Dim::Fixed(10)],
        )],
        ..Default::default()
    };
    let meta = vision_trainer::onnx::metadata::Metadata {
        labels: ds.classes.clone(),
        preprocess: Preprocess {
            size: [28, 28],
            layout: LayoutName::Nchw,
            color: ColorName::Gray,
            resize: Resize::Stretch,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        },
        model: vision_trainer::onnx::metadata::ModelInfo {
            name: "centroids".into(),
            version: "1".into(),
            task: "classification".into(),
            architecture: "nearest class mean".into(),
            training_data: ds.description.clone(),
            optimisation: "fp32".into(),
            extra: serde_json::Map::new(),
        },
    };
    Ok(ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        metadata_props: vision_trainer::onnx::metadata::metadata_props(&meta)?,
        ..Default::default()
    })
}

#[test]
fn fashion_mnist_gate_measures_test_split_accuracy() -> Result<()> {
    let model = centroid_model()?;
    // The data set comes from the model's own vision.model.training_data.
    let (spec, seed) = sets::training_data(&model).context("training data from metadata")?;
    assert!(matches!(spec, DataSpec::FashionMnist(_)));
    let (calib, test) = sets::labelled(&spec, seed, &model, 128, Some(2000))?;
    assert_eq!((calib.len(), test.images.len()), (128, 2000));
    assert_eq!(calib.dims, [1, 28, 28]);

    for activations in [Activations::S8, Activations::U8] {
        let mut opts = test_options(Method::Minmax);
        opts.activations = activations;
        let (q, summary) = quantize::quantize(env()?, &model, &calib, &opts)?;
        assert_eq!(summary.quantized_nodes, 1);
        let report = quantize::evaluate(env()?, &model, &q, summary, &test, &opts)?;
        println!("{}", report.text());
        assert!(report.labelled);
        ensure!(
            (60.0..80.0).contains(&report.parent.top1),
            "float nearest-centroid top-1 {}",
            report.parent.top1
        );
        ensure!(
            report.top1_drop.abs() <= 1.0 && report.accepted,
            "int8 drop {}",
            report.top1_drop
        );
        ensure!(report.agreement >= 97.0, "agreement {}", report.agreement);
    }
    Ok(())
}

#[test]
fn the_gate_keeps_a_rejected_candidate_apart() -> Result<()> {
    let (q, mut report) = quantize_effnet(Method::Dynamic)?;
    // Demand an improvement no quantized model can make over its own parent.
    report.max_accuracy_drop = -1.0;
    report.accepted = report.top1_drop <= report.max_accuracy_drop;
    let dir = work_dir().join("gate");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("m.int8.onnx");
    std::fs::write(&out, b"stale")?;
    let err = quantize::write_outcome(&q, &report, &out);
    assert!(
        matches!(err, Err(QuantizeError::Rejected { .. })),
        "{err:?}"
    );
    assert!(!out.exists(), "no deployable model is left behind");
    assert!(dir.join("m.int8.rejected.onnx").is_file());
    assert!(dir.join("m.int8.report.json").is_file());
    Ok(())
}

fn test_model(name: &str) -> Result<ModelProto> {
    let bytes = std::fs::read(repo_root().join("tests/data").join(name))?;
    Ok(ModelProto::from_bytes(&bytes)?)
}

#[test]
fn user_errors_are_explained() -> Result<()> {
    let env = env()?;
    let opts = QuantizeOptions::new(Method::Entropy);
    let good = test_model("color3.onnx")?;
    let images = |dims: Vec<usize>, n: usize| Images {
        data: vec![0.5; n * dims.iter().product::<usize>()],
        dims,
    };

    let err = quantize::quantize(
        env,
        &test_model("color3_nometa.onnx")?,
        &images(vec![3, 16, 16], 4),
        &opts,
    );
    assert!(
        matches!(err, Err(QuantizeError::NoContract { .. })),
        "{err:?}"
    );

    let err = quantize::quantize(env, &good, &images(vec![3, 32, 32], 0), &opts);
    assert!(
        matches!(err, Err(QuantizeError::EmptyCalibration)),
        "{err:?}"
    );

    match quantize::quantize(env, &good, &images(vec![3, 16, 16], 4), &opts) {
        Err(e @ QuantizeError::CalibrationShape { .. }) => {
            assert!(e.to_string().contains("[3, 16, 16]"), "{e}");
        }
        other => panic!("wrong shape accepted: {other:?}"),
    }

    let mut lstm = opts.clone();
    lstm.op_types = Some(vec!["Conv".into(), "LSTM".into()]);
    let err = quantize::quantize(env, &good, &images(vec![3, 32, 32], 4), &lstm);
    assert!(
        matches!(&err, Err(QuantizeError::UnsupportedOp { op, .. }) if op == "LSTM"),
        "{err:?}"
    );
    let mut conv_dyn = QuantizeOptions::new(Method::Dynamic);
    conv_dyn.op_types = Some(vec!["Add".into()]);
    let err = quantize::quantize(env, &good, &images(vec![3, 32, 32], 0), &conv_dyn);
    assert!(
        matches!(err, Err(QuantizeError::UnsupportedOp { .. })),
        "{err:?}"
    );
    Ok(())
}
