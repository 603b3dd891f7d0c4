//! `bench_filters`: what `resize-filter` does to a model's answers. The real photos of
//! `scripts/setup.sh` (`.deps/data/photos/`) are cut into crops of several sizes and positions
//! (each resized from hundreds of pixels down to the model's input, where the filters differ
//! most), every crop is classified with each filter, and the top-1 of `bilinear` and `nearest`
//! is compared with `area` (the default, and the closest to the antialiased resize ImageNet
//! models are trained with): agreement, and the mean change of the top-1 class's confidence.
//!
//! ```text
//! cargo run --release -p vision-bench --bin bench_filters -- [--model PATH] [--photos DIR]
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gstvision::classify::video;
use gstvision::contract::ScoreKind;
use gstvision::model::{BatchInput, Overrides, Runner, RunnerConfig};
use gstvision::preprocess::{Preprocessor, Rect, ResizeFilter, SlotMut};

const FILTERS: [ResizeFilter; 3] = [
    ResizeFilter::Area,
    ResizeFilter::Bilinear,
    ResizeFilter::Nearest,
];

/// One photo decoded to RGB by GStreamer.
struct Photo {
    name: String,
    buffer: gst::Buffer,
    info: gst_video::VideoInfo,
}

fn decode(path: &std::path::Path) -> Result<Photo> {
    let description = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \
         appsink name=sink sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&description)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    let sample = sink
        .pull_sample()
        .with_context(|| format!("cannot decode {}", path.display()))?;
    pipeline.set_state(gst::State::Null)?;
    let caps = sample.caps().context("no caps")?;
    Ok(Photo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        buffer: sample.buffer_owned().context("no buffer")?,
        info: gst_video::VideoInfo::from_caps(caps)?,
    })
}

/// Square crops of 100, 70, 50 and 35 % of the shorter side, on a 3×3 grid of positions.
fn crops(width: usize, height: usize) -> Vec<Rect> {
    let short = width.min(height);
    let mut out = Vec::new();
    for percent in [100, 70, 50, 35] {
        let side = short * percent / 100;
        for gy in 0..3 {
            for gx in 0..3 {
                let rect = Rect {
                    x: (width - side) * gx / 2,
                    y: (height - side) * gy / 2,
                    width: side,
                    height: side,
                };
                if !out.contains(&rect) {
                    out.push(rect);
                }
            }
        }
    }
    out
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut model = root.join("models/efficientnet-lite0.onnx");
    let mut photos = root.join(".deps/data/photos");
    let mut ort_library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".deps/onnxruntime/lib/libonnxruntime.so"));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = value()?.into(),
            "--photos" => photos = value()?.into(),
            "--ort-library" => ort_library = value()?.into(),
            other => {
                bail!("unknown argument {other} (--model PATH, --photos DIR, --ort-library PATH)")
            }
        }
    }
    gst::init()?;
    gstvision::model::load_runtime(Some(&ort_library), &[])?;
    let config = RunnerConfig {
        model: model.clone(),
        ort_library: Some(ort_library),
        threads: 0,
        ..RunnerConfig::default()
    };
    let mut runner = Runner::open(&config, &Overrides::default())?.runner;
    let spec = runner.spec().clone();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&photos)
        .with_context(|| format!("cannot list {} (run scripts/setup.sh)", photos.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();

    // top-1 (class, confidence) per filter per crop
    let mut answers: Vec<[(usize, f32); 3]> = Vec::new();
    // whether each crop was shrunk (the filters differ there; enlarging is bilinear in all but
    // nearest)
    let mut shrunk: Vec<bool> = Vec::new();
    let mut slot = vec![0.0_f32; spec.slot.len()];
    let mut scores = Vec::new();
    for path in &paths {
        let photo = decode(path)?;
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(photo.buffer.as_ref(), &photo.info)?;
        let view = video::frame_view(
            &frame,
            gstvision::preprocess::PixelFormat::Rgb,
            Default::default(),
        );
        let rects = crops(view.width, view.height);
        for rect in &rects {
            let (crop, _) = view.crop(*rect)?;
            let mut row = [(0, 0.0); 3];
            for (f, filter) in FILTERS.iter().enumerate() {
                let mut pre =
                    Preprocessor::new(spec.slot, spec.normalize, spec.resize).with_filter(*filter);
                pre.run(&crop, SlotMut::F32(&mut slot))?;
                runner.run(BatchInput::F32(&slot), 1, &mut scores)?;
                let probs = match spec.scores {
                    ScoreKind::Logits => softmax(&scores[..spec.num_classes]),
                    _ => scores[..spec.num_classes].to_vec(),
                };
                let (best, p) = probs
                    .iter()
                    .copied()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .context("no scores")?;
                row[f] = (best, p);
            }
            answers.push(row);
            shrunk.push(rect.width > spec.slot.width && rect.height > spec.slot.height);
        }
        eprintln!("{}: {} crops", photo.name, rects.len());
    }
    println!(
        "{} crops of {} photos ({} shrunk to the input, the rest enlarged), {}",
        answers.len(),
        paths.len(),
        shrunk.iter().filter(|s| **s).count(),
        model.display()
    );
    println!("filter   | crops    | same top-1 as area | mean |confidence change| where the same");
    for (f, filter) in FILTERS.iter().enumerate().skip(1) {
        for (which, keep) in [("all", None), ("shrunk", Some(true))] {
            let picked: Vec<&[(usize, f32); 3]> = answers
                .iter()
                .zip(&shrunk)
                .filter(|(_, s)| keep.is_none_or(|k| **s == k))
                .map(|(a, _)| a)
                .collect();
            let n = picked.len();
            let same: Vec<_> = picked.iter().filter(|a| a[f].0 == a[0].0).collect();
            let change = same.iter().map(|a| (a[f].1 - a[0].1).abs()).sum::<f32>()
                / same.len().max(1) as f32;
            println!(
                "{:<8} | {which:<8} | {:>5.1} % ({}/{n}) | {change:.3}",
                filter.name(),
                100.0 * same.len() as f64 / n.max(1) as f64,
                same.len(),
            );
        }
    }
    Ok(())
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|v| v / sum).collect()
}
