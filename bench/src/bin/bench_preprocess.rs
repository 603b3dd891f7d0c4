//! `bench_preprocess`: the element's preprocessing alone — one 1920×1080 frame to a 224×224
//! NCHW float slot with ImageNet normalisation, per pixel format and resize filter — against
//! OpenCV's `cv::resize` of the same RGB frame to 224×224 (`INTER_AREA`, and `INTER_LINEAR`),
//! which only resizes (no colour conversion, normalisation or layout), measured in the same
//! run. CPU time is the scheduler's per-thread figure, so a busy machine shows up as waiting,
//! not as cost. Rounds are interleaved and medians reported.
//!
//! ```text
//! cargo run --release -p vision-bench --bin bench_preprocess -- [--frames N] [--rounds R]
//!     [--formats RGB,RGBx,BGRx,NV12,I420] [--json PATH]
//! ```

use std::time::Instant;

use anyhow::{Context, Result, bail};
use gstvision::preprocess::{
    ChannelOrder, Layout, Normalize, Preprocessor, ResizeFilter, ResizeMode, SlotMut, SlotSpec,
};
use opencv::{core, imgproc, prelude::*};

#[allow(dead_code)]
#[path = "../cpu.rs"]
mod cpu;
#[allow(dead_code)]
#[path = "../frames.rs"]
mod frames;
#[path = "../median.rs"]
mod median;
use cpu::CpuTimes;
use frames::Frames;
use median::median;

const USAGE: &str = "\
usage: bench_preprocess [options]
  --frames N        frames per measurement (default 200)
  --rounds R        interleaved repetitions, medians reported (default 5)
  --formats LIST    pixel formats (default RGB,RGBx,BGRx,NV12,I420)
  --filters LIST    resize filters (default area,bilinear,nearest)
  --no-opencv       leave the OpenCV baselines out (for profiling)
  --json PATH       also write the medians as JSON";

const SPEC: SlotSpec = SlotSpec {
    layout: Layout::Nchw,
    width: 224,
    height: 224,
    channels: ChannelOrder::Rgb,
};

const IMAGENET: Normalize = Normalize {
    scale: 1.0 / 255.0,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

struct Args {
    frames: usize,
    rounds: usize,
    formats: Vec<String>,
    filters: Vec<ResizeFilter>,
    opencv: bool,
    json: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        frames: 200,
        rounds: 5,
        formats: ["RGB", "RGBx", "BGRx", "NV12", "I420"]
            .map(String::from)
            .to_vec(),
        filters: vec![
            ResizeFilter::Area,
            ResizeFilter::Bilinear,
            ResizeFilter::Nearest,
        ],
        opencv: true,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--frames" => args.frames = value()?.parse().context("--frames")?,
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--formats" => args.formats = value()?.split(',').map(String::from).collect(),
            "--json" => args.json = Some(value()?),
            "--no-opencv" => args.opencv = false,
            "--filters" => {
                args.filters = value()?
                    .split(',')
                    .map(|f| match f {
                        "area" => Ok(ResizeFilter::Area),
                        "bilinear" => Ok(ResizeFilter::Bilinear),
                        "nearest" => Ok(ResizeFilter::Nearest),
                        other => bail!("unknown filter {other}"),
                    })
                    .collect::<Result<_>>()?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if args.frames == 0 || args.rounds == 0 {
        bail!("--frames and --rounds must be at least 1");
    }
    Ok(args)
}

/// (wall, cpu) milliseconds per frame of `work` over `count` frames on this thread.
fn measure(count: usize, mut work: impl FnMut(usize) -> Result<()>) -> Result<(f64, f64)> {
    work(0)?; // warm-up: buffers and weights are made on the first frame
    let cpu = CpuTimes::now();
    let started = Instant::now();
    for i in 0..count {
        work(i)?;
    }
    let wall = started.elapsed().as_secs_f64() * 1000.0 / count as f64;
    let (cpu_ms, _) = CpuTimes::now().per_frame_since(&cpu, count);
    Ok((wall, cpu_ms))
}

fn preprocess(frames: &Frames, filter: ResizeFilter, count: usize) -> Result<(f64, f64)> {
    let (format, yuv) = frames.pixel_format()?;
    let mut pre = Preprocessor::new(SPEC, IMAGENET, ResizeMode::Stretch).with_filter(filter);
    let mut slot = vec![0.0_f32; SPEC.len()];
    measure(count, |i| {
        let buffer = &frames.buffers[i % frames.buffers.len()];
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), &frames.info)
                .context("cannot map a test frame")?;
        pre.run(&frames::view(&frame, format, yuv), SlotMut::F32(&mut slot))
            .context("preprocessing failed")
    })
}

/// Owned copies of the RGB pool's frames, for OpenCV to read.
struct RgbCopies {
    frames: Vec<Vec<u8>>,
    width: i32,
    height: i32,
    stride: usize,
}

impl RgbCopies {
    fn new(pool: &Frames) -> Result<Self> {
        let frames = pool
            .buffers
            .iter()
            .map(|b| Ok(b.map_readable().context("map")?.as_slice().to_vec()))
            .collect::<Result<Vec<Vec<u8>>>>()?;
        Ok(Self {
            frames,
            width: pool.info.width() as i32,
            height: pool.info.height() as i32,
            stride: pool.info.stride()[0] as usize,
        })
    }

    /// Frame `i` of the pool (cycling) as an 8-bit, 3-channel `Mat` header over the copy.
    fn mat(&self, i: usize) -> Result<core::Mat> {
        let data = &self.frames[i % self.frames.len()];
        if data.len() < self.stride * self.height as usize {
            bail!("short RGB frame");
        }
        // SAFETY: `data` holds `height` rows of `stride` bytes and lives as long as `self`,
        // which outlives the header's use (the input of a `resize` in the same closure call);
        // OpenCV only reads it.
        unsafe {
            core::Mat::new_rows_cols_with_data_unsafe(
                self.height,
                self.width,
                core::CV_8UC3,
                data.as_ptr().cast_mut().cast(),
                self.stride,
            )
        }
        .context("wrap frame")
    }
}

/// `cv::resize` of the RGB frames to 224×224 with `interpolation`, on one OpenCV thread (the
/// element preprocesses on one thread too).
fn opencv_resize(frames: &Frames, interpolation: i32, count: usize) -> Result<(f64, f64)> {
    let rgb = RgbCopies::new(frames)?;
    let mut out = core::Mat::default();
    measure(count, |i| {
        let src = rgb.mat(i)?;
        imgproc::resize(
            &src,
            &mut out,
            core::Size::new(224, 224),
            0.0,
            0.0,
            interpolation,
        )
        .context("cv::resize")
    })
}

/// The path this crate's resampler replaced (issue 16), rebuilt for comparison: exact 2×2
/// `INTER_AREA` halvings while both sides stay at least twice the target, a last `INTER_AREA`
/// step, then normalisation into the NCHW slot, for RGB frames.
fn opencv_path(frames: &Frames, count: usize) -> Result<(f64, f64)> {
    let rgb = RgbCopies::new(frames)?;
    let (w, h) = (rgb.width, rgb.height);
    let (mut a, mut b, mut last) = (
        core::Mat::default(),
        core::Mat::default(),
        core::Mat::default(),
    );
    let mut slot = vec![0.0_f32; SPEC.len()];
    let plane = SPEC.width * SPEC.height;
    let mul: [f32; 3] = [0, 1, 2].map(|c| IMAGENET.scale / IMAGENET.std[c]);
    let add: [f32; 3] = [0, 1, 2].map(|c| -IMAGENET.mean[c] / IMAGENET.std[c]);
    measure(count, |i| {
        let src = rgb.mat(i)?;
        let (mut cw, mut ch) = (w, h);
        let mut from_a: Option<bool> = None;
        while cw >= 2 * SPEC.width as i32 && ch >= 2 * SPEC.height as i32 {
            let size = core::Size::new(cw / 2, ch / 2);
            let even = core::Rect::new(0, 0, cw & !1, ch & !1);
            match from_a {
                None => {
                    let roi = core::Mat::roi(&src, even)?;
                    imgproc::resize(&roi, &mut a, size, 0.0, 0.0, imgproc::INTER_AREA)?;
                    from_a = Some(true);
                }
                Some(true) => {
                    let roi = core::Mat::roi(&a, even)?;
                    imgproc::resize(&roi, &mut b, size, 0.0, 0.0, imgproc::INTER_AREA)?;
                    from_a = Some(false);
                }
                Some(false) => {
                    let roi = core::Mat::roi(&b, even)?;
                    imgproc::resize(&roi, &mut a, size, 0.0, 0.0, imgproc::INTER_AREA)?;
                    from_a = Some(true);
                }
            }
            (cw, ch) = (cw / 2, ch / 2);
        }
        let target = core::Size::new(SPEC.width as i32, SPEC.height as i32);
        match from_a {
            None => imgproc::resize(&src, &mut last, target, 0.0, 0.0, imgproc::INTER_AREA)?,
            Some(true) => imgproc::resize(&a, &mut last, target, 0.0, 0.0, imgproc::INTER_AREA)?,
            Some(false) => imgproc::resize(&b, &mut last, target, 0.0, 0.0, imgproc::INTER_AREA)?,
        }
        let pixels = last.data_bytes().context("resized bytes")?;
        for (p, px) in pixels.chunks_exact(3).take(plane).enumerate() {
            for c in 0..3 {
                slot[c * plane + p] = f32::from(px[c]) * mul[c] + add[c];
            }
        }
        std::hint::black_box(&slot);
        Ok(())
    })
}

/// Reading every byte of the RGB frames once (a vectorised sum): the memory floor under any
/// preprocessing that looks at every pixel, as area averaging must.
fn read_once(frames: &Frames, count: usize) -> Result<(f64, f64)> {
    let mut total = 0_u64;
    let result = measure(count, |i| {
        let map = frames.buffers[i % frames.buffers.len()]
            .map_readable()
            .context("map")?;
        let mut lanes = [0_u32; 32];
        for chunk in map.as_slice().chunks_exact(32 * 256) {
            let mut part = [0_u16; 32];
            for block in chunk.chunks_exact(32) {
                for (p, &b) in part.iter_mut().zip(block) {
                    *p = p.wrapping_add(u16::from(b));
                }
            }
            for (l, p) in lanes.iter_mut().zip(part) {
                *l += u32::from(p);
            }
        }
        total = total.wrapping_add(lanes.iter().map(|&l| u64::from(l)).sum::<u64>());
        Ok(())
    });
    std::hint::black_box(total);
    result
}

fn main() -> Result<()> {
    let args = parse_args()?;
    gst::init()?;
    opencv::core::set_num_threads(1).context("cv::setNumThreads")?;
    let pools = args
        .formats
        .iter()
        .map(|f| Ok((f.clone(), Frames::make(f, 1920, 1080)?)))
        .collect::<Result<Vec<_>>>()?;
    let rgb = Frames::make("RGB", 1920, 1080)?;

    // (format, filter, samples of (wall, cpu))
    type Row = (String, String, Vec<(f64, f64)>);
    let mut rows: Vec<Row> = Vec::new();
    let mut baselines: Vec<(&str, Vec<(f64, f64)>)> = vec![
        ("cv::resize INTER_AREA (RGB, resize only)", Vec::new()),
        ("cv::resize INTER_LINEAR (RGB, resize only)", Vec::new()),
        ("reading the RGB frame once (memory floor)", Vec::new()),
        (
            "the replaced OpenCV path: area halvings + area + normalise (RGB)",
            Vec::new(),
        ),
    ];
    for (format, _) in &pools {
        for &filter in &args.filters {
            rows.push((format.clone(), filter.name().to_owned(), Vec::new()));
        }
    }
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        if args.opencv {
            baselines[0]
                .1
                .push(opencv_resize(&rgb, imgproc::INTER_AREA, args.frames)?);
        }
        let mut r = 0;
        for (_, pool) in &pools {
            for &filter in &args.filters {
                rows[r].2.push(preprocess(pool, filter, args.frames)?);
                r += 1;
            }
        }
        if args.opencv {
            baselines[1]
                .1
                .push(opencv_resize(&rgb, imgproc::INTER_LINEAR, args.frames)?);
        }
        baselines[2].1.push(read_once(&rgb, args.frames)?);
        if args.opencv {
            baselines[3].1.push(opencv_path(&rgb, args.frames)?);
        }
    }

    let med = |s: &[(f64, f64)]| (median(s.iter().map(|p| p.0)), median(s.iter().map(|p| p.1)));
    let (_, area_cpu) = med(&baselines[0].1);
    let (_, old_cpu) = med(&baselines[3].1);
    println!(
        "1920x1080 -> 224x224 NCHW f32 (ImageNet normalisation), ms per frame, medians of {} rounds of {} frames",
        args.rounds, args.frames
    );
    println!(
        "format | filter   |  wall |   cpu | cpu / cv::resize INTER_AREA | cpu / replaced OpenCV path (RGB)"
    );
    let mut json_rows = Vec::new();
    for (format, filter, samples) in &rows {
        let (wall, cpu) = med(samples);
        println!(
            "{format:>6} | {filter:<8} | {wall:>5.3} | {cpu:>5.3} | {:>27.2} | {:.2}",
            cpu / area_cpu,
            cpu / old_cpu
        );
        json_rows.push(serde_json::json!({
            "format": format, "filter": filter, "wall_ms": wall, "cpu_ms": cpu,
            "cpu_vs_opencv_area": cpu / area_cpu,
            "cpu_vs_replaced_opencv_path": cpu / old_cpu,
        }));
    }
    for (label, samples) in baselines.iter().filter(|b| !b.1.is_empty()) {
        let (wall, cpu) = med(samples);
        println!("{label}: wall {wall:.3} ms, cpu {cpu:.3} ms");
        json_rows.push(serde_json::json!({"baseline": label, "wall_ms": wall, "cpu_ms": cpu}));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json_rows)?)
            .with_context(|| format!("cannot write {path}"))?;
    }
    Ok(())
}
