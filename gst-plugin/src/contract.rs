//! The model contract: the `vision.*` keys of an ONNX model's `metadata_props`, written by the
//! trainer and read by `visionclassify`. Documented for users in `models/README.md`.

use serde::{Deserialize, Serialize};

use crate::preprocess::{ChannelOrder, Layout, ResizeMode};

/// Version of the contract this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

pub const KEY_SCHEMA: &str = "vision.schema";
pub const KEY_LABELS: &str = "vision.labels";
pub const KEY_PREPROCESS: &str = "vision.preprocess";
pub const KEY_OUTPUT: &str = "vision.output";
pub const KEY_MODEL: &str = "vision.model";

/// How the model wants its input prepared (`vision.preprocess`). Every field is optional: what
/// is missing comes from the element's properties or their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessContract {
    /// `[height, width]` the model was trained at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<[usize; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize: Option<ResizeName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<[f32; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<[f32; 3]>,
}

impl PreprocessContract {
    /// Values that parse but cannot be used: a side of 0, a `scale` or `std` of 0 (every
    /// pixel the same; pixels are divided by `std`), numbers that are not finite (JSON has
    /// none, and the parser refuses what float32 cannot hold: checked again for values made
    /// in code). How large `size` may be is the model's limit (`model::MAX_IMAGE_VALUES`).
    pub fn check(&self) -> Result<(), String> {
        if let Some(size) = self.size
            && size.contains(&0)
        {
            return Err(format!("size {size:?} has a side of 0"));
        }
        if let Some(scale) = self.scale
            && !(scale.is_finite() && scale != 0.0)
        {
            return Err(format!("scale {scale} is not a finite number other than 0"));
        }
        if let Some(mean) = self.mean
            && !mean.iter().all(|m| m.is_finite())
        {
            return Err(format!("mean {mean:?} holds a number that is not finite"));
        }
        if let Some(std) = self.std
            && !std.iter().all(|s| s.is_finite() && *s != 0.0)
        {
            return Err(format!(
                "std {std:?} holds 0 or a number that is not finite (pixels are divided by it)"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayoutName {
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColorName {
    #[serde(rename = "RGB")]
    Rgb,
    #[serde(rename = "BGR")]
    Bgr,
    #[serde(rename = "GRAY")]
    Gray,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeName {
    Stretch,
    Letterbox,
    CenterCrop,
}

/// Whether the scores output holds logits (the element applies softmax) or probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    #[default]
    Logits,
    Probabilities,
}

/// `vision.output`: which output holds the class scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputContract {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<ScoreKind>,
}

/// `vision.model`: descriptive fields; unknown extra fields are kept, not rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The keys in the order a writer puts them into `metadata_props`.
pub const KEYS: [&str; 5] = [
    KEY_SCHEMA,
    KEY_LABELS,
    KEY_PREPROCESS,
    KEY_OUTPUT,
    KEY_MODEL,
];

/// The value a writer stores under [`KEY_SCHEMA`]: the version as a JSON string (`"1"`).
pub fn schema_value() -> String {
    format!("\"{SCHEMA_VERSION}\"")
}

/// Everything the contract says about one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contract {
    pub schema: Option<u32>,
    pub labels: Option<Vec<String>>,
    pub preprocess: PreprocessContract,
    pub output: OutputContract,
    pub model: ModelInfo,
}

#[derive(Debug, thiserror::Error)]
#[error("metadata key `{key}` is not valid: {reason}")]
pub struct ContractError {
    pub key: &'static str,
    pub reason: String,
}

impl Contract {
    /// Parses the contract from a metadata lookup (`key -> value`). Missing keys are fine;
    /// present keys with malformed JSON are an error that names the key.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ContractError> {
        fn parse<T: serde::de::DeserializeOwned>(
            key: &'static str,
            value: Option<String>,
        ) -> Result<Option<T>, ContractError> {
            value
                .map(|v| {
                    serde_json::from_str(&v).map_err(|e| ContractError {
                        key,
                        reason: e.to_string(),
                    })
                })
                .transpose()
        }
        // The schema is written as a JSON string or number; accept both.
        let schema = match lookup(KEY_SCHEMA) {
            None => None,
            Some(v) => {
                Some(
                    v.trim()
                        .trim_matches('"')
                        .parse::<u32>()
                        .map_err(|e| ContractError {
                            key: KEY_SCHEMA,
                            reason: format!("{v:?}: {e}"),
                        })?,
                )
            }
        };
        if let Some(s) = schema
            && s > SCHEMA_VERSION
        {
            return Err(ContractError {
                key: KEY_SCHEMA,
                reason: format!(
                    "model uses contract version {s}, this element understands up to {SCHEMA_VERSION}"
                ),
            });
        }
        let preprocess: PreprocessContract =
            parse(KEY_PREPROCESS, lookup(KEY_PREPROCESS))?.unwrap_or_default();
        preprocess.check().map_err(|reason| ContractError {
            key: KEY_PREPROCESS,
            reason,
        })?;
        Ok(Self {
            schema,
            labels: parse(KEY_LABELS, lookup(KEY_LABELS))?,
            preprocess,
            output: parse(KEY_OUTPUT, lookup(KEY_OUTPUT))?.unwrap_or_default(),
            model: parse(KEY_MODEL, lookup(KEY_MODEL))?.unwrap_or_default(),
        })
    }

    /// True when the model carries no `vision.*` key at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl LayoutName {
    /// The name as the contract writes it.
    pub fn name(self) -> &'static str {
        match self {
            LayoutName::Nchw => "NCHW",
            LayoutName::Nhwc => "NHWC",
        }
    }
}

impl ColorName {
    /// The name as the contract writes it.
    pub fn name(self) -> &'static str {
        match self {
            ColorName::Rgb => "RGB",
            ColorName::Bgr => "BGR",
            ColorName::Gray => "GRAY",
        }
    }
}

impl From<LayoutName> for Layout {
    fn from(v: LayoutName) -> Self {
        match v {
            LayoutName::Nchw => Layout::Nchw,
            LayoutName::Nhwc => Layout::Nhwc,
        }
    }
}

impl From<ColorName> for ChannelOrder {
    fn from(v: ColorName) -> Self {
        match v {
            ColorName::Rgb => ChannelOrder::Rgb,
            ColorName::Bgr => ChannelOrder::Bgr,
            ColorName::Gray => ChannelOrder::Gray,
        }
    }
}

impl From<ResizeName> for ResizeMode {
    fn from(v: ResizeName) -> Self {
        match v {
            ResizeName::Stretch => ResizeMode::Stretch,
            ResizeName::Letterbox => ResizeMode::Letterbox,
            ResizeName::CenterCrop => ResizeMode::CenterCrop,
        }
    }
}

/// Reads a labels file: one label per line, in class order. Trailing blank lines are ignored;
/// a blank line in the middle is an error (it would shift every class after it).
pub fn read_labels_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse_labels(&text)
}

/// The labels of a labels file's text (see [`read_labels_file`]).
pub fn parse_labels(text: &str) -> Result<Vec<String>, String> {
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    if labels.is_empty() {
        return Err("it holds no labels".into());
    }
    if let Some(i) = labels.iter().position(|l| l.is_empty()) {
        return Err(format!("line {} is empty", i + 1));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn parses_full_contract() {
        let c = Contract::from_lookup(lookup(&[
            (KEY_SCHEMA, "\"1\""),
            (KEY_LABELS, r#"["cat","dog"]"#),
            (
                KEY_PREPROCESS,
                r#"{"size":[224,224],"layout":"NHWC","color":"BGR","resize":"center-crop","scale":0.5,"mean":[1,2,3],"std":[4,5,6]}"#,
            ),
            (KEY_OUTPUT, r#"{"name":"probs","scores":"probabilities"}"#),
            (KEY_MODEL, r#"{"name":"pets","version":"3","task":"classification"}"#),
        ]))
        .expect("valid contract");
        assert_eq!(c.schema, Some(1));
        assert_eq!(
            c.labels.as_deref(),
            Some(&["cat".to_string(), "dog".to_string()][..])
        );
        assert_eq!(c.preprocess.size, Some([224, 224]));
        assert_eq!(c.preprocess.layout, Some(LayoutName::Nhwc));
        assert_eq!(c.preprocess.color, Some(ColorName::Bgr));
        assert_eq!(c.preprocess.resize, Some(ResizeName::CenterCrop));
        assert_eq!(c.preprocess.mean, Some([1.0, 2.0, 3.0]));
        assert_eq!(c.output.scores, Some(ScoreKind::Probabilities));
        assert_eq!(c.model.name.as_deref(), Some("pets"));
        assert_eq!(
            c.model.extra.get("task"),
            Some(&serde_json::json!("classification"))
        );
    }

    #[test]
    fn missing_keys_are_empty() {
        let c = Contract::from_lookup(|_| None).expect("empty is fine");
        assert!(c.is_empty());
    }

    #[test]
    fn malformed_key_is_named() {
        let e = Contract::from_lookup(lookup(&[(KEY_LABELS, "[\"a\", 3")])).unwrap_err();
        assert_eq!(e.key, KEY_LABELS);
        let e =
            Contract::from_lookup(lookup(&[(KEY_PREPROCESS, r#"{"resize":"zoom"}"#)])).unwrap_err();
        assert!(e.to_string().contains("vision.preprocess"), "{e}");
    }

    #[test]
    fn written_values_read_back_and_omit_what_is_absent() -> Result<(), serde_json::Error> {
        let pre = PreprocessContract {
            size: Some([28, 28]),
            color: Some(ColorName::Gray),
            mean: Some([0.5; 3]),
            ..Default::default()
        };
        let output = OutputContract {
            name: Some("logits".into()),
            scores: None,
        };
        let (pre_json, out_json) = (
            serde_json::to_string(&pre)?,
            serde_json::to_string(&output)?,
        );
        assert_eq!(
            pre_json,
            r#"{"size":[28,28],"color":"GRAY","mean":[0.5,0.5,0.5]}"#
        );
        assert_eq!(out_json, r#"{"name":"logits"}"#);
        let schema = schema_value();
        let c = Contract::from_lookup(lookup(&[
            (KEY_SCHEMA, schema.as_str()),
            (KEY_PREPROCESS, pre_json.as_str()),
            (KEY_OUTPUT, out_json.as_str()),
        ]))
        .expect("what the contract writes, it reads");
        assert_eq!(c.schema, Some(SCHEMA_VERSION));
        assert_eq!((c.preprocess, c.output), (pre, output));
        Ok(())
    }

    #[test]
    fn unusable_preprocessing_values_are_named() {
        for (json, needle) in [
            (r#"{"size":[0,224]}"#, "size [0, 224] has a side of 0"),
            (r#"{"scale":0}"#, "scale 0"),
            // serde_json refuses what float32 cannot hold, so no infinity gets through.
            (r#"{"scale":1e39}"#, "number out of range"),
            (r#"{"mean":[0,-1e40,0]}"#, "number out of range"),
            (r#"{"std":[1,0,1]}"#, "std [1.0, 0.0, 1.0]"),
            (r#"{"mean":[NaN,0,0]}"#, "expected value"),
            (r#"{"mean":[0.5,0.5]}"#, "invalid length 2"),
        ] {
            let e = Contract::from_lookup(lookup(&[(KEY_PREPROCESS, json)]))
                .expect_err("unusable values");
            assert_eq!(e.key, KEY_PREPROCESS, "{json}");
            assert!(e.reason.contains(needle), "{json}: {e}");
        }
        let fine = r#"{"size":[1,1],"scale":-1,"mean":[0,0,0],"std":[-1,1,1e-9]}"#;
        Contract::from_lookup(lookup(&[(KEY_PREPROCESS, fine)])).expect("usable values");
    }

    #[test]
    fn newer_schema_is_rejected() {
        let e = Contract::from_lookup(lookup(&[(KEY_SCHEMA, "7")])).unwrap_err();
        assert!(e.reason.contains("version 7"), "{e}");
    }
}
