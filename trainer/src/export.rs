//! ONNX export of the trainer's own architectures, with the `vision.*` metadata contract of
//! models/README.md.
//!
//! The graph is written node by node (opset 17, IR version 8): BatchNorm is already folded
//! into the convolutions, ReLU6 is `Clip(0, 6)`, the batch dimension is symbolic (`N`).

use std::path::Path;

use serde::Serialize;

use crate::efficientnet::{Conv, EfficientNetLite};
use crate::onnx::{
    AttributeProto, Dim, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, ValueInfoProto,
};

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;
pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "logits";
/// Contract version written in `vision.schema`.
pub const SCHEMA: &str = "1";

/// How the stride-2 convolutions pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Padding {
    /// TensorFlow's "SAME": output = ⌈input / stride⌉, and the odd extra row/column of
    /// padding goes at the bottom/right. The weights were trained with it.
    TfSame,
    /// `k / 2` on every side (PyTorch style); slightly off for TF-trained weights.
    Symmetric,
}

impl Padding {
    /// `[begin, end]` padding of one spatial axis of `size` for a `kernel`/`stride` conv.
    pub fn pads(self, size: usize, kernel: usize, stride: usize) -> [usize; 2] {
        match self {
            Padding::Symmetric => [kernel / 2, kernel / 2],
            Padding::TfSame => {
                let out = size.div_ceil(stride);
                let total = ((out - 1) * stride + kernel).saturating_sub(size);
                [total / 2, total - total / 2]
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Padding::TfSame => "tf-same",
            Padding::Symmetric => "symmetric",
        }
    }

    /// The output size of one spatial axis.
    fn out_size(self, size: usize, kernel: usize, stride: usize) -> usize {
        let [b, e] = self.pads(size, kernel, stride);
        (size + b + e - kernel) / stride + 1
    }
}

/// How a frame is fitted to the input (`vision.preprocess.resize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    Stretch,
    CenterCrop,
    Letterbox,
}

/// `vision.preprocess`: how frames become the input tensor; each value is
/// `(pixel × scale − mean[c]) / std[c]` on 0..255 pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preprocess {
    /// `[height, width]`.
    pub size: [usize; 2],
    pub layout: &'static str,
    pub color: &'static str,
    pub resize: Resize,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// `vision.output`.
#[derive(Debug, Clone, Serialize)]
pub struct OutputSpec {
    pub name: &'static str,
    pub scores: &'static str,
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

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the model has {classes} classes but {labels} labels were given")]
    LabelCount { classes: usize, labels: usize },
    #[error("the model takes {channels} input channels; only RGB (3) is supported")]
    Channels { channels: usize },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode metadata as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Builds the ONNX model of `net` for square `size`×`size` RGB inputs.
pub fn efficientnet_lite(
    net: &EfficientNetLite,
    size: usize,
    padding: Padding,
    meta: &Metadata,
) -> Result<ModelProto, ExportError> {
    if meta.labels.len() != net.num_classes() {
        return Err(ExportError::LabelCount {
            classes: net.num_classes(),
            labels: meta.labels.len(),
        });
    }
    if net.input_channels() != 3 {
        return Err(ExportError::Channels {
            channels: net.input_channels(),
        });
    }
    let mut g = Graph::new(padding);
    let mut hw = size;
    let mut x = INPUT_NAME.to_owned();

    x = g.conv("stem", &x, &net.stem, &mut hw);
    x = g.relu6("stem", &x);
    for (i, block) in net.blocks.iter().enumerate() {
        let name = format!("blocks.{i}");
        let input = x.clone();
        if let Some(expand) = &block.expand {
            x = g.conv(&format!("{name}.expand"), &x, expand, &mut hw);
            x = g.relu6(&format!("{name}.expand"), &x);
        }
        x = g.conv(&format!("{name}.depthwise"), &x, &block.depthwise, &mut hw);
        x = g.relu6(&format!("{name}.depthwise"), &x);
        x = g.conv(&format!("{name}.project"), &x, &block.project, &mut hw);
        if block.residual {
            x = g.node("Add", &format!("{name}.add"), &[&input, &x], vec![]);
        }
    }
    x = g.conv("head", &x, &net.head, &mut hw);
    x = g.relu6("head", &x);
    x = g.node("GlobalAveragePool", "pool", &[&x], vec![]);
    x = g.node(
        "Flatten",
        "flatten",
        &[&x],
        vec![AttributeProto::int("axis", 1)],
    );
    let w = g.initializer("fc.weight", &net.fc_weight.shape, &net.fc_weight.data);
    let b = g.initializer("fc.bias", &[net.fc_bias.len()], &net.fc_bias);
    g.nodes.push(NodeProto {
        input: vec![x, w, b],
        output: vec![OUTPUT_NAME.to_owned()],
        name: Some("fc".into()),
        op_type: Some("Gemm".into()),
        attribute: vec![AttributeProto::int("transB", 1)],
        ..Default::default()
    });

    let classes = net.num_classes() as i64;
    let side = size as i64;
    let graph = GraphProto {
        node: g.nodes,
        name: Some(meta.model.architecture.clone()),
        initializer: g.initializers,
        input: vec![ValueInfoProto::float_tensor(
            INPUT_NAME,
            &[
                Dim::Symbolic("N"),
                Dim::Fixed(3),
                Dim::Fixed(side),
                Dim::Fixed(side),
            ],
        )],
        output: vec![ValueInfoProto::float_tensor(
            OUTPUT_NAME,
            &[Dim::Symbolic("N"), Dim::Fixed(classes)],
        )],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("vision-trainer".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        metadata_props: metadata_props(meta)?,
        ..Default::default()
    })
}

/// The `vision.*` entries, each a JSON document.
pub fn metadata_props(meta: &Metadata) -> Result<Vec<StringStringEntryProto>, ExportError> {
    let entries = [
        ("vision.schema", serde_json::to_string(SCHEMA)?),
        ("vision.labels", serde_json::to_string(&meta.labels)?),
        (
            "vision.preprocess",
            serde_json::to_string(&meta.preprocess)?,
        ),
        (
            "vision.output",
            serde_json::to_string(&OutputSpec {
                name: OUTPUT_NAME,
                scores: "logits",
            })?,
        ),
        ("vision.model", serde_json::to_string(&meta.model)?),
    ];
    Ok(entries
        .into_iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.to_owned()),
            value: Some(v),
        })
        .collect())
}

/// Writes a model to `path`, creating its folder.
pub fn write(model: &ModelProto, path: &Path) -> Result<usize, ExportError> {
    let err = |source| ExportError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let bytes = model.to_bytes();
    std::fs::write(path, &bytes).map_err(err)?;
    Ok(bytes.len())
}

/// Collects nodes and initializers; names values after the layer that makes them.
struct Graph {
    padding: Padding,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    clip_bounds: bool,
}

impl Graph {
    fn new(padding: Padding) -> Self {
        Graph {
            padding,
            nodes: Vec::new(),
            initializers: Vec::new(),
            clip_bounds: false,
        }
    }

    fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        self.initializers.push(TensorProto::float(name, dims, data));
        name.to_owned()
    }

    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> String {
        let out = format!("{name}.{}", op.to_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![out.clone()],
            name: Some(format!("{name}.{op}")),
            op_type: Some(op.to_owned()),
            attribute,
            ..Default::default()
        });
        out
    }

    /// A convolution; `hw` is the (square) spatial size going in and is updated.
    fn conv(&mut self, name: &str, input: &str, conv: &Conv, hw: &mut usize) -> String {
        let k = conv.kernel();
        let [begin, end] = if conv.stride == 1 {
            // Stride 1: TF "SAME" and symmetric agree for odd kernels.
            [k / 2, k / 2]
        } else {
            self.padding.pads(*hw, k, conv.stride)
        };
        let (b, e) = (begin as i64, end as i64);
        let w = self.initializer(
            &format!("{name}.weight"),
            &conv.weight.shape,
            &conv.weight.data,
        );
        let bias = self.initializer(&format!("{name}.bias"), &[conv.bias.len()], &conv.bias);
        let attrs = vec![
            AttributeProto::ints("kernel_shape", &[k as i64, k as i64]),
            AttributeProto::ints("strides", &[conv.stride as i64, conv.stride as i64]),
            AttributeProto::ints("pads", &[b, b, e, e]),
            AttributeProto::ints("dilations", &[1, 1]),
            AttributeProto::int("group", conv.groups as i64),
        ];
        *hw = if conv.stride == 1 {
            *hw
        } else {
            self.padding.out_size(*hw, k, conv.stride)
        };
        self.node("Conv", name, &[input, &w, &bias], attrs)
    }

    /// ReLU6 as `Clip(x, 0, 6)` (opset ≥ 11 takes the bounds as inputs).
    fn relu6(&mut self, name: &str, input: &str) -> String {
        if !self.clip_bounds {
            self.initializer("relu6.min", &[], &[0.0]);
            self.initializer("relu6.max", &[], &[6.0]);
            self.clip_bounds = true;
        }
        self.node("Clip", name, &[input, "relu6.min", "relu6.max"], vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_pads_put_the_extra_row_at_the_end() {
        let p = Padding::TfSame;
        assert_eq!(p.pads(224, 3, 2), [0, 1]);
        assert_eq!(p.pads(112, 3, 2), [0, 1]);
        assert_eq!(p.pads(56, 5, 2), [1, 2]);
        assert_eq!(p.pads(28, 3, 2), [0, 1]);
        assert_eq!(p.pads(14, 5, 2), [1, 2]);
        assert_eq!(p.pads(15, 3, 2), [1, 1]);
        assert_eq!(p.out_size(224, 3, 2), 112);
        assert_eq!(p.out_size(14, 5, 2), 7);
        assert_eq!(Padding::Symmetric.out_size(224, 3, 2), 112);
        assert_eq!(Padding::Symmetric.out_size(14, 5, 2), 7);
    }

    #[test]
    fn preprocess_json_uses_the_contract_names() -> Result<(), serde_json::Error> {
        let p = Preprocess {
            size: [224, 224],
            layout: "NCHW",
            color: "RGB",
            resize: Resize::CenterCrop,
            scale: 1.0,
            mean: [127.0; 3],
            std: [128.0; 3],
        };
        assert_eq!(
            serde_json::to_string(&p)?,
            r#"{"size":[224,224],"layout":"NCHW","color":"RGB","resize":"center-crop","scale":1.0,"mean":[127.0,127.0,127.0],"std":[128.0,128.0,128.0]}"#
        );
        Ok(())
    }
}
