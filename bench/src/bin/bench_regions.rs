//! `bench_regions`: `visionclassify target=roi` on 1080p frames carrying 1, 4 or 16 regions
//! each, against the bare ONNX Runtime session at the same batch size on pre-cropped tensors
//! (the upper bound: no cropping, resizing, batching or pushing). Also reports the cost of
//! cropping and resizing one region alone. Rounds are interleaved and medians reported; the
//! ratios are taken against the bare session measured in the same run.
//!
//! ```text
//! cargo run --release -p vision-bench --bin bench_regions -- [--model PATH] [--regions 1,4,16]
//!     [--frames N] [--batch B] [--threads T] [--rounds R] [--json PATH]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gst_video::VideoRegionOfInterestMeta;
use gstvision::classify::video;
use gstvision::model::{BatchInput, Overrides, Runner, RunnerConfig};
use gstvision::preprocess::{Preprocessor, Rect, SlotMut};

#[allow(dead_code)]
#[path = "../frames.rs"]
mod frames;
#[path = "../median.rs"]
mod median;
use frames::Frames;
use median::median;

const FRAMES: (&str, u32, u32) = ("RGB", 1920, 1080);

const USAGE: &str = "\
usage: bench_regions [options]
  --model PATH          ONNX classifier (default: models/efficientnet-lite0.onnx)
  --regions 1,4,16      regions per frame (default 1,4,16)
  --frames N            frames per element run (default 32)
  --batch B             batch-size of the element and the bare session (default 8)
  --threads T           ONNX Runtime intra-op threads (default 1)
  --rounds R            interleaved repetitions, medians reported (default 3)
  --ort-library PATH    libonnxruntime.so (default: $ORT_DYLIB_PATH, else the project's .deps)
  --json PATH           also write the results as JSON";

struct Args {
    model: PathBuf,
    ort_library: PathBuf,
    regions: Vec<usize>,
    frames: usize,
    batch: usize,
    threads: usize,
    rounds: usize,
    json: Option<PathBuf>,
}

impl Args {
    fn parse() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest);
        let mut a = Self {
            model: root.join("models/efficientnet-lite0.onnx"),
            ort_library: std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".deps/onnxruntime/lib/libonnxruntime.so")),
            regions: vec![1, 4, 16],
            frames: 32,
            batch: 8,
            threads: 1,
            rounds: 3,
            json: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            let number = |v: &str| -> Result<usize> {
                v.parse()
                    .with_context(|| format!("{flag}: {v} is not a number"))
            };
            match flag.as_str() {
                "--model" => a.model = value.into(),
                "--ort-library" => a.ort_library = value.into(),
                "--regions" => {
                    a.regions = value.split(',').map(number).collect::<Result<_>>()?;
                }
                "--frames" => a.frames = number(&value)?.max(1),
                "--batch" => a.batch = number(&value)?.max(1),
                "--threads" => a.threads = number(&value)?,
                "--rounds" => a.rounds = number(&value)?.max(1),
                "--json" => a.json = Some(value.into()),
                _ => bail!("unknown option {flag}\n{USAGE}"),
            }
        }
        if a.regions.is_empty() || a.regions.contains(&0) {
            bail!("--regions needs numbers of at least 1");
        }
        Ok(a)
    }
}

/// `n` regions on a grid over the frame (1: the centre third; 4: 2×2; 16: 4×4), each a
/// little smaller than its cell, at odd coordinates.
fn grid(n: usize, width: u32, height: u32) -> Vec<(u32, u32, u32, u32)> {
    let side = (n as f64).sqrt().ceil().max(1.0) as u32;
    let (cw, ch) = (width / side, height / side);
    (0..n as u32)
        .map(|i| {
            let (cx, cy) = (i % side, i / side);
            if n == 1 {
                (width / 3 + 1, height / 3 + 1, width / 3, height / 3)
            } else {
                (cx * cw + 5, cy * ch + 3, cw * 4 / 5, ch * 4 / 5)
            }
        })
        .collect()
}

/// Regions per second through `appsrc ! visionclassify target=roi ! fakesink`.
fn run_element(args: &Args, pool: &Frames, n: usize) -> Result<f64> {
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&pool.caps)
        .format(gst::Format::Time)
        .block(true)
        .max_buffers(2)
        .build();
    let classify = gst::ElementFactory::make("visionclassify")
        .property("model", args.model.to_string_lossy().as_ref())
        .property("ort-library", args.ort_library.to_string_lossy().as_ref())
        .property("threads", args.threads as u32)
        .property("batch-size", args.batch as u32)
        .property_from_str("target", "roi")
        .build()?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()?;
    pipeline.add_many([src.upcast_ref(), &classify, &sink])?;
    gst::Element::link_many([src.upcast_ref(), &classify, &sink])?;
    if pipeline.set_state(gst::State::Playing).is_err() {
        let _ = pipeline.set_state(gst::State::Null);
        bail!("cannot start the pipeline (model {})", args.model.display());
    }
    let boxes = grid(n, FRAMES.1, FRAMES.2);
    let buffers: Vec<gst::Buffer> = (0..args.frames)
        .map(|i| {
            let mut b = pool.buffer(i);
            if let Some(bm) = b.get_mut() {
                for rect in &boxes {
                    VideoRegionOfInterestMeta::add(bm, "object", *rect);
                }
            }
            b
        })
        .collect();
    let bus = pipeline.bus().context("bus")?;
    let started = Instant::now();
    for b in buffers {
        src.push_buffer(b).context("push")?;
    }
    src.end_of_stream().context("eos")?;
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .context("no EOS within 10 minutes")?;
    let elapsed = started.elapsed().as_secs_f64();
    if let gst::MessageView::Error(e) = msg.view() {
        bail!("pipeline error: {} ({:?})", e.error(), e.debug());
    }
    let regions = classify
        .property::<gst::Structure>("stats")
        .get::<u64>("regions")
        .unwrap_or(0);
    pipeline.set_state(gst::State::Null)?;
    let want = (args.frames * n) as u64;
    if regions != want {
        bail!("{regions} regions classified, {want} expected");
    }
    Ok(want as f64 / elapsed)
}

/// The bare session: (regions per second at batch B on a pre-filled tensor, milliseconds to
/// crop and resize one region of `n` into a slot).
fn run_bare(args: &Args, pool: &Frames, n: usize) -> Result<(f64, f64)> {
    let config = RunnerConfig {
        model: args.model.clone(),
        ort_library: Some(args.ort_library.clone()),
        threads: args.threads,
        ..RunnerConfig::default()
    };
    let mut runner = Runner::open(&config, &Overrides::default())?.runner;
    let spec = runner.spec().clone();
    let b = spec.fixed_batch.unwrap_or(args.batch);
    let len = spec.slot.len();
    let mut tensor = vec![0.0f32; len * b];

    let (format, yuv) = pool.pixel_format()?;
    let mut pre = Preprocessor::new(spec.slot, spec.normalize, spec.resize);
    let boxes = grid(n, FRAMES.1, FRAMES.2);
    let mut crops = 0;
    let started = Instant::now();
    for i in 0..args.frames.min(8) {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(
            pool.buffers[i % pool.buffers.len()].as_ref(),
            &pool.info,
        )?;
        let view = video::frame_view(&frame, format, yuv);
        for (j, (x, y, w, h)) in boxes.iter().enumerate() {
            let rect = Rect {
                x: *x as usize,
                y: *y as usize,
                width: *w as usize,
                height: *h as usize,
            };
            let (crop, _) = view.crop(rect)?;
            let slot = &mut tensor[(j % b) * len..(j % b + 1) * len];
            pre.run(&crop, SlotMut::F32(slot))?;
            crops += 1;
        }
    }
    let crop_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(crops);

    let mut scores = Vec::new();
    runner.run(BatchInput::F32(&tensor), b, &mut scores)?;
    let total = args.frames * n;
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        runner.run(BatchInput::F32(&tensor), b, &mut scores)?;
        done += b;
    }
    Ok((done as f64 / started.elapsed().as_secs_f64(), crop_ms))
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    gst::init()?;
    gstvision::plugin_register_static()?;
    if !args.model.is_file() {
        bail!(
            "{} is missing: write it with `target/release/vision-trainer import --out {}`",
            args.model.display(),
            args.model.display()
        );
    }
    let pool = Frames::make(FRAMES.0, FRAMES.1, FRAMES.2)?;
    println!(
        "bench_regions: {} on {}x{} {} frames, batch {}, {} ORT thread(s), {} frames per run, {} rounds",
        args.model.display(),
        FRAMES.1,
        FRAMES.2,
        FRAMES.0,
        args.batch,
        args.threads,
        args.frames,
        args.rounds
    );
    let mut rows = Vec::new();
    for &n in &args.regions {
        let (mut element, mut bare, mut crop) = (Vec::new(), Vec::new(), Vec::<f64>::new());
        for _ in 0..args.rounds {
            element.push(run_element(&args, &pool, n)?);
            let (fps, ms) = run_bare(&args, &pool, n)?;
            bare.push(fps);
            crop.push(ms);
        }
        let ratios: Vec<f64> = element.iter().zip(&bare).map(|(e, b)| e / b).collect();
        let row = serde_json::json!({
            "regions_per_frame": n,
            "element_regions_per_s": median(element.into_iter()),
            "bare_regions_per_s": median(bare.into_iter()),
            "element_over_bare": median(ratios.iter().copied()),
            "crop_resize_ms_per_region": median(crop.into_iter()),
        });
        println!(
            "{n:>3} regions/frame: element {:.1} regions/s, bare session {:.1}/s, element/bare {:.3} (rounds {:?}), crop+resize {:.3} ms/region",
            row["element_regions_per_s"].as_f64().unwrap_or(0.0),
            row["bare_regions_per_s"].as_f64().unwrap_or(0.0),
            row["element_over_bare"].as_f64().unwrap_or(0.0),
            ratios
                .iter()
                .map(|r| (r * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            row["crop_resize_ms_per_region"].as_f64().unwrap_or(0.0),
        );
        rows.push(row);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
