//! Dynamic int8: weights quantized ahead of time, activations at run time by
//! `DynamicQuantizeLinear` (uint8, per tensor, range of the actual values). No calibration,
//! for models whose inputs cannot be sampled.
//!
//! MatMul and Gemm become the pattern ORT fuses into `DynamicQuantizeMatMul`:
//! `DynamicQuantizeLinear → MatMulInteger(x_q, W_q int8, x_zp) → Cast → Mul(x_scale × w_scale)
//! [→ Add(bias)]`. Conv becomes `ConvInteger(x_q, W_q, x_zp, 128)` with the weights stored as
//! uint8 = int8 + 128 (ORT's CPU ConvInteger takes uint8 weights with one zero point), then
//! the same rescale, and the bias added in float.

use std::collections::HashSet;

use crate::onnx::{AttributeProto, GraphProto, NodeProto, data_type};

use super::QuantizeError;
use super::graph::{
    self, Names, attr_int, f32_tensor, initializers, int8_tensor, node, node_name, op, tensor_f32,
    uint8_tensor,
};
use super::qdq::quantize_weights;

pub const SUPPORTED: &[&str] = &["MatMul", "Gemm", "Conv"];
/// ORT's integer convolution is slower than its float one on x86, so Conv is opt-in.
pub const DEFAULT_OPS: &[&str] = &["MatMul", "Gemm"];

/// Returns the rewritten graph and how many nodes were quantized.
pub fn quantize(
    g: &GraphProto,
    op_types: &[String],
    exclude: &[String],
    per_channel: bool,
) -> Result<(GraphProto, usize), QuantizeError> {
    if let Some(o) = op_types.iter().find(|o| !SUPPORTED.contains(&o.as_str())) {
        return Err(QuantizeError::UnsupportedOp {
            op: o.clone(),
            supported: SUPPORTED.join(", "),
        });
    }
    let excluded: HashSet<&str> = exclude.iter().map(String::as_str).collect();
    let inits = initializers(g);
    let mut names = Names::new(g);
    let mut out = g.clone();
    out.node.clear();
    let mut count = 0;
    // Each activation is quantized once even if several nodes read it.
    let mut quantized_inputs: std::collections::HashMap<String, [String; 3]> =
        std::collections::HashMap::new();
    for n in &g.node {
        let kind = op(n);
        let weight = n
            .input
            .get(1)
            .and_then(|w| inits.get(w))
            .map(|&i| &g.initializer[i]);
        let selected = op_types.iter().any(|o| o == kind) && !excluded.contains(node_name(n));
        let Some(weight) = weight.filter(|_| selected) else {
            out.node.push(n.clone());
            continue;
        };
        let plain_gemm = kind != "Gemm"
            || (attr_int(n, "transA", 0) == 0
                && graph::attr_float(n, "alpha", 1.0) == 1.0
                && graph::attr_float(n, "beta", 1.0) == 1.0);
        if !plain_gemm || (kind != "Conv" && weight.dims.len() != 2) {
            out.node.push(n.clone());
            continue;
        }
        let w = tensor_f32(weight)?;
        let base = node_name(n).to_owned();
        let x = n.input[0].clone();
        let [xq, xs, xz] = quantized_inputs
            .entry(x.clone())
            .or_insert_with(|| {
                let t = [
                    names.fresh(&format!("{x}_quantized")),
                    names.fresh(&format!("{x}_scale")),
                    names.fresh(&format!("{x}_zero_point")),
                ];
                out.node.push(NodeProto {
                    input: vec![x.clone()],
                    output: t.to_vec(),
                    name: Some(names.fresh(&format!("{x}_DynamicQuantizeLinear"))),
                    op_type: Some("DynamicQuantizeLinear".into()),
                    ..Default::default()
                });
                t
            })
            .clone();
        let y = n.output[0].clone();
        let acc = names.fresh(&format!("{base}_int32"));
        let acc_f = names.fresh(&format!("{base}_int32_float"));
        let wq = names.fresh(&format!("{}_quantized", n.input[1]));
        let ws = names.fresh(&format!("{}_scale", n.input[1]));
        let scale = names.fresh(&format!("{base}_output_scale"));
        let bias = n.input.get(2).filter(|b| !b.is_empty()).cloned();
        let scaled = if bias.is_some() {
            names.fresh(&format!("{base}_unbiased"))
        } else {
            y.clone()
        };
        if kind == "Conv" {
            let channels = weight.dims.first().copied().unwrap_or(1).max(1) as usize;
            let (q, s) = quantize_weights(&w, if per_channel { channels } else { 1 }, false);
            let shifted: Vec<u8> = q.iter().map(|&v| (i16::from(v) + 128) as u8).collect();
            let wz = names.fresh(&format!("{}_zero_point", n.input[1]));
            out.initializer
                .push(uint8_tensor(&wq, &weight.dims, &shifted));
            out.initializer.push(uint8_tensor(&wz, &[], &[128]));
            // Scales broadcast over [N, C, H, W] as [C, 1, 1].
            let sdims: Vec<i64> = if per_channel {
                vec![channels as i64, 1, 1]
            } else {
                vec![]
            };
            out.initializer.push(f32_tensor(&ws, &sdims, &s));
            let mut conv = node(
                "ConvInteger",
                &names.fresh(&format!("{base}_ConvInteger")),
                &[&xq, &wq, &xz, &wz],
                &[&acc],
            );
            conv.attribute = n.attribute.clone();
            out.node.push(conv);
        } else {
            let (k, nout) = (weight.dims[0] as usize, weight.dims[1] as usize);
            // MatMulInteger wants B as [K, N]; Gemm with transB stores [N, K].
            let (kk, nn, wkn) = if kind == "Gemm" && attr_int(n, "transB", 0) == 1 {
                let mut t = vec![0.0; w.len()];
                for r in 0..k {
                    for c in 0..nout {
                        t[c * k + r] = w[r * nout + c];
                    }
                }
                (nout, k, t)
            } else {
                (k, nout, w)
            };
            // Per column: quantize the transpose's rows.
            let (q, s) = if per_channel {
                let mut t = vec![0.0; wkn.len()];
                for r in 0..kk {
                    for c in 0..nn {
                        t[c * kk + r] = wkn[r * nn + c];
                    }
                }
                let (qt, s) = quantize_weights(&t, nn, false);
                let mut q = vec![0i8; qt.len()];
                for c in 0..nn {
                    for r in 0..kk {
                        q[r * nn + c] = qt[c * kk + r];
                    }
                }
                (q, s)
            } else {
                quantize_weights(&wkn, 1, false)
            };
            out.initializer
                .push(int8_tensor(&wq, &[kk as i64, nn as i64], &q));
            let sdims: Vec<i64> = if per_channel { vec![nn as i64] } else { vec![] };
            out.initializer.push(f32_tensor(&ws, &sdims, &s));
            out.node.push(node(
                "MatMulInteger",
                &names.fresh(&format!("{base}_MatMulInteger")),
                &[&xq, &wq, &xz],
                &[&acc],
            ));
        }
        let mut cast = node(
            "Cast",
            &names.fresh(&format!("{base}_Cast")),
            &[&acc],
            &[&acc_f],
        );
        cast.attribute
            .push(AttributeProto::int("to", i64::from(data_type::FLOAT)));
        out.node.push(cast);
        out.node.push(node(
            "Mul",
            &names.fresh(&format!("{base}_scales_Mul")),
            &[&xs, &ws],
            &[&scale],
        ));
        out.node.push(node(
            "Mul",
            &names.fresh(&format!("{base}_output_Mul")),
            &[&acc_f, &scale],
            &[&scaled],
        ));
        if let Some(b) = bias {
            let b_in = if kind == "Conv" {
                // [C] → [C, 1, 1] to broadcast over the spatial axes.
                let bt = inits.get(&b).map(|&i| &g.initializer[i]).ok_or_else(|| {
                    QuantizeError::Initializer {
                        name: b.clone(),
                        reason: "Conv bias is not an initializer".into(),
                    }
                })?;
                let bv = tensor_f32(bt)?;
                let name = names.fresh(&format!("{b}_broadcast"));
                out.initializer
                    .push(f32_tensor(&name, &[bv.len() as i64, 1, 1], &bv));
                name
            } else {
                b
            };
            out.node.push(node(
                "Add",
                &names.fresh(&format!("{base}_bias_Add")),
                &[&scaled, &b_in],
                &[&y],
            ));
        }
        count += 1;
    }
    out.value_info.clear();
    graph::remove_unused_initializers(&mut out);
    Ok((out, count))
}
