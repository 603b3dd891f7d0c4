//! The trainer's side of the model contract (`gstvision::contract`, models/README.md): the
//! names of the graph's input and output, the fully specified `vision.preprocess` the trainer
//! writes, the `vision.model` description and the `metadata_props` entries, written through
//! the contract's own keys and types.

use gstvision::contract::{
    self, ColorName, LayoutName, OutputContract, PreprocessContract, ResizeName, ScoreKind,
};
use serde::Serialize;

use super::StringStringEntryProto;

pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "logits";

/// How a frame is fitted to the input (`vision.preprocess.resize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    Stretch,
    CenterCrop,
    Letterbox,
}

impl From<Resize> for ResizeName {
    fn from(r: Resize) -> Self {
        match r {
            Resize::Stretch => ResizeName::Stretch,
            Resize::CenterCrop => ResizeName::CenterCrop,
            Resize::Letterbox => ResizeName::Letterbox,
        }
    }
}

impl From<ResizeName> for Resize {
    fn from(r: ResizeName) -> Self {
        match r {
            ResizeName::Stretch => Resize::Stretch,
            ResizeName::CenterCrop => Resize::CenterCrop,
            ResizeName::Letterbox => Resize::Letterbox,
        }
    }
}

/// `vision.preprocess` with every field given, as the trainer writes it: how frames become
/// the input tensor; each value is `(pixel × scale − mean[c]) / std[c]` on 0..255 pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// `[height, width]`.
    pub size: [usize; 2],
    pub layout: LayoutName,
    pub color: ColorName,
    pub resize: Resize,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// The contract's value (`gstvision::contract`), every field present.
    pub fn to_contract(&self) -> PreprocessContract {
        PreprocessContract {
            size: Some(self.size),
            layout: Some(self.layout),
            color: Some(self.color),
            resize: Some(self.resize.into()),
            scale: Some(self.scale),
            mean: Some(self.mean),
            std: Some(self.std),
        }
    }
}

/// `vision.model`: descriptive fields; `extra` holds any further ones (padding, source).
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub task: String,
    pub architecture: String,
    pub training_data: String,
    pub optimisation: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Everything the exported file says about itself.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub labels: Vec<String>,
    pub preprocess: Preprocess,
    pub model: ModelInfo,
}

/// The `vision.*` entries of `gstvision::contract`, each a JSON document, in the contract's
/// key order.
pub fn metadata_props(meta: &Metadata) -> Result<Vec<StringStringEntryProto>, serde_json::Error> {
    let entries = [
        (contract::KEY_SCHEMA, contract::schema_value()),
        (contract::KEY_LABELS, serde_json::to_string(&meta.labels)?),
        (
            contract::KEY_PREPROCESS,
            serde_json::to_string(&meta.preprocess.to_contract())?,
        ),
        (
            contract::KEY_OUTPUT,
            serde_json::to_string(&OutputContract {
                name: Some(OUTPUT_NAME.to_owned()),
                scores: Some(ScoreKind::Logits),
            })?,
        ),
        (contract::KEY_MODEL, serde_json::to_string(&meta.model)?),
    ];
    Ok(entries
        .into_iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.to_owned()),
            value: Some(v),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_json_uses_the_contract_names() -> Result<(), serde_json::Error> {
        let p = Preprocess {
            size: [224, 224],
            layout: LayoutName::Nchw,
            color: ColorName::Rgb,
            resize: Resize::CenterCrop,
            scale: 1.0,
            mean: [127.0; 3],
            std: [128.0; 3],
        };
        assert_eq!(
            serde_json::to_string(&p.to_contract())?,
            r#"{"size":[224,224],"layout":"NCHW","color":"RGB","resize":"center-crop","scale":1.0,"mean":[127.0,127.0,127.0],"std":[128.0,128.0,128.0]}"#
        );
        Ok(())
    }
}
