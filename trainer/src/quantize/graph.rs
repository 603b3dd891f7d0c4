//! Graph plumbing shared by the quantizers: reading and writing initializers, who produces
//! and who consumes a value, fresh names, and folding BatchNormalization into convolutions.

use std::collections::{HashMap, HashSet};

use crate::onnx::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TypeProto, ValueInfoProto, data_type,
    type_proto,
};

use super::QuantizeError;
use crate::batch_norm::{self, BatchNormParams};

/// The elements of a float32 initializer, from `raw_data` or `float_data`.
pub fn tensor_f32(t: &TensorProto) -> Result<Vec<f32>, QuantizeError> {
    let name = t.name.clone().unwrap_or_default();
    if t.data_type != Some(data_type::FLOAT) {
        return Err(QuantizeError::Initializer {
            name,
            reason: format!("data type {:?} is not float32", t.data_type),
        });
    }
    let count: usize = t.dims.iter().map(|&d| d.max(0) as usize).product();
    let data: Vec<f32> = match &t.raw_data {
        Some(raw) => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        None => t.float_data.clone(),
    };
    if data.len() != count {
        return Err(QuantizeError::Initializer {
            name,
            reason: format!("{} values for shape {:?}", data.len(), t.dims),
        });
    }
    Ok(data)
}

/// An initializer of raw little-endian bytes.
pub fn raw_tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: Some(data_type),
        name: Some(name.to_owned()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

pub fn int8_tensor(name: &str, dims: &[i64], data: &[i8]) -> TensorProto {
    raw_tensor(
        name,
        dims,
        data_type::INT8,
        data.iter().map(|&v| v as u8).collect(),
    )
}

pub fn uint8_tensor(name: &str, dims: &[i64], data: &[u8]) -> TensorProto {
    raw_tensor(name, dims, data_type::UINT8, data.to_vec())
}

pub fn int32_tensor(name: &str, dims: &[i64], data: &[i32]) -> TensorProto {
    raw_tensor(
        name,
        dims,
        data_type::INT32,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    raw_tensor(
        name,
        dims,
        data_type::FLOAT,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// A value of the given element type with unknown shape (ORT infers it).
pub fn value_info(name: &str, elem_type: i32) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: None,
            })),
            denotation: None,
        }),
        doc_string: None,
    }
}

/// The element type of a graph input/output.
pub fn elem_type(v: &ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t.elem_type,
    }
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        name: Some(name.to_owned()),
        op_type: Some(op.to_owned()),
        ..Default::default()
    }
}

pub fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}

pub fn node_name(n: &NodeProto) -> &str {
    n.name.as_deref().unwrap_or("")
}

pub fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

pub fn attr_int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).and_then(|a| a.i).unwrap_or(default)
}

pub fn attr_float(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).and_then(|a| a.f).unwrap_or(default)
}

/// Index of each initializer by name.
pub fn initializers(g: &GraphProto) -> HashMap<String, usize> {
    g.initializer
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((t.name.clone()?, i)))
        .collect()
}

/// For each value, the indices of the nodes that read it.
pub fn consumers(g: &GraphProto) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            let list = map.entry(input.clone()).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }
    map
}

/// For each value, the index of the node that writes it.
pub fn producers(g: &GraphProto) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for out in &n.output {
            map.insert(out.clone(), i);
        }
    }
    map
}

pub fn graph_outputs(g: &GraphProto) -> HashSet<String> {
    g.output.iter().filter_map(|o| o.name.clone()).collect()
}

/// Makes names that collide with nothing already in the graph.
pub struct Names {
    taken: HashSet<String>,
}

impl Names {
    pub fn new(g: &GraphProto) -> Names {
        let mut taken = HashSet::new();
        for n in &g.node {
            taken.extend(n.input.iter().cloned());
            taken.extend(n.output.iter().cloned());
            taken.extend(n.name.iter().cloned());
        }
        taken.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
        taken.extend(g.input.iter().filter_map(|v| v.name.clone()));
        taken.extend(g.output.iter().filter_map(|v| v.name.clone()));
        Names { taken }
    }

    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_owned();
        let mut i = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.taken.insert(name.clone());
        name
    }
}

/// Folds each BatchNormalization that directly follows a Conv with initializer weights (and
/// is that Conv's only reader) into the Conv's weight and bias. Returns how many were folded;
/// the others stay and run in float.
pub fn fold_batch_norm(g: &mut GraphProto) -> Result<usize, QuantizeError> {
    let mut folded = 0;
    loop {
        let inits = initializers(g);
        let producer = producers(g);
        let readers = consumers(g);
        let outputs = graph_outputs(g);
        let candidate = g.node.iter().enumerate().find_map(|(bi, bn)| {
            if op(bn) != "BatchNormalization" || bn.input.len() < 5 || bn.output.len() != 1 {
                return None;
            }
            let ci = *producer.get(&bn.input[0])?;
            let conv = &g.node[ci];
            let single_reader = readers.get(&bn.input[0]).is_some_and(|r| r.len() == 1);
            let params = bn.input[1..5].iter().all(|p| inits.contains_key(p));
            (op(conv) == "Conv"
                && single_reader
                && params
                && !outputs.contains(&bn.input[0])
                && conv.input.get(1).is_some_and(|w| inits.contains_key(w)))
            .then_some((bi, ci))
        });
        let Some((bi, ci)) = candidate else {
            return Ok(folded);
        };
        let bn = g.node[bi].clone();
        let eps = attr_float(&bn, "epsilon", 1e-5);
        let param = |i: usize| tensor_f32(&g.initializer[inits[&bn.input[i]]]);
        let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
        let conv = g.node[ci].clone();
        let weight = &g.initializer[inits[&conv.input[1]]];
        let dims = weight.dims.clone();
        let mut w = tensor_f32(weight)?;
        let channels = dims.first().copied().unwrap_or(0).max(0) as usize;
        if [&gamma, &beta, &mean, &var]
            .iter()
            .any(|p| p.len() != channels)
            || channels == 0
        {
            return Err(QuantizeError::Initializer {
                name: node_name(&bn).to_owned(),
                reason: format!("BatchNormalization parameters do not match {channels} channels"),
            });
        }
        let mut b = match conv.input.get(2).filter(|s| !s.is_empty()) {
            Some(name) => {
                let t = inits.get(name).ok_or_else(|| QuantizeError::Initializer {
                    name: name.clone(),
                    reason: "Conv bias is not an initializer".into(),
                })?;
                tensor_f32(&g.initializer[*t])?
            }
            None => vec![0.0; channels],
        };
        let params = BatchNormParams {
            gamma: &gamma,
            beta: &beta,
            mean: &mean,
            var: &var,
            epsilon: f64::from(eps),
        };
        batch_norm::fold(&mut w, &mut b, &params).map_err(|e| QuantizeError::Initializer {
            name: node_name(&bn).to_owned(),
            reason: e.to_string(),
        })?;
        let mut names = Names::new(g);
        let w_name = names.fresh(&format!("{}_bnfolded", conv.input[1]));
        let b_name = names.fresh(&format!("{}_bnfolded_bias", node_name(&conv)));
        g.initializer.push(f32_tensor(&w_name, &dims, &w));
        g.initializer
            .push(f32_tensor(&b_name, &[channels as i64], &b));
        let c = &mut g.node[ci];
        c.input.truncate(1);
        c.input.push(w_name);
        c.input.push(b_name);
        c.output[0] = bn.output[0].clone();
        g.node.remove(bi);
        remove_unused_initializers(g);
        folded += 1;
    }
}

/// Drops initializers no node reads (and that are not graph outputs).
pub fn remove_unused_initializers(g: &mut GraphProto) {
    let mut used: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    used.extend(g.output.iter().filter_map(|o| o.name.as_deref()));
    let keep: Vec<bool> = g
        .initializer
        .iter()
        .map(|t| t.name.as_deref().is_some_and(|n| used.contains(n)))
        .collect();
    let mut k = keep.into_iter();
    g.initializer.retain(|_| k.next().unwrap_or(true));
    let names: HashSet<String> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    // Inputs that only declared a removed initializer go too.
    g.input.retain(|v| {
        let n = v.name.as_deref().unwrap_or("");
        used.contains(n) || names.contains(n)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_folds_into_the_conv() -> Result<(), QuantizeError> {
        // y = BN(conv(x)), conv weight 2 channels × 1 value, bias [1, 2].
        let mut g = GraphProto {
            node: vec![
                node("Conv", "c", &["x", "w", "b"], &["t"]),
                node(
                    "BatchNormalization",
                    "bn",
                    &["t", "g", "be", "m", "v"],
                    &["y"],
                ),
            ],
            initializer: vec![
                f32_tensor("w", &[2, 1, 1, 1], &[2.0, 3.0]),
                f32_tensor("b", &[2], &[1.0, 2.0]),
                f32_tensor("g", &[2], &[1.0, 0.5]),
                f32_tensor("be", &[2], &[0.0, 1.0]),
                f32_tensor("m", &[2], &[1.0, 0.0]),
                f32_tensor("v", &[2], &[4.0, 0.25]),
            ],
            output: vec![value_info("y", data_type::FLOAT)],
            ..Default::default()
        };
        assert_eq!(fold_batch_norm(&mut g)?, 1);
        assert_eq!(g.node.len(), 1);
        assert_eq!(g.node[0].output, ["y"]);
        let inits = initializers(&g);
        let w = tensor_f32(&g.initializer[inits[&g.node[0].input[1]]])?;
        let b = tensor_f32(&g.initializer[inits[&g.node[0].input[2]]])?;
        // eps 1e-5: scale ≈ [0.5, 1.0].
        assert!(
            (w[0] - 1.0).abs() < 1e-4 && (w[1] - 3.0).abs() < 1e-4,
            "{w:?}"
        );
        assert!(
            (b[0] - 0.0).abs() < 1e-4 && (b[1] - 3.0).abs() < 1e-4,
            "{b:?}"
        );
        assert_eq!(g.initializer.len(), 2, "the BN parameters are gone");
        Ok(())
    }
}
