//! The short replay of fuzzing that `scripts/test.sh` runs: every kept input of every fuzz
//! target (`fuzz/seeds/<target>/`: written by `fuzz/seeds.py`; `fuzz/corpus/<target>/`: what
//! the runs found, minimized; `fuzz/regressions/<target>/`: inputs that once crashed, one per
//! fault fixed) through the same function the target calls.
//! Here because the trainer's tests see both crates; see fuzz/README.md for the long runs.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("pickle", vision_trainer::fuzzing::pickle),
    ("pth", vision_trainer::fuzzing::pth),
    ("labels", vision_trainer::fuzzing::labels),
    ("labels", gstvision::fuzzing::labels),
    ("contract", gstvision::fuzzing::contract),
    ("event", gstvision::fuzzing::event),
    ("mqtt_settings", gstvision::fuzzing::mqtt_settings),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

#[test]
fn every_kept_input_passes_its_target() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for (target, run) in TARGETS {
        let mut inputs = files(&fuzz_dir().join("corpus").join(target));
        let corpus = inputs.len();
        let seeds = files(&fuzz_dir().join("seeds").join(target));
        // A corpus that went missing would make this test pass on nothing.
        assert!(
            corpus >= 20 && seeds.len() >= 2,
            "fuzz/corpus/{target} holds {corpus} inputs, fuzz/seeds/{target} {}",
            seeds.len()
        );
        inputs.extend(seeds);
        inputs.extend(files(&fuzz_dir().join("regressions").join(target)));
        for path in &inputs {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
        counts.push(format!("{target}: {}", inputs.len()));
    }
    eprintln!("replayed {}", counts.join(", "));
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
}

#[test]
fn the_seeds_are_valid_inputs() {
    // The seeds are written by fuzz/seeds.py; mutations start from them, so they must be
    // real inputs, not rejected ones.
    let seeds = fuzz_dir().join("seeds");
    for name in ["three-tensors.pth", "transposed.pth"] {
        let bytes = std::fs::read(seeds.join("pth").join(name)).expect("seed");
        let sd = vision_trainer::import::pth::StateDict::from_bytes(bytes, name)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!sd.names().is_empty());
    }
    let sd = vision_trainer::import::pth::StateDict::from_bytes(
        std::fs::read(seeds.join("pth/transposed.pth")).expect("seed"),
        "transposed.pth",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sd.f32("w").expect("w").shape, [2, 3]);
    for name in ["readme-0.json", "readme-1.json"] {
        let bytes = std::fs::read(seeds.join("event").join(name)).expect("seed");
        serde_json::from_slice::<gstvision::event::Event>(&bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let uri = std::fs::read_to_string(seeds.join("mqtt_settings/plain.txt")).expect("seed");
    let uri = uri.split('\0').next().unwrap_or_default();
    uri.parse::<gstvision::delivery::BrokerUri>()
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
}
