//! `bench_quantize`: a float model and its quantized versions (ours, ONNX Runtime's), measured
//! by the same code in the same run: top-1 on the same test tensors, agreement with the float
//! model, and throughput at batch 1 and 8 with the same session options, the models
//! interleaved round by round (median of the rounds), with ratios. Driven by
//! bench/quantize/run.sh, which writes the test tensors with `vision-trainer quantize
//! --save-tensors`.
//!
//! usage: bench_quantize --float M.onnx --model NAME=PATH [--model ...] --tensors DIR
//!        [--rounds 7] [--round-ms 500] [--threads 0] [--json OUT.json]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use vision_trainer::quantize::Images;
use vision_trainer::quantize::evaluate::{self, SessionOptions};

struct Args {
    float: PathBuf,
    models: Vec<(String, PathBuf)>,
    tensors: PathBuf,
    rounds: usize,
    round_ms: u64,
    threads: usize,
    json: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        float: PathBuf::new(),
        models: Vec::new(),
        tensors: PathBuf::new(),
        rounds: 7,
        round_ms: 500,
        threads: 0,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--float" => a.float = value()?.into(),
            "--model" => {
                let v = value()?;
                let (name, path) = v.split_once('=').context("--model NAME=PATH")?;
                a.models.push((name.to_owned(), path.into()));
            }
            "--tensors" => a.tensors = value()?.into(),
            "--rounds" => a.rounds = value()?.parse()?,
            "--round-ms" => a.round_ms = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--json" => a.json = Some(value()?.into()),
            _ => bail!("unknown argument {flag} (see the file's header for usage)"),
        }
    }
    ensure!(
        !a.float.as_os_str().is_empty() && !a.tensors.as_os_str().is_empty(),
        "--float and --tensors are required"
    );
    Ok(a)
}

/// Reads a little-endian .npy written by `vision-trainer quantize --save-tensors`.
fn read_npy(path: &Path) -> anyhow::Result<(Vec<usize>, Vec<u8>)> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        b.len() > 10 && &b[..6] == b"\x93NUMPY",
        "{} is not .npy",
        path.display()
    );
    let len = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + len])?;
    let shape = header
        .split_once("'shape': (")
        .and_then(|(_, r)| r.split_once(')'))
        .context("no shape in the .npy header")?
        .0;
    let dims = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<usize>, _>>()?;
    Ok((dims, b[10 + len..].to_vec()))
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let lib = std::env::var_os("ORT_DYLIB_PATH").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/onnxruntime/lib/libonnxruntime.so"),
        PathBuf::from,
    );
    let env = vision_trainer::onnx::runtime::load_runtime(&lib)?;
    let (dims, raw) = read_npy(&args.tensors.join("test.npy"))?;
    let images = Images {
        data: raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        dims: dims[1..].to_vec(),
    };
    let labels_path = args.tensors.join("test_labels.npy");
    let labels: Option<Vec<usize>> = if labels_path.is_file() {
        let (_, raw) = read_npy(&labels_path)?;
        Some(
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize)
                .collect(),
        )
    } else {
        None
    };
    let mut options = SessionOptions::default();
    if args.threads > 0 {
        options.threads = args.threads;
    }

    let mut all = vec![("float".to_owned(), args.float.clone())];
    all.extend(args.models.iter().cloned());
    let mut sessions = Vec::new();
    let mut sizes = Vec::new();
    for (name, path) in &all {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        sizes.push(bytes.len());
        sessions.push(
            evaluate::session(env, &bytes, &options).with_context(|| format!("model {name}"))?,
        );
    }
    let mut predictions = Vec::new();
    for s in &mut sessions {
        let logits = evaluate::logits(s, &images, 8)?;
        let classes = logits.len() / images.len().max(1);
        predictions.push(evaluate::top1(&logits, classes));
    }
    let mut refs: Vec<&mut ort::session::Session> = sessions.iter_mut().collect();
    let round = Duration::from_millis(args.round_ms);
    let b1 = evaluate::interleaved_throughput(&mut refs, &images, 1, args.rounds, round)?;
    let b8 = evaluate::interleaved_throughput(&mut refs, &images, 8, args.rounds, round)?;

    println!(
        "{} test images ({}), ORT CPU {} threads, spinning off, {} interleaved rounds of {} ms, median",
        images.len(),
        if labels.is_some() {
            "labelled"
        } else {
            "unlabelled: top-1 = agreement with float"
        },
        options.threads,
        args.rounds,
        args.round_ms
    );
    println!(
        "{:<10} {:>9} {:>8} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "model", "MB", "top-1 %", "agree %", "img/s @1", "img/s @8", "x @1", "x @8"
    );
    let mut rows = Vec::new();
    for (i, (name, path)) in all.iter().enumerate() {
        let agree = evaluate::accuracy(&predictions[i], &predictions[0]);
        let top1 = match &labels {
            Some(l) => evaluate::accuracy(&predictions[i], l),
            None => agree,
        };
        println!(
            "{:<10} {:>9.2} {:>8.2} {:>10.2} {:>10.1} {:>10.1} {:>8.2} {:>8.2}",
            name,
            sizes[i] as f64 / 1e6,
            top1,
            agree,
            b1[i],
            b8[i],
            b1[i] / b1[0],
            b8[i] / b8[0]
        );
        rows.push(serde_json::json!({
            "name": name, "path": path, "bytes": sizes[i], "top1": top1, "agreement": agree,
            "images_per_s_batch1": b1[i], "images_per_s_batch8": b8[i],
            "speedup_batch1": b1[i] / b1[0], "speedup_batch8": b8[i] / b8[0],
        }));
    }
    if all.len() >= 3 {
        println!(
            "{} / {}: {:.2}x @1, {:.2}x @8, top-1 {:+.2} points, size {:.2}x",
            all[1].0,
            all[2].0,
            b1[1] / b1[2],
            b8[1] / b8[2],
            rows[1]["top1"].as_f64().unwrap_or(0.0) - rows[2]["top1"].as_f64().unwrap_or(0.0),
            sizes[1] as f64 / sizes[2] as f64
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "test_images": images.len(), "labelled": labels.is_some(),
            "threads": options.threads, "rounds": args.rounds, "round_ms": args.round_ms,
            "models": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
