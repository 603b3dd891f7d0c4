//! The ONNX graph writer: the trainer's own architectures as ONNX, with the `vision.*`
//! metadata of [`super::metadata`].
//!
//! The graph is written node by node (opset 17, IR version 8): BatchNorm is already folded
//! into the convolutions, ReLU6 is `Clip(0, 6)`, the batch dimension is symbolic (`N`).

use std::path::Path;

use gstvision::contract::ColorName;
use serde::{Deserialize, Serialize};

use super::metadata::{INPUT_NAME, Metadata, OUTPUT_NAME, metadata_props};
use super::network::{Conv, EfficientNetLite};
use crate::onnx::{
    AttributeProto, Dim, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;

/// How the stride-2 convolutions pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
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

/// Why an export (or its check in ONNX Runtime) failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the model has {classes} classes but {labels} labels were given")]
    LabelCount { classes: usize, labels: usize },
    #[error("the model takes {channels} input channels; only RGB (3) is supported")]
    Channels { channels: usize },
    #[error(
        "the model takes {channels} input channels but vision.preprocess says color {color}; \
         use GRAY for 1 channel, RGB or BGR for 3"
    )]
    Color { channels: usize, color: String },
    #[error("vision.preprocess size {size:?} is not a valid input for this model: {reason}")]
    Size { size: [usize; 2], reason: String },
    #[error("cannot export the model: {0}")]
    Structure(String),
    #[error("cannot read the model's weights: {0}")]
    Weights(String),
    #[error(transparent)]
    Verify(#[from] super::runtime::VerifyError),
    #[error(
        "the ONNX model {path} does not match the trainer (so it was removed): {reason}; \
         max |logit difference| {max_abs_diff:.3e} (tolerance {tolerance:.1e}), top-1 agreement \
         {agreement:.1}% over {images} images"
    )]
    Parity {
        path: String,
        reason: String,
        max_abs_diff: f32,
        tolerance: f32,
        agreement: f64,
        images: usize,
    },
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
    let side = [size, size];

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
            x = g.add(&format!("{name}.add"), &input, &x);
        }
    }
    x = g.conv("head", &x, &net.head, &mut hw);
    x = g.relu6("head", &x);
    x = g.global_pool(&x);
    g.fc(
        "fc",
        &x,
        &net.fc_weight.shape,
        &net.fc_weight.data,
        &net.fc_bias,
    );
    g.finish(meta, 3, side, net.num_classes())
}

/// Checks that `channels` input channels fit `vision.preprocess.color` (GRAY = 1, RGB/BGR = 3).
pub(crate) fn check_color(channels: usize, meta: &Metadata) -> Result<(), ExportError> {
    let fits = match meta.preprocess.color {
        ColorName::Gray => channels == 1,
        ColorName::Rgb | ColorName::Bgr => channels == 3,
    };
    if fits {
        Ok(())
    } else {
        Err(ExportError::Color {
            channels,
            color: meta.preprocess.color.name().to_owned(),
        })
    }
}

/// The whole model around a graph: opset, IR version, producer and the metadata contract.
fn model_proto(graph: GraphProto, meta: &Metadata) -> Result<ModelProto, ExportError> {
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
pub(crate) struct Graph {
    padding: Padding,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    clip_bounds: bool,
}

impl Graph {
    /// `padding` is how stride-2 convolutions added with [`Graph::conv`] pad.
    pub(crate) fn new(padding: Padding) -> Self {
        Graph {
            padding,
            nodes: Vec::new(),
            initializers: Vec::new(),
            clip_bounds: false,
        }
    }

    pub(crate) fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        self.initializers.push(TensorProto::float(name, dims, data));
        name.to_owned()
    }

    pub(crate) fn node(
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
    pub(crate) fn conv(&mut self, name: &str, input: &str, conv: &Conv, hw: &mut usize) -> String {
        let k = conv.kernel();
        let [begin, end] = if conv.stride == 1 {
            // Stride 1: TF "SAME" and symmetric agree for odd kernels.
            [k / 2, k / 2]
        } else {
            self.padding.pads(*hw, k, conv.stride)
        };
        let out = self.conv_padded(name, input, conv, [begin, begin, end, end]);
        *hw = if conv.stride == 1 {
            *hw
        } else {
            self.padding.out_size(*hw, k, conv.stride)
        };
        out
    }

    /// A convolution with explicit `[top, left, bottom, right]` padding (ONNX's `pads` order).
    pub(crate) fn conv_padded(
        &mut self,
        name: &str,
        input: &str,
        conv: &Conv,
        pads: [usize; 4],
    ) -> String {
        let k = conv.kernel();
        let w = self.initializer(
            &format!("{name}.weight"),
            &conv.weight.shape,
            &conv.weight.data,
        );
        let bias = self.initializer(&format!("{name}.bias"), &[conv.bias.len()], &conv.bias);
        let attrs = vec![
            AttributeProto::ints("kernel_shape", &[k as i64, k as i64]),
            AttributeProto::ints("strides", &[conv.stride as i64, conv.stride as i64]),
            AttributeProto::ints("pads", &pads.map(|p| p as i64)),
            AttributeProto::ints("dilations", &[1, 1]),
            AttributeProto::int("group", conv.groups as i64),
        ];
        self.node("Conv", name, &[input, &w, &bias], attrs)
    }

    pub(crate) fn relu(&mut self, name: &str, input: &str) -> String {
        self.node("Relu", name, &[input], vec![])
    }

    pub(crate) fn add(&mut self, name: &str, a: &str, b: &str) -> String {
        self.node("Add", name, &[a, b], vec![])
    }

    /// Global average pooling (node `pool`), flattened to N×C (node `flatten`).
    pub(crate) fn global_pool(&mut self, input: &str) -> String {
        let pooled = self.node("GlobalAveragePool", "pool", &[input], vec![]);
        self.node(
            "Flatten",
            "flatten",
            &[&pooled],
            vec![AttributeProto::int("axis", 1)],
        )
    }

    /// The classifier `logits = x · weightᵀ + bias` (`weight` is `[classes, features]`),
    /// writing the graph's output.
    pub(crate) fn fc(
        &mut self,
        name: &str,
        input: &str,
        dims: &[usize],
        weight: &[f32],
        bias: &[f32],
    ) {
        let w = self.initializer(&format!("{name}.weight"), dims, weight);
        let b = self.initializer(&format!("{name}.bias"), &[bias.len()], bias);
        self.nodes.push(NodeProto {
            input: vec![input.to_owned(), w, b],
            output: vec![OUTPUT_NAME.to_owned()],
            name: Some(name.into()),
            op_type: Some("Gemm".into()),
            attribute: vec![AttributeProto::int("transB", 1)],
            ..Default::default()
        });
    }

    /// The model: input `input` `[N, channels, H, W]` (N symbolic), output `logits`
    /// `[N, classes]`, and the metadata contract.
    pub(crate) fn finish(
        self,
        meta: &Metadata,
        channels: usize,
        [height, width]: [usize; 2],
        classes: usize,
    ) -> Result<ModelProto, ExportError> {
        let graph = GraphProto {
            node: self.nodes,
            name: Some(meta.model.architecture.clone()),
            initializer: self.initializers,
            input: vec![ValueInfoProto::float_tensor(
                INPUT_NAME,
                &[
                    Dim::Symbolic("N"),
                    Dim::Fixed(channels as i64),
                    Dim::Fixed(height as i64),
                    Dim::Fixed(width as i64),
                ],
            )],
            output: vec![ValueInfoProto::float_tensor(
                OUTPUT_NAME,
                &[Dim::Symbolic("N"), Dim::Fixed(classes as i64)],
            )],
            ..Default::default()
        };
        model_proto(graph, meta)
    }

    /// ReLU6 as `Clip(x, 0, 6)` (opset ≥ 11 takes the bounds as inputs).
    pub(crate) fn relu6(&mut self, name: &str, input: &str) -> String {
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
}
