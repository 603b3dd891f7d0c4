//! ONNX export of the trained burn models, and the check that the written file computes what
//! the trainer computes.
//!
//! The graphs are written by the project's own emitter (`crate::onnx::graph`: opset 17, input
//! `input` `[N, C, H, W]` with a symbolic batch, output `logits` `[N, classes]`, the
//! `vision.*` metadata contract). BatchNorm is folded into the preceding convolution
//! (`w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`, with the running statistics), dropout is
//! left out (it is the identity at inference). EfficientNet goes through the very function
//! `import` uses, so the two exports of the same weights are the same graph.
//!
//! Every export must then pass [`check_against_ort`]: the file is run in ONNX Runtime on
//! real images and compared with the burn forward pass; a file that fails is removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;

use super::Classifier;
use super::cnn::{ConvBn, SmallCnn};
use super::efficientnet::EffnetClassifier;
use crate::batch_norm::{self, BatchNormParams};
use crate::onnx::ModelProto;
use crate::onnx::graph::{self, ExportError, Graph, Padding};
use crate::onnx::metadata::{self, Metadata};
use crate::onnx::network::{self, Block, Conv, EfficientNetLite};
use crate::onnx::runtime::{self, LogitsSession};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub path: PathBuf,
    pub bytes: usize,
    /// Parameters in the graph (after folding).
    pub parameters: usize,
    pub nodes: usize,
    pub elapsed: Duration,
}

/// How the ONNX file compares with the trainer's forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityReport {
    pub images: usize,
    /// Largest |ONNX Runtime logit − burn logit| over all images and classes.
    pub max_abs_diff: f32,
    pub mean_abs_diff: f32,
    /// Percentage of images whose top-1 class is the same in both.
    pub top1_agreement: f64,
    pub tolerance: f32,
}

/// The ONNX graph of a [`SmallCnn`] for the input `meta.preprocess` describes (its `size`;
/// `color` GRAY for one channel, RGB/BGR for three).
pub fn small_cnn_onnx(model: &SmallCnn, meta: &Metadata) -> Result<ModelProto, ExportError> {
    // `valid()` folds the BatchNorm running statistics still pending from training-mode
    // passes into their values (a plain read can be one update behind).
    let model = &model.valid();
    let [in_channels, classes] = [
        model.stem.conv.weight.dims()[1],
        model.head.weight.dims()[1],
    ];
    graph::check_color(in_channels, meta)?;
    check_labels(classes, meta)?;
    let mut size = meta.preprocess.size;
    if size.contains(&0) {
        return Err(size_err(size, "a side is 0"));
    }
    // Stride-2 convs pad as the modules say; the padding mode only matters for `Same`.
    let mut g = Graph::new(Padding::TfSame);

    let stem = conv_bn(&model.stem)?;
    let mut x = conv(
        &mut g,
        "stem",
        metadata::INPUT_NAME,
        &model.stem.conv,
        &stem,
        &mut size,
    )?;
    x = g.relu("stem", &x);
    for (i, block) in model.blocks.iter().enumerate() {
        let name = format!("blocks.{i}");
        let input = x.clone();
        let mut shape = size;
        let c1 = conv_bn(&block.conv1)?;
        x = conv(
            &mut g,
            &format!("{name}.conv1"),
            &x,
            &block.conv1.conv,
            &c1,
            &mut shape,
        )?;
        x = g.relu(&format!("{name}.conv1"), &x);
        let c2 = conv_bn(&block.conv2)?;
        x = conv(
            &mut g,
            &format!("{name}.conv2"),
            &x,
            &block.conv2.conv,
            &c2,
            &mut shape,
        )?;
        let skip = match &block.shortcut {
            Some(shortcut) => {
                let s = conv_bn(shortcut)?;
                let mut skip_shape = size;
                let out = conv(
                    &mut g,
                    &format!("{name}.shortcut"),
                    &input,
                    &shortcut.conv,
                    &s,
                    &mut skip_shape,
                )?;
                if skip_shape != shape {
                    return Err(ExportError::Structure(format!(
                        "block {i}: the shortcut gives {skip_shape:?}, the convolutions {shape:?}"
                    )));
                }
                out
            }
            None => input,
        };
        x = g.add(&format!("{name}.add"), &x, &skip);
        x = g.relu(&format!("{name}.add"), &x);
        size = shape;
    }
    x = g.global_pool(&x);
    let (weight, bias) = linear_rows(&model.head)?;
    g.fc("fc", &x, &[classes, weight.len() / classes], &weight, &bias);
    g.finish(meta, in_channels, meta.preprocess.size, classes)
}

/// The ONNX graph of an [`EffnetClassifier`] (RGB, square `meta.preprocess.size`), written by
/// the same code as `import`'s.
pub fn effnet_onnx(model: &EffnetClassifier, meta: &Metadata) -> Result<ModelProto, ExportError> {
    let [h, w] = meta.preprocess.size;
    if h != w || h == 0 {
        return Err(size_err(
            meta.preprocess.size,
            "EfficientNet is exported for a square input",
        ));
    }
    check_labels(model.classes(), meta)?;
    graph::check_color(3, meta)?;
    let net = lite_of(model)?;
    graph::efficientnet_lite(&net, h, model.padding(), meta)
}

/// Writes the ONNX model of `model` to `path` (see [`small_cnn_onnx`]). Check it with
/// [`check_against_ort`] before using it.
pub fn export_small_cnn(
    model: &SmallCnn,
    meta: &Metadata,
    path: &Path,
) -> Result<ExportSummary, ExportError> {
    let started = Instant::now();
    let proto = small_cnn_onnx(model, meta)?;
    write(&proto, path, started)
}

/// Writes the ONNX model of `model` to `path` (see [`effnet_onnx`]). Check it with
/// [`check_against_ort`] before using it.
pub fn export_effnet(
    model: &EffnetClassifier,
    meta: &Metadata,
    path: &Path,
) -> Result<ExportSummary, ExportError> {
    let started = Instant::now();
    let proto = effnet_onnx(model, meta)?;
    write(&proto, path, started)
}

/// Runs the ONNX model at `onnx_path` in ONNX Runtime (`ort_library`) and `model` (in
/// validation mode: no dropout, BatchNorm on running statistics) on the same `images`
/// (N×C×H×W, normalised as the model's `vision.preprocess` says; use real test images), and
/// compares the logits. It fails if any |difference| exceeds `tolerance` or a top-1 class
/// differs, and then removes the file: an export that has not passed its check is not kept.
pub fn check_against_ort<M: Classifier + Module>(
    model: &M,
    onnx_path: &Path,
    images: Tensor<4>,
    tolerance: f32,
    ort_library: &Path,
) -> Result<ParityReport, ExportError> {
    let result = parity(model, onnx_path, images, tolerance, ort_library);
    if result.is_err() {
        let _ = std::fs::remove_file(onnx_path);
    }
    result
}

/// Images per forward pass in the check (bounds memory at 224×224).
const CHECK_BATCH: usize = 16;

fn parity<M: Classifier + Module>(
    model: &M,
    onnx_path: &Path,
    images: Tensor<4>,
    tolerance: f32,
    ort_library: &Path,
) -> Result<ParityReport, ExportError> {
    let shape = images.dims();
    let n = shape[0];
    let fail = |reason: String, max_abs_diff: f32, agreement: f64| ExportError::Parity {
        path: onnx_path.display().to_string(),
        reason,
        max_abs_diff,
        tolerance,
        agreement,
        images: n,
    };
    if n == 0 {
        return Err(fail("no images to check with".into(), f32::NAN, 0.0));
    }
    let bytes = std::fs::read(onnx_path).map_err(|source| ExportError::Write {
        path: onnx_path.display().to_string(),
        source,
    })?;
    let model = model.valid();
    // Plain values, so that images on an autodiff device work as well.
    let input = floats(images.into_data())?;
    let device = Device::flex();
    let per_image = input.len() / n;

    let mut session: Option<LogitsSession> = None;
    let (mut max_abs, mut sum_abs, mut count, mut agree) = (0f32, 0f64, 0usize, 0usize);
    let mut nan = false;
    for chunk in input.chunks(CHECK_BATCH * per_image) {
        let len = chunk.len() / per_image;
        let dims = [len, shape[1], shape[2], shape[3]];
        let batch = Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), dims), &device);
        let ours = floats(model.logits(batch).into_data())?;
        let classes = ours.len() / len;
        if classes == 0 {
            return Err(fail("the model gives no scores".into(), f32::NAN, 0.0));
        }
        let session = match &mut session {
            Some(s) => s,
            None => {
                let env = runtime::load_runtime(ort_library)?;
                session.insert(LogitsSession::new(env, &bytes, classes)?)
            }
        };
        let theirs = session.run(chunk, dims)?;
        for (a, b) in ours.chunks_exact(classes).zip(theirs.chunks_exact(classes)) {
            for (x, y) in a.iter().zip(b) {
                let d = (x - y).abs();
                // NaN is a failure, not a small difference.
                nan |= d.is_nan();
                max_abs = max_abs.max(d);
                sum_abs += f64::from(d);
                count += 1;
            }
            agree += usize::from(argmax(a) == argmax(b));
        }
    }
    if nan {
        max_abs = f32::NAN;
    }
    let report = ParityReport {
        images: n,
        max_abs_diff: max_abs,
        mean_abs_diff: (sum_abs / count.max(1) as f64) as f32,
        top1_agreement: 100.0 * agree as f64 / n as f64,
        tolerance,
    };
    if max_abs.is_nan() || max_abs > tolerance {
        return Err(fail(
            "the logits differ by more than the tolerance".into(),
            max_abs,
            report.top1_agreement,
        ));
    }
    if agree != n {
        return Err(fail(
            format!("{} of {n} images get another top-1 class", n - agree),
            max_abs,
            report.top1_agreement,
        ));
    }
    Ok(report)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 { (i, x) } else { best }
        })
        .0
}

fn floats(data: TensorData) -> Result<Vec<f32>, ExportError> {
    data.try_into_vec_as::<f32>()
        .map_err(|e| ExportError::Weights(format!("{e:?}")))
}

fn size_err(size: [usize; 2], reason: &str) -> ExportError {
    ExportError::Size {
        size,
        reason: reason.to_owned(),
    }
}

fn check_labels(classes: usize, meta: &Metadata) -> Result<(), ExportError> {
    if meta.labels.len() == classes {
        Ok(())
    } else {
        Err(ExportError::LabelCount {
            classes,
            labels: meta.labels.len(),
        })
    }
}

fn write(proto: &ModelProto, path: &Path, started: Instant) -> Result<ExportSummary, ExportError> {
    let bytes = graph::write(proto, path)?;
    let graph = proto.graph.as_ref();
    Ok(ExportSummary {
        path: path.to_path_buf(),
        bytes,
        parameters: graph.map_or(0, |g| {
            g.initializer
                .iter()
                .map(|t| t.dims.iter().product::<i64>() as usize)
                .sum()
        }),
        nodes: graph.map_or(0, |g| g.node.len()),
        elapsed: started.elapsed(),
    })
}

/// Adds the convolution `folded` (read from `module`, whose padding it follows) and updates
/// the spatial `size`.
fn conv(
    g: &mut Graph,
    name: &str,
    input: &str,
    module: &Conv2d,
    folded: &Conv,
    size: &mut [usize; 2],
) -> Result<String, ExportError> {
    let k = folded.kernel();
    let s = folded.stride;
    let pads @ [top, left, bottom, right] = match module.padding {
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Same => {
            let [t, b] = Padding::TfSame.pads(size[0], k, s);
            let [l, r] = Padding::TfSame.pads(size[1], k, s);
            [t, l, b, r]
        }
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
    };
    let out = |len: usize, begin: usize, end: usize| {
        (len + begin + end)
            .checked_sub(k)
            .map(|v| v / s + 1)
            .ok_or_else(|| {
                ExportError::Structure(format!(
                    "{name}: a {k}x{k} kernel does not fit the {}x{} input",
                    size[0], size[1]
                ))
            })
    };
    *size = [out(size[0], top, bottom)?, out(size[1], left, right)?];
    Ok(g.conv_padded(name, input, folded, pads))
}

fn tensor_of(module: &Conv2d) -> Result<network::Tensor, ExportError> {
    let weight = module.weight.val();
    Ok(network::Tensor {
        shape: weight.dims().to_vec(),
        data: floats(weight.into_data())?,
    })
}

/// A burn convolution as the emitter's plain `Conv` (a missing bias is zeros).
fn plain_conv(module: &Conv2d) -> Result<Conv, ExportError> {
    let [sh, sw] = module.stride;
    let [kh, kw] = module.kernel_size;
    if sh != sw || kh != kw || module.dilation != [1, 1] {
        return Err(ExportError::Structure(format!(
            "only square kernels and strides without dilation are exported (kernel {:?}, \
             stride {:?}, dilation {:?})",
            module.kernel_size, module.stride, module.dilation
        )));
    }
    let weight = tensor_of(module)?;
    let out = weight.shape[0];
    let bias = match &module.bias {
        Some(b) => floats(b.val().into_data())?,
        None => vec![0.0; out],
    };
    Ok(Conv {
        weight,
        bias,
        stride: sh,
        groups: module.groups,
    })
}

/// Folds `bn` (running statistics) into `conv`: `w' = w·γ/√(σ²+ε)`, `b' = β + (b − μ)·γ/√(σ²+ε)`.
fn fold(mut conv: Conv, bn: &BatchNorm) -> Result<Conv, ExportError> {
    let gamma = floats(bn.gamma.val().into_data())?;
    let beta = floats(bn.beta.val().into_data())?;
    let mean = floats(bn.running_mean.value().into_data())?;
    let var = floats(bn.running_var.value().into_data())?;
    let out = conv.out_channels();
    if [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != out) {
        return Err(ExportError::Structure(format!(
            "a BatchNorm of {} channels follows a convolution of {out}",
            gamma.len()
        )));
    }
    let params = BatchNormParams {
        gamma: &gamma,
        beta: &beta,
        mean: &mean,
        var: &var,
        epsilon: bn.epsilon,
    };
    batch_norm::fold(&mut conv.weight.data, &mut conv.bias, &params)
        .map_err(|e| ExportError::Structure(e.to_string()))?;
    Ok(conv)
}

fn conv_bn(m: &ConvBn) -> Result<Conv, ExportError> {
    fold(plain_conv(&m.conv)?, &m.bn)
}

/// A burn `Linear` (weight `[in, out]`) as `([out, in]` row-major weight, bias).
fn linear_rows(linear: &burn::nn::Linear) -> Result<(Vec<f32>, Vec<f32>), ExportError> {
    let [inputs, outputs] = linear.weight.dims();
    let w = floats(linear.weight.val().into_data())?;
    let mut rows = vec![0.0; w.len()];
    for i in 0..inputs {
        for o in 0..outputs {
            rows[o * inputs + i] = w[i * outputs + o];
        }
    }
    let bias = match &linear.bias {
        Some(b) => floats(b.val().into_data())?,
        None => vec![0.0; outputs],
    };
    Ok((rows, bias))
}

/// The burn EfficientNet as the emitter's plain (already folded) network.
fn lite_of(model: &EffnetClassifier) -> Result<EfficientNetLite, ExportError> {
    let blocks = model
        .blocks
        .iter()
        .map(|b| {
            Ok(Block {
                expand: b.expand.as_ref().map(plain_conv).transpose()?,
                depthwise: plain_conv(&b.depthwise)?,
                project: plain_conv(&b.project)?,
                residual: b.residual,
            })
        })
        .collect::<Result<Vec<_>, ExportError>>()?;
    let (weight, fc_bias) = linear_rows(&model.head)?;
    let classes = fc_bias.len();
    Ok(EfficientNetLite {
        stem: plain_conv(&model.stem)?,
        blocks,
        head: plain_conv(&model.head_conv)?,
        fc_weight: network::Tensor {
            shape: vec![classes, weight.len() / classes.max(1)],
            data: weight,
        },
        fc_bias,
    })
}
