//! Static int8 in ONNX Runtime's QDQ format.
//!
//! What ORT needs to replace a float node by its int8 kernel (`QLinearConv`, `QGemm`,
//! `QLinearMatMul`, `QLinearAdd`, `QLinearGlobalAveragePool`): every float input arrives
//! through a `DequantizeLinear` and the output leaves through a `QuantizeLinear`. So:
//! - each activation a selected node reads or writes is quantized once, per tensor
//!   (`QuantizeLinear` right after its producer, and a `DequantizeLinear` before each reader:
//!   ORT fuses only DQs with one reader), with the calibrated range and a zero point;
//! - weights are int8 initializers, symmetric (zero point 0), per output channel by default,
//!   read through a `DequantizeLinear` with `axis`;
//! - biases are int32 with scale = input scale × weight scale (zero point 0), so the int32
//!   accumulator adds them directly;
//! - a `Relu` or `Clip(0, ·)` right after a quantized node is removed: quantizing its output
//!   range `[0, max]` saturates exactly as the activation clips (ORT's quantizer does the same);
//! - shape-only nodes (Flatten, Reshape, ...) and MaxPool between quantized tensors reuse
//!   their input's scale, so ORT runs them on int8 without re-quantizing.
//!
//! Graph outputs stay float, so the logits the element reads are not quantized.

use std::collections::{HashMap, HashSet};

use crate::onnx::{AttributeProto, GraphProto, NodeProto, TensorProto};

use super::calibrate::Range;
use super::graph::{
    self, Names, attr_int, consumers, f32_tensor, graph_outputs, initializers, int8_tensor,
    int32_tensor, node, node_name, op, producers, tensor_f32, uint8_tensor,
};
use super::{Activations, QuantizeError};

/// Op types the static quantizer can quantize when asked to.
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "MatMul",
    "Gemm",
    "Add",
    "Mul",
    "Concat",
    "GlobalAveragePool",
    "AveragePool",
];

/// Quantized by default: the compute-heavy ops, plus the residual Add and the pooling before
/// the classifier so that ORT keeps int8 between them.
pub const DEFAULT_OPS: &[&str] = &["Conv", "MatMul", "Gemm", "Add", "GlobalAveragePool"];

/// Ops that only move values: between two quantized tensors they keep the input's scale.
const PASS_THROUGH: &[&str] = &[
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
];

/// How weights and activations are quantized.
#[derive(Debug, Clone)]
pub struct QdqOptions {
    pub op_types: Vec<String>,
    /// Node names left in float.
    pub exclude: Vec<String>,
    pub per_channel: bool,
    /// 7-bit weights, for CPUs without VNNI where the u8×s8 multiply-add can saturate.
    pub reduce_range: bool,
    pub activations: Activations,
}

/// What to quantize in a (BatchNorm-folded) float graph; made before calibration so that
/// calibration knows which tensors to observe.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Indices of the nodes that get int8 inputs/outputs and weights.
    pub nodes: Vec<usize>,
    /// Activation tensors to quantize (names in the float graph), in graph order.
    pub tensors: Vec<String>,
    /// Tensors that take the scale of another (`output → input` of a pass-through node).
    pub shared: HashMap<String, String>,
    /// ReLU/Clip nodes folded into their producer's quantized output.
    pub fused: Vec<usize>,
    /// Nodes of a selected type left in float, and why.
    pub skipped: Vec<(String, String)>,
}

impl Plan {
    /// Tensors whose range calibration must measure.
    pub fn calibrated(&self) -> Vec<String> {
        self.tensors
            .iter()
            .filter(|t| !self.shared.contains_key(*t))
            .cloned()
            .collect()
    }
}

/// Checks the requested op types against what the quantizer supports.
pub fn check_op_types(op_types: &[String]) -> Result<(), QuantizeError> {
    match op_types.iter().find(|o| !SUPPORTED.contains(&o.as_str())) {
        Some(o) => Err(QuantizeError::UnsupportedOp {
            op: o.clone(),
            supported: SUPPORTED.join(", "),
        }),
        None => Ok(()),
    }
}

/// Decides which nodes and tensors to quantize.
pub fn plan(g: &GraphProto, opts: &QdqOptions) -> Result<Plan, QuantizeError> {
    check_op_types(&opts.op_types)?;
    let inits = initializers(g);
    let readers = consumers(g);
    let outputs = graph_outputs(g);
    let excluded: HashSet<&str> = opts.exclude.iter().map(String::as_str).collect();
    let is_init = |name: &str| inits.contains_key(name);

    let mut nodes = Vec::new();
    let mut skipped = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if !opts.op_types.iter().any(|o| o == op(n)) || excluded.contains(node_name(n)) {
            continue;
        }
        match eligible(n, &is_init) {
            Ok(()) => nodes.push(i),
            Err(why) => skipped.push((node_name(n).to_owned(), why)),
        }
    }

    let mut tensors: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    // Graph outputs stay float; initializers are weights, not activations.
    let add = |t: &str, tensors: &mut Vec<String>, seen: &mut HashSet<String>| {
        if !t.is_empty() && !outputs.contains(t) && !is_init(t) && seen.insert(t.to_owned()) {
            tensors.push(t.to_owned());
        }
    };
    let mut fused = Vec::new();
    let selected: HashSet<usize> = nodes.iter().copied().collect();
    for &i in &nodes {
        let n = &g.node[i];
        for input in activation_inputs(n) {
            add(input, &mut tensors, &mut seen);
        }
        let out = &n.output[0];
        let fusable = readers
            .get(out)
            .filter(|r| r.len() == 1 && !outputs.contains(out))
            .map(|r| r[0])
            .filter(|&a| {
                let a_node = &g.node[a];
                !excluded.contains(node_name(a_node))
                    && !outputs.contains(&a_node.output[0])
                    && clips_at_zero(a_node, g)
            });
        match fusable {
            Some(a) => {
                fused.push(a);
                add(&g.node[a].output[0], &mut tensors, &mut seen);
            }
            None => add(out, &mut tensors, &mut seen),
        }
    }
    // Pass-through nodes whose input is quantized and whose output a selected node reads.
    let mut shared = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        if !PASS_THROUGH.contains(&op(n))
            || excluded.contains(node_name(n))
            || selected.contains(&i)
            || n.output.len() != 1
        {
            continue;
        }
        let (input, out) = (&n.input[0], &n.output[0]);
        let read_by_selected = readers
            .get(out)
            .is_some_and(|r| r.iter().any(|c| selected.contains(c)));
        if seen.contains(input) && read_by_selected && !outputs.contains(out) {
            add(out, &mut tensors, &mut seen);
            shared.insert(out.clone(), input.clone());
        }
    }
    Ok(Plan {
        nodes,
        tensors,
        shared,
        fused,
        skipped,
    })
}

/// Why a selected node cannot be quantized (it then stays float).
fn eligible(n: &NodeProto, is_init: &dyn Fn(&str) -> bool) -> Result<(), String> {
    match op(n) {
        "Conv" => {
            if n.input.get(1).is_some_and(|w| is_init(w)) {
                Ok(())
            } else {
                Err("its weight is not an initializer".into())
            }
        }
        "Gemm" => {
            if attr_int(n, "transA", 0) != 0 {
                Err("transA = 1".into())
            } else if graph::attr_float(n, "alpha", 1.0) != 1.0
                || graph::attr_float(n, "beta", 1.0) != 1.0
            {
                Err("alpha or beta is not 1".into())
            } else if !n.input.get(1).is_some_and(|w| is_init(w)) {
                Err("its weight is not an initializer".into())
            } else {
                Ok(())
            }
        }
        "Add" | "Mul" => {
            if n.input.iter().any(|i| is_init(i)) {
                Err("one input is a constant".into())
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// The float activations a quantized node reads (weights and biases are handled apart).
fn activation_inputs(n: &NodeProto) -> Vec<&str> {
    match op(n) {
        "Conv" | "Gemm" => vec![n.input[0].as_str()],
        "MatMul" => n.input.iter().map(String::as_str).collect(),
        "GlobalAveragePool" | "AveragePool" => vec![n.input[0].as_str()],
        _ => n.input.iter().map(String::as_str).collect(),
    }
}

/// A Relu, or a Clip whose lower bound is 0 (so quantizing from 0 clips the same).
fn clips_at_zero(n: &NodeProto, g: &GraphProto) -> bool {
    match op(n) {
        "Relu" => true,
        "Clip" => {
            let Some(min) = n.input.get(1).filter(|s| !s.is_empty()) else {
                return false;
            };
            g.initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(min.as_str()))
                .and_then(|t| tensor_f32(t).ok())
                .is_some_and(|v| v.len() == 1 && v[0] == 0.0)
        }
        _ => false,
    }
}

/// Scale and zero point of an activation range.
pub fn activation_params(r: Range, activations: Activations) -> (f32, i32) {
    let (qmin, qmax) = activations.limits();
    let (rmin, rmax) = (r.min.min(0.0), r.max.max(0.0));
    let scale = (rmax - rmin) / (qmax - qmin) as f32;
    if !(scale.is_finite() && scale > 0.0) {
        return (1.0, if qmin < 0 { 0 } else { qmin });
    }
    let zp = (qmin as f32 - rmin / scale)
        .round()
        .clamp(qmin as f32, qmax as f32) as i32;
    (scale, zp)
}

/// Symmetric int8 quantization of `w` split into `channels` equal slices (1 = per tensor).
/// Returns the values and each slice's scale.
pub fn quantize_weights(w: &[f32], channels: usize, reduce_range: bool) -> (Vec<i8>, Vec<f32>) {
    let qmax = if reduce_range { 64.0 } else { 127.0 };
    let per = w.len() / channels.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for chunk in w.chunks(per.max(1)) {
        let absmax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if absmax > 0.0 { absmax / qmax } else { 1.0 };
        scales.push(scale);
        q.extend(
            chunk
                .iter()
                .map(|v| (v / scale).round().clamp(-qmax, qmax) as i8),
        );
    }
    (q, scales)
}

/// `w` with the output-channel axis moved first (MatMul's and Gemm's `transB = 0` weights
/// are `[K, N]`), so that channels are contiguous; and back.
fn transpose_2d(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// Rewrites the float graph `g` into QDQ form as `plan` says, with the calibrated `ranges`.
pub fn apply(
    g: &GraphProto,
    plan: &Plan,
    ranges: &HashMap<String, Range>,
    opts: &QdqOptions,
) -> Result<GraphProto, QuantizeError> {
    let mut g = g.clone();
    // 1. Fold the fused activations into their producers.
    let producer = producers(&g);
    for &a in &plan.fused {
        let act = &g.node[a];
        let (from, to) = (act.input[0].clone(), act.output[0].clone());
        if let Some(&p) = producer.get(&from) {
            g.node[p].output[0] = to;
        }
    }
    let fused: HashSet<usize> = plan.fused.iter().copied().collect();

    // 2. Scale and zero point of every quantized activation.
    let mut params: HashMap<String, (f32, i32)> = HashMap::new();
    for t in &plan.tensors {
        let mut source = t;
        while let Some(s) = plan.shared.get(source) {
            source = s;
        }
        let range = ranges
            .get(source)
            .copied()
            .ok_or_else(|| QuantizeError::Runtime(format!("no calibrated range for `{t}`")))?;
        params.insert(t.clone(), activation_params(range, opts.activations));
    }

    let mut names = Names::new(&g);
    let inits = initializers(&g);
    let zp_tensor = |name: &str, zp: i32| match opts.activations {
        Activations::S8 => int8_tensor(name, &[], &[zp as i8]),
        Activations::U8 => uint8_tensor(name, &[], &[zp as u8]),
    };
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut q_nodes: HashMap<String, Vec<NodeProto>> = HashMap::new();
    // Per tensor: the quantized value, its scale and zero point. Each reader gets its own
    // DequantizeLinear: ORT fuses a node with its DQ inputs only when no one else reads them.
    let mut quantized: HashMap<String, [String; 3]> = HashMap::new();
    for t in &plan.tensors {
        let (scale, zp) = params[t];
        let s = names.fresh(&format!("{t}_scale"));
        let z = names.fresh(&format!("{t}_zero_point"));
        let q = names.fresh(&format!("{t}_quantized"));
        new_inits.push(f32_tensor(&s, &[], &[scale]));
        new_inits.push(zp_tensor(&z, zp));
        let qn = node(
            "QuantizeLinear",
            &names.fresh(&format!("{t}_QuantizeLinear")),
            &[t, &s, &z],
            &[&q],
        );
        q_nodes.insert(t.clone(), vec![qn]);
        quantized.insert(t.clone(), [q, s, z]);
    }

    // 3. Weights and biases of the selected nodes, read through DequantizeLinear.
    let mut weight_nodes: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut replaced_inputs: HashMap<(usize, usize), String> = HashMap::new();
    for &i in &plan.nodes {
        let n = &g.node[i];
        let kind = op(n);
        if !matches!(kind, "Conv" | "Gemm" | "MatMul") {
            continue;
        }
        let Some(&wi) = n.input.get(1).and_then(|w| inits.get(w)) else {
            continue;
        };
        let wt = &g.initializer[wi];
        let w = tensor_f32(wt)?;
        let dims = wt.dims.clone();
        // The axis of the output channels in the stored weight.
        let axis = match kind {
            "Conv" => 0,
            "Gemm" if attr_int(n, "transB", 0) == 1 => 0,
            _ => 1,
        };
        let per_channel = opts.per_channel && (axis == 0 || dims.len() == 2);
        let channels = if per_channel {
            dims.get(axis).copied().unwrap_or(1).max(1) as usize
        } else {
            1
        };
        let (q, scales) = if per_channel && axis == 1 {
            let (rows, cols) = (dims[0] as usize, dims[1] as usize);
            let (qt, s) =
                quantize_weights(&transpose_2d(&w, rows, cols), channels, opts.reduce_range);
            let mut q = vec![0i8; qt.len()];
            for c in 0..cols {
                for r in 0..rows {
                    q[r * cols + c] = qt[c * rows + r];
                }
            }
            (q, s)
        } else {
            quantize_weights(&w, channels, opts.reduce_range)
        };
        let wname = &n.input[1];
        let qn = names.fresh(&format!("{wname}_quantized"));
        let sn = names.fresh(&format!("{wname}_scale"));
        let zn = names.fresh(&format!("{wname}_zero_point"));
        let dqn = names.fresh(&format!("{wname}_dequantized"));
        let scale_dims: Vec<i64> = if per_channel {
            vec![channels as i64]
        } else {
            vec![]
        };
        new_inits.push(int8_tensor(&qn, &dims, &q));
        new_inits.push(f32_tensor(&sn, &scale_dims, &scales));
        new_inits.push(int8_tensor(&zn, &scale_dims, &vec![0; scales.len()]));
        let mut d = node(
            "DequantizeLinear",
            &names.fresh(&format!("{wname}_DequantizeLinear")),
            &[&qn, &sn, &zn],
            &[&dqn],
        );
        if per_channel {
            d.attribute.push(AttributeProto::int("axis", axis as i64));
        }
        let mut nodes_before = vec![d];
        replaced_inputs.insert((i, 1), dqn);

        // Bias: int32 at input scale × weight scale.
        let x_scale = params.get(&n.input[0]).map(|p| p.0);
        let bias = n
            .input
            .get(2)
            .filter(|b| !b.is_empty())
            .and_then(|b| inits.get(b).map(|&bi| (b, bi)));
        if let (Some(x_scale), Some((bname, bi)), "Conv" | "Gemm") = (x_scale, bias, kind) {
            let b = tensor_f32(&g.initializer[bi])?;
            let out_channels = dims.get(axis).copied().unwrap_or(0) as usize;
            if b.len() == out_channels {
                let bscale: Vec<f32> = (0..b.len())
                    .map(|c| x_scale * scales[if per_channel { c } else { 0 }])
                    .collect();
                let bq: Vec<i32> = b
                    .iter()
                    .zip(&bscale)
                    .map(|(v, s)| (f64::from(*v) / f64::from(*s)).round() as i32)
                    .collect();
                let qn = names.fresh(&format!("{bname}_quantized"));
                let sn = names.fresh(&format!("{bname}_scale"));
                let zn = names.fresh(&format!("{bname}_zero_point"));
                let dqn = names.fresh(&format!("{bname}_dequantized"));
                let bdims = [b.len() as i64];
                new_inits.push(int32_tensor(&qn, &bdims, &bq));
                new_inits.push(f32_tensor(&sn, &bdims, &bscale));
                new_inits.push(int32_tensor(&zn, &bdims, &vec![0; b.len()]));
                let mut d = node(
                    "DequantizeLinear",
                    &names.fresh(&format!("{bname}_DequantizeLinear")),
                    &[&qn, &sn, &zn],
                    &[&dqn],
                );
                d.attribute.push(AttributeProto::int("axis", 0));
                nodes_before.push(d);
                replaced_inputs.insert((i, 2), dqn);
            }
        }
        weight_nodes.insert(i, nodes_before);
    }

    // 4. The new node list, in graph order.
    let mut out_nodes = Vec::with_capacity(g.node.len() * 3);
    for input in g.input.iter().filter_map(|v| v.name.as_ref()) {
        if let Some(qdq) = q_nodes.remove(input) {
            out_nodes.extend(qdq);
        }
    }
    for (i, n) in g.node.iter().enumerate() {
        if fused.contains(&i) {
            continue;
        }
        if let Some(w) = weight_nodes.remove(&i) {
            out_nodes.extend(w);
        }
        let mut n = n.clone();
        let mut own_dq: HashMap<String, String> = HashMap::new();
        for (k, input) in n.input.iter_mut().enumerate() {
            if let Some(r) = replaced_inputs.get(&(i, k)) {
                *input = r.clone();
            } else if let Some([q, s, z]) = quantized.get(input.as_str()) {
                let dq = match own_dq.get(input.as_str()) {
                    Some(dq) => dq.clone(),
                    None => {
                        let dq = names.fresh(&format!("{input}_dequantized"));
                        out_nodes.push(node(
                            "DequantizeLinear",
                            &names.fresh(&format!("{input}_DequantizeLinear")),
                            &[q, s, z],
                            &[&dq],
                        ));
                        own_dq.insert(input.clone(), dq.clone());
                        dq
                    }
                };
                *input = dq;
            }
        }
        let outs = n.output.clone();
        out_nodes.push(n);
        for o in &outs {
            if let Some(qdq) = q_nodes.remove(o) {
                out_nodes.extend(qdq);
            }
        }
    }
    if let Some(t) = q_nodes.keys().next() {
        return Err(QuantizeError::Runtime(format!(
            "tensor `{t}` to quantize has no producer in the graph"
        )));
    }
    g.node = out_nodes;
    g.initializer.extend(new_inits);
    g.value_info.clear();
    graph::remove_unused_initializers(&mut g);
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_weights_round_trip_within_half_a_step() {
        // Two output channels of very different magnitude.
        let w: Vec<f32> = (0..64)
            .map(|i| {
                let x = ((i * 37) % 17) as f32 / 17.0 - 0.5;
                if i < 32 { x * 0.01 } else { x * 3.0 }
            })
            .collect();
        for reduce in [false, true] {
            let (q, s) = quantize_weights(&w, 2, reduce);
            assert_eq!(s.len(), 2);
            for (i, (&v, &qv)) in w.iter().zip(&q).enumerate() {
                let scale = s[i / 32];
                let back = f32::from(qv) * scale;
                assert!(
                    (back - v).abs() <= scale / 2.0 + 1e-7,
                    "w[{i}] = {v}, back {back}, scale {scale}"
                );
            }
            let limit = if reduce { 64 } else { 127 };
            assert!(q.iter().all(|&v| i32::from(v).abs() <= limit));
            assert_eq!(q.iter().map(|v| i32::from(*v).abs()).max(), Some(limit));
        }
        // Per tensor, the small channel loses most of its resolution.
        let (_, s) = quantize_weights(&w, 1, false);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn activation_zero_is_exact() {
        for act in [Activations::S8, Activations::U8] {
            for r in [
                Range { min: 0.0, max: 6.0 },
                Range {
                    min: -1.3,
                    max: 4.1,
                },
                Range {
                    min: -2.0,
                    max: 0.0,
                },
            ] {
                let (scale, zp) = activation_params(r, act);
                let (qmin, qmax) = act.limits();
                assert!((qmin..=qmax).contains(&zp));
                // Dequantized qmin/qmax cover the range within one step.
                let lo = (qmin - zp) as f32 * scale;
                let hi = (qmax - zp) as f32 * scale;
                assert!(
                    lo <= r.min + scale && hi >= r.max - scale,
                    "{r:?}: {lo}..{hi}"
                );
            }
        }
        let (s, zp) = activation_params(Range { min: 0.0, max: 6.0 }, Activations::S8);
        assert_eq!(zp, -128);
        assert!((s - 6.0 / 255.0).abs() < 1e-7);
    }

    #[test]
    fn unsupported_op_types_are_named() {
        let err = check_op_types(&["Conv".into(), "LSTM".into()]);
        assert!(
            matches!(&err, Err(QuantizeError::UnsupportedOp { op, .. }) if op == "LSTM"),
            "{err:?}"
        );
    }
}
