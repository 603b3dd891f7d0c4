//! float16: initializers stored as fp16 and every float activation computed in fp16, with a
//! `Cast` after each float32 graph input and before each float32 graph output so that the
//! model's interface (what `visionclassify` feeds and reads) stays float32.
//!
//! Nodes named in `keep_fp32` run in float32 between Casts. ONNX Runtime's CPU provider
//! itself wraps the ops it has no fp16 kernel for in Casts (its `InsertCastTransformer`), so
//! the model always runs on CPU; it is just rarely faster there (the report measures it).

use std::collections::{HashMap, HashSet};

use crate::onnx::{AttributeProto, GraphProto, NodeProto, data_type};

use super::QuantizeError;
use super::graph::{self, Names, elem_type, node, node_name, op, raw_tensor, tensor_f32};

/// Converts a float32 to IEEE half precision, rounding to nearest even; out-of-range values
/// become ±infinity.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let mut k = m >> shift;
        let rem = m & ((1u32 << shift) - 1);
        if rem > half || (rem == half && k & 1 == 1) {
            k += 1;
        }
        return sign | k as u16;
    }
    let mut h = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

/// Half precision back to float32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man × 2^-24.
            let v = man as f32 * f32::powi(2.0, -24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000,
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// fp16 takes no op-type selection: every float op is converted (use --exclude for nodes).
pub fn check_op_types(op_types: &[String]) -> Result<(), QuantizeError> {
    match op_types.first() {
        Some(o) => Err(QuantizeError::UnsupportedOp {
            op: o.clone(),
            supported: "none: fp16 converts every float op; keep nodes in float32 with --exclude"
                .into(),
        }),
        None => Ok(()),
    }
}

/// Ops whose outputs are never float, whatever their inputs.
const INTEGER_OUTPUT: &[&str] = &["Shape", "Size", "ArgMax", "ArgMin", "NonZero"];

fn cast(name: &str, input: &str, output: &str, to: i32) -> NodeProto {
    let mut n = node("Cast", name, &[input], &[output]);
    n.attribute.push(AttributeProto::int("to", i64::from(to)));
    n
}

/// The fp16 version of `g`; nodes named in `keep_fp32` stay float32.
pub fn convert(g: &GraphProto, keep_fp32: &[String]) -> Result<GraphProto, QuantizeError> {
    let keep: HashSet<&str> = keep_fp32.iter().map(String::as_str).collect();
    let mut names = Names::new(g);
    let mut out = g.clone();
    out.node.clear();
    // Every float tensor is either fp16 or fp32 at any point.
    let mut is16: HashMap<String, bool> = HashMap::new();
    for t in &mut out.initializer {
        if t.data_type == Some(data_type::FLOAT) {
            let v = tensor_f32(t)?;
            let raw = v
                .iter()
                .flat_map(|x| f32_to_f16(*x).to_le_bytes())
                .collect();
            let name = t.name.clone().unwrap_or_default();
            *t = raw_tensor(&name, &t.dims, data_type::FLOAT16, raw);
            is16.insert(name, true);
        }
    }
    for i in &g.input {
        if elem_type(i) == Some(data_type::FLOAT)
            && let Some(name) = &i.name
        {
            is16.entry(name.clone()).or_insert(false);
        }
    }
    // Casts made so far: (tensor, to fp16?) → cast output.
    let mut casts: HashMap<(String, bool), String> = HashMap::new();
    for n in &g.node {
        let run16 = !keep.contains(node_name(n));
        let mut n = n.clone();
        let mut any_float = false;
        let resize = op(&n) == "Resize";
        for (k, input) in n.input.iter_mut().enumerate() {
            let Some(&t16) = is16.get(input.as_str()) else {
                continue;
            };
            // Resize's scales are float32 in every type signature.
            let want16 = run16 && !(resize && k == 2);
            any_float = true;
            if t16 != want16 {
                let key = (input.clone(), want16);
                let c = match casts.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let suffix = if want16 { "fp16" } else { "fp32" };
                        let c = names.fresh(&format!("{input}_{suffix}"));
                        let to = if want16 {
                            data_type::FLOAT16
                        } else {
                            data_type::FLOAT
                        };
                        out.node.push(cast(
                            &names.fresh(&format!("{input}_Cast_{suffix}")),
                            input,
                            &c,
                            to,
                        ));
                        casts.insert(key, c.clone());
                        c
                    }
                };
                *input = c;
            }
        }
        let mut float_out = any_float && !INTEGER_OUTPUT.contains(&op(&n));
        if op(&n) == "Cast" {
            let to = graph::attr_int(&n, "to", 0);
            float_out = to == i64::from(data_type::FLOAT) || to == i64::from(data_type::FLOAT16);
            if float_out && run16 {
                for a in &mut n.attribute {
                    if a.name.as_deref() == Some("to") {
                        a.i = Some(i64::from(data_type::FLOAT16));
                    }
                }
            }
        }
        if float_out {
            for o in &n.output {
                is16.insert(o.clone(), run16);
            }
        }
        out.node.push(n);
    }
    // Float32 at the interface: rename fp16 producers of graph outputs and cast back.
    for o in &g.output {
        let Some(name) = o.name.clone() else { continue };
        if is16.get(&name) != Some(&true) || elem_type(o) != Some(data_type::FLOAT) {
            continue;
        }
        let inner = names.fresh(&format!("{name}_fp16"));
        for n in &mut out.node {
            for x in n.input.iter_mut().chain(n.output.iter_mut()) {
                if *x == name {
                    *x = inner.clone();
                }
            }
        }
        out.node.push(cast(
            &names.fresh(&format!("{name}_Cast_fp32")),
            &inner,
            &name,
            data_type::FLOAT,
        ));
    }
    out.value_info.clear();
    graph::remove_unused_initializers(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversion_rounds_to_nearest() {
        for (x, h) in [
            (0.0f32, 0x0000u16),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (1e6, 0x7c00),
            (5.960_464_5e-8, 0x0001),
            (6.103_515_6e-5, 0x0400),
            (0.333_333_34, 0x3555),
        ] {
            assert_eq!(f32_to_f16(x), h, "{x}");
            // 1/3 and 1e6 are not representable; the others come back exactly.
            if h != 0x7c00 && h != 0x3555 {
                assert_eq!(f16_to_f32(h), x, "{h:#x}");
            }
        }
        // Relative error of normal values ≤ 2^-11.
        for i in 1..1000 {
            let x = i as f32 * 0.0137 - 5.0;
            let back = f16_to_f32(f32_to_f16(x));
            assert!((back - x).abs() <= x.abs() * 4.9e-4 + 1e-7, "{x} → {back}");
        }
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }
}
