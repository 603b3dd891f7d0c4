//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz) and of their replay test
//! (`tests/fuzz_replay.rs`, which runs every kept input through them in `scripts/test.sh`).
//! Each takes any bytes, must not panic, abort or allocate without bound, and asserts what
//! must hold for every input. Not an API: hidden from the documentation.

use std::path::Path;

use crate::import::labels::{IMAGENET_CLASSES, imagenet_from_text};
use crate::import::pickle::{self, MAX_DEPTH, Value};
use crate::import::pth::{DType, StateDict};

/// Walks a value as a reader would, up to `budget` nodes (shared lists may be reached many
/// times), checking that it nests no deeper than [`MAX_DEPTH`].
fn walk(v: &Value, depth: u32, budget: &mut u32) {
    assert!(depth <= MAX_DEPTH, "a value nests {depth} deep");
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    match v {
        Value::Tuple(items) => items.iter().for_each(|i| walk(i, depth + 1, budget)),
        Value::List(items) => items
            .borrow()
            .iter()
            .for_each(|i| walk(i, depth + 1, budget)),
        Value::Dict(items) => items.borrow().iter().for_each(|(k, v)| {
            walk(k, depth + 1, budget);
            walk(v, depth + 1, budget);
        }),
        Value::Call {
            callable,
            args,
            state,
        } => {
            walk(callable, depth + 1, budget);
            args.iter().for_each(|a| walk(a, depth + 1, budget));
            if let Some(s) = state {
                walk(s, depth + 1, budget);
            }
        }
        Value::Persistent(pid) => walk(pid, depth + 1, budget),
        _ => {}
    }
}

/// The pickle VM: a value or an error, never more input used than given, values within the
/// nesting limit (dropping them recurses).
pub fn pickle(data: &[u8]) {
    if let Ok((value, used)) = pickle::load(data) {
        assert!(used <= data.len());
        walk(&value, 1, &mut 100_000);
    }
}

/// The legacy `.pth` reader: errors name the file; every float tensor of a file that opens
/// reads, with as many values as its shape holds.
pub fn pth(data: &[u8]) {
    match StateDict::from_bytes(data.to_vec(), "fuzz.pth") {
        Ok(sd) => {
            let _ = sd.float_parameter_count();
            for name in sd.names() {
                let shape = sd.shape(name).expect("a listed tensor has a shape");
                if sd.dtype(name) == Some(DType::F32) {
                    let t = sd.f32(name).expect("a float tensor of an open file reads");
                    assert_eq!(t.data.len(), shape.iter().product::<usize>());
                }
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz.pth"), "{e}"),
    }
}

/// timm's ImageNet class files (synsets, NUL, synset-to-lemma lines): a list that reads
/// has the 1000 classes, each a non-empty first name.
pub fn labels(data: &[u8]) {
    let mut parts = data.splitn(2, |&b| b == 0);
    let synsets = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let lemmas = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let (s, l) = (Path::new("synsets.txt"), Path::new("lemmas.txt"));
    match imagenet_from_text(&synsets, &lemmas, s, l) {
        Ok(labels) => {
            assert_eq!(labels.len(), IMAGENET_CLASSES);
            assert!(labels.iter().all(|l| !l.is_empty() && !l.contains(',')));
        }
        Err(e) => assert!(e.to_string().contains(".txt"), "{e}"),
    }
}
