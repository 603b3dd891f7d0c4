//! The model contract is `gstvision::contract`, the element's own definition: every `vision.*`
//! variant the trainer writes loads in the element's parser with the values the trainer meant,
//! and metadata the element rejects is rejected by the trainer's readers with the element's
//! error. No ONNX Runtime needed.

use anyhow::{Context, Result, ensure};
use gstvision::contract::{
    Contract, ContractError, KEY_LABELS, KEY_OUTPUT, KEY_PREPROCESS, KEY_SCHEMA, KEYS,
    SCHEMA_VERSION, ScoreKind,
};
use vision_trainer::data::{InputContractError, InputSpec};
use vision_trainer::import;
use vision_trainer::onnx::metadata::{
    INPUT_NAME, Metadata, ModelInfo, OUTPUT_NAME, Preprocess, Resize, metadata_props,
};
use vision_trainer::onnx::{Dim, GraphProto, ModelProto, StringStringEntryProto, ValueInfoProto};
use vision_trainer::optimize::teacher::OnnxTeacher;
use vision_trainer::quantize::{self, sets};

const RESIZES: [Resize; 3] = [Resize::Stretch, Resize::CenterCrop, Resize::Letterbox];

/// Every `vision.preprocess` the trainer writes: its own inputs (grey or RGB, each resize,
/// the recipes' normalisations) and the imported EfficientNet-Lite0's.
fn trainer_preprocesses() -> Vec<Preprocess> {
    let mut out = Vec::new();
    for resize in RESIZES {
        for (channels, size, mean, std) in [
            (1, [28, 28], [0.286; 3], [0.353; 3]),
            (3, [32, 48], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            (3, [224, 224], [0.0; 3], [1.0; 3]),
        ] {
            let spec = InputSpec {
                size,
                channels,
                resize,
                scale: 1.0 / 255.0,
                mean,
                std,
            };
            out.push(spec.to_preprocess());
        }
        out.push(import::preprocess(resize));
    }
    out
}

/// The `vision.model` descriptions: a plain training run and the optimisation steps' extras.
fn trainer_model_infos() -> Vec<ModelInfo> {
    let base = ModelInfo {
        name: "fashion-mnist-cnn".into(),
        version: "1".into(),
        task: "image-classification".into(),
        architecture: "SmallCnn".into(),
        training_data: "Fashion-MNIST (60000 train + 10000 test, 28x28 grey, /d)".into(),
        optimisation: "none".into(),
        extra: serde_json::Map::new(),
    };
    let mut distilled = base.clone();
    distilled.optimisation = "distilled".into();
    distilled
        .extra
        .insert("teacher".into(), "EfficientNet-Lite0".into());
    distilled.extra.insert("seed".into(), 7.into());
    let mut imported = base.clone();
    imported.extra.insert("padding".into(), "tf-same".into());
    imported
        .extra
        .insert("source".into(), serde_json::json!({"file": "lite0.pth"}));
    vec![base, distilled, imported]
}

fn lookup(props: &[StringStringEntryProto]) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| {
        props
            .iter()
            .find(|e| e.key.as_deref() == Some(k))
            .and_then(|e| e.value.clone())
    }
}

#[test]
fn every_variant_the_trainer_writes_loads_in_the_element() -> Result<()> {
    let mut checked = 0;
    for preprocess in trainer_preprocesses() {
        for model in trainer_model_infos() {
            let labels: Vec<String> = ["T-shirt", "Trouser", "\"quoted\" bag"]
                .map(String::from)
                .to_vec();
            let meta = Metadata {
                labels: labels.clone(),
                preprocess: preprocess.clone(),
                model: model.clone(),
            };
            let props = metadata_props(&meta)?;
            let keys: Vec<&str> = props.iter().filter_map(|e| e.key.as_deref()).collect();
            assert_eq!(keys, KEYS);
            let c = Contract::from_lookup(lookup(&props))
                .with_context(|| format!("the element rejects {props:?}"))?;
            assert_eq!(c.schema, Some(SCHEMA_VERSION));
            assert_eq!(c.labels.as_ref(), Some(&labels));
            assert_eq!(c.preprocess, preprocess.to_contract());
            assert_eq!(c.output.name.as_deref(), Some(OUTPUT_NAME));
            assert_eq!(c.output.scores, Some(ScoreKind::Logits));
            assert_eq!(c.model.name.as_deref(), Some(model.name.as_str()));
            assert_eq!(c.model.version.as_deref(), Some(model.version.as_str()));
            assert_eq!(
                c.model.extra.get("optimisation"),
                Some(&serde_json::json!(model.optimisation))
            );
            for (k, v) in &model.extra {
                assert_eq!(c.model.extra.get(k), Some(v), "{k}");
            }
            // And the trainer's own readers take back exactly the input it wrote.
            let proto = ModelProto {
                metadata_props: props,
                ..Default::default()
            };
            let channels = if preprocess.color.name() == "GRAY" {
                1
            } else {
                3
            };
            let dims = [None, Some(channels), None, None];
            let input = InputSpec::from_contract(&proto.contract()?.preprocess, &dims)?;
            assert_eq!(input.to_preprocess(), preprocess);
            checked += 1;
        }
    }
    ensure!(checked == 36, "{checked} variants");
    Ok(())
}

fn figures() -> quantize::ModelFigures {
    quantize::ModelFigures {
        bytes: 1000,
        top1: 90.0,
        images_per_s_batch1: 100.0,
        images_per_s_batch8: 400.0,
    }
}

/// `vision.model` after `quantize` carried it and added its description.
#[test]
fn a_quantized_description_loads_in_the_element() -> Result<()> {
    let meta = Metadata {
        labels: vec!["a".into(), "b".into()],
        preprocess: import::preprocess(Resize::CenterCrop),
        model: trainer_model_infos().remove(0),
    };
    let mut proto = ModelProto {
        metadata_props: metadata_props(&meta)?,
        ..Default::default()
    };
    let report = quantize::QuantizeReport {
        optimisation: "int8-qdq minmax per-channel".into(),
        test_set: "test split".into(),
        test_images: 10,
        labelled: true,
        parent: figures(),
        candidate: figures(),
        top1_drop: 0.0,
        max_accuracy_drop: 1.0,
        agreement: 100.0,
        mean_abs_logit_error: 0.0,
        max_abs_logit_error: 0.0,
        speedup_batch1: 1.0,
        speedup_batch8: 1.0,
        accepted: true,
        transform: Default::default(),
        session: String::new(),
    };
    quantize::describe(&mut proto, &report, "parent.onnx")?;
    quantize::check_contract(&proto)?;
    let c = proto.contract()?;
    assert_eq!(c.model.name.as_deref(), Some("fashion-mnist-cnn"));
    assert_eq!(
        c.model.extra.get("optimisation"),
        Some(&serde_json::json!("int8-qdq minmax per-channel"))
    );
    assert_eq!(c.preprocess, meta.preprocess.to_contract());
    Ok(())
}

/// A model whose metadata holds `vision.preprocess = value` (and the other keys the trainer
/// writes), with a fixed `[1, 3, 8, 8]` input.
fn model_with_preprocess(value: &str) -> Result<ModelProto> {
    let meta = Metadata {
        labels: vec!["a".into(), "b".into()],
        preprocess: import::preprocess(Resize::Stretch),
        model: trainer_model_infos().remove(0),
    };
    let mut props = metadata_props(&meta)?;
    for e in &mut props {
        if e.key.as_deref() == Some(KEY_PREPROCESS) {
            e.value = Some(value.into());
        }
    }
    let mut proto = ModelProto {
        metadata_props: props,
        ..Default::default()
    };
    let fixed = |d: &[i64]| d.iter().map(|&v| Dim::Fixed(v)).collect::<Vec<_>>();
    proto.graph = Some(GraphProto {
        input: vec![ValueInfoProto::float_tensor(
            INPUT_NAME,
            &fixed(&[1, 3, 8, 8]),
        )],
        output: vec![ValueInfoProto::float_tensor(OUTPUT_NAME, &fixed(&[1, 2]))],
        ..Default::default()
    });
    Ok(proto)
}

/// Metadata the element refuses, each with the key its error names.
const REJECTED: &[(&str, &str)] = &[
    (KEY_PREPROCESS, r#"{"size":[8,8],"mean":0.5}"#),
    (KEY_PREPROCESS, r#"{"size":[8,8],"mean":[0.5]}"#),
    (KEY_PREPROCESS, r#"{"size":[8,8],"std":[1,2,3,4]}"#),
    (KEY_PREPROCESS, r#"{"size":[8,8],"mean":[NaN,0,0]}"#),
    (KEY_PREPROCESS, r#"{"size":[8,8],"scale":"1/255"}"#),
    (KEY_PREPROCESS, r#"{"size":[8]}"#),
    (KEY_PREPROCESS, r#"{"size":[8,8],"resize":"zoom"}"#),
    (KEY_PREPROCESS, r#"{"size":[8,8],"colour":"RGB"}"#),
    (KEY_PREPROCESS, r#"{"size":[8,8],"layout":"CHW"}"#),
    (KEY_LABELS, r#"["a", 3]"#),
    (KEY_OUTPUT, r#"{"scores":"odds"}"#),
    (KEY_SCHEMA, r#""7""#),
];

fn element_error(key: &str, value: &str) -> ContractError {
    let owned = (key.to_owned(), value.to_owned());
    match Contract::from_lookup(move |k| (k == owned.0).then(|| owned.1.clone())) {
        Err(e) => e,
        Ok(c) => panic!("the element accepts {key} = {value}: {c:?}"),
    }
}

#[test]
fn metadata_the_element_rejects_is_rejected_by_the_trainer_with_its_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for &(key, value) in REJECTED {
        let expected = element_error(key, value);
        assert_eq!(expected.key, key);
        let mut proto = model_with_preprocess(r#"{"size":[8,8]}"#)?;
        for e in &mut proto.metadata_props {
            if e.key.as_deref() == Some(key) {
                e.value = Some(value.into());
            }
        }
        // The contract as the trainer reads it.
        let got = proto.contract().err().context("the trainer accepts it")?;
        assert_eq!(got.to_string(), expected.to_string(), "{key} = {value}");
        // quantize: the input of the calibration/test images, and the pre-flight check.
        let got = sets::input_spec(&proto)
            .err()
            .context("quantize's input_spec accepts it")?;
        assert_eq!(got.to_string(), expected.to_string(), "{key} = {value}");
        let got = quantize::check_contract(&proto)
            .err()
            .context("quantize's check accepts it")?;
        assert_eq!(got.to_string(), expected.to_string(), "{key} = {value}");
        // The distillation teacher fails on the contract before it opens ONNX Runtime.
        let file = dir.path().join("teacher.onnx");
        std::fs::write(&file, proto.to_bytes())?;
        let got = OnnxTeacher::load(&file, &dir.path().join("no-ort.so"))
            .err()
            .context("the teacher accepts it")?;
        let source =
            std::error::Error::source(&got).and_then(|s| s.downcast_ref::<InputContractError>());
        assert!(
            matches!(source, Some(InputContractError::Contract(e)) if e.to_string() == expected.to_string()),
            "{key} = {value}: {got}"
        );
    }
    Ok(())
}

#[test]
fn what_the_element_accepts_is_read_with_its_defaults() -> Result<()> {
    // Absent values take the element's defaults for a float input.
    let proto = model_with_preprocess(r#"{"size":[8,8]}"#)?;
    let input = sets::input_spec(&proto)?;
    assert_eq!(input.channels, 3);
    assert_eq!(input.resize, Resize::Stretch);
    assert_eq!(input.scale, 1.0 / 255.0);
    assert_eq!((input.mean, input.std), ([0.0; 3], [1.0; 3]));
    // Models the trainer cannot feed are refused with a reason, not read with defaults.
    for value in [
        r#"{"size":[8,8],"color":"BGR"}"#,
        r#"{"size":[8,8],"layout":"NHWC"}"#,
        r#"{"size":[8,8],"color":"GRAY"}"#,
    ] {
        let proto = model_with_preprocess(value)?;
        Contract::from_lookup(lookup(&proto.metadata_props))?;
        let err = sets::input_spec(&proto)
            .err()
            .with_context(|| format!("{value} is accepted"))?;
        assert!(err.to_string().starts_with("vision.preprocess: "), "{err}");
    }
    Ok(())
}
