//! Measurements (b) and (c): the bare ONNX Runtime session through `gstvision::model::Runner`
//! on a pre-filled tensor, and the element's preprocessing alone on the pre-made frames.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use gstvision::model::{BatchInput, InputType, Overrides, Runner, RunnerConfig};
use gstvision::preprocess::{Preprocessor, SlotMut};

use crate::Config;
use crate::cpu::CpuTimes;
use crate::frames::{self, Frames};

/// One timed run of the bare session.
#[derive(Debug, Clone, Copy)]
pub struct BareRun {
    pub fps: f64,
    pub inference_ms: f64,
    pub cpu_ms: f64,
    pub wait_ms: f64,
}

/// Opens the model as the element does (same threads, CPU provider, contract).
pub fn open(model: &Path, ort_library: &Path, threads: usize) -> Result<Runner> {
    let config = RunnerConfig {
        model: model.to_path_buf(),
        ort_library: Some(ort_library.to_path_buf()),
        threads,
        ..RunnerConfig::default()
    };
    let opened = Runner::open(&config, &Overrides::default())
        .with_context(|| format!("cannot open {}", model.display()))?;
    Ok(opened.runner)
}

/// Runs `config.frames` frames in batches of `config.batch` (the last one partial, as the
/// element's last batch at EOS) on a fresh session, after `warmup_batches` untimed runs.
pub fn run(
    model: &Path,
    ort_library: &Path,
    config: &Config,
    warmup_batches: usize,
) -> Result<BareRun> {
    let mut runner = open(model, ort_library, config.threads)?;
    let spec = runner.spec().clone();
    anyhow::ensure!(
        spec.input_type == InputType::F32,
        "the bench feeds float32 tensors; {} takes uint8",
        model.display()
    );
    let capacity = spec.fixed_batch.unwrap_or(config.batch).max(config.batch);
    let tensor = normalized_noise(spec.slot.len() * capacity);
    let mut scores = Vec::new();
    let mut infer = |slots: usize| {
        runner
            .run(BatchInput::F32(&tensor), slots, &mut scores)
            .context("inference failed")
    };
    for _ in 0..warmup_batches {
        infer(config.batch)?;
    }
    let cpu = CpuTimes::now();
    let started = Instant::now();
    let mut left = config.frames;
    let mut batches = 0;
    while left > 0 {
        let slots = left.min(config.batch);
        infer(slots)?;
        left -= slots;
        batches += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_ms, wait_ms) = CpuTimes::now().per_frame_since(&cpu, config.frames);
    Ok(BareRun {
        fps: config.frames as f64 / elapsed,
        inference_ms: elapsed * 1000.0 / f64::from(batches.max(1)),
        cpu_ms,
        wait_ms,
    })
}

/// Milliseconds per frame of the element's preprocessing (map, resize, normalise into a
/// slot) called from this thread, over `count` frames of the pool: wall time, and CPU time
/// of all threads (OpenCV spreads a resize over its own worker threads).
pub fn preprocess_ms(runner: &Runner, frames: &Frames, count: usize) -> Result<(f64, f64)> {
    let spec = runner.spec();
    let mut preprocessor = Preprocessor::new(spec.slot, spec.normalize, spec.resize);
    let mut slot = vec![0.0_f32; spec.slot.len()];
    let (format, yuv) = frames.pixel_format()?;
    let cpu = CpuTimes::now();
    let started = Instant::now();
    for i in 0..count {
        let buffer = &frames.buffers[i % frames.buffers.len()];
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), &frames.info)
                .context("cannot map a test frame")?;
        preprocessor
            .run(&frames::view(&frame, format, yuv), SlotMut::F32(&mut slot))
            .context("preprocessing failed")?;
    }
    let wall = started.elapsed().as_secs_f64() * 1000.0 / count.max(1) as f64;
    let (cpu_ms, _) = CpuTimes::now().per_frame_since(&cpu, count);
    Ok((wall, cpu_ms))
}

/// Per-frame milliseconds at batch 1 on one session, for `count` frames of the pool after
/// `warmup` untimed ones: `session.run` on a tensor already filled (what the model costs),
/// and preprocessing the frame plus `session.run` done inline on this thread (the same work as
/// the element, without its threads and queues).
pub fn latency(
    model: &Path,
    ort_library: &Path,
    frames: &Frames,
    threads: usize,
    warmup: usize,
    count: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut runner = open(model, ort_library, threads)?;
    let spec = runner.spec().clone();
    let mut preprocessor = Preprocessor::new(spec.slot, spec.normalize, spec.resize);
    let capacity = spec.fixed_batch.unwrap_or(1);
    let mut tensor = normalized_noise(spec.slot.len() * capacity);
    let (format, yuv) = frames.pixel_format()?;
    let mut scores = Vec::new();
    let (mut run_only, mut inline) = (Vec::new(), Vec::new());
    for i in 0..warmup + count {
        let started = Instant::now();
        runner
            .run(BatchInput::F32(&tensor), 1, &mut scores)
            .context("inference failed")?;
        let run_ms = started.elapsed().as_secs_f64() * 1000.0;

        let started = Instant::now();
        let buffer = &frames.buffers[i % frames.buffers.len()];
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), &frames.info)
                .context("cannot map a test frame")?;
        preprocessor
            .run(
                &frames::view(&frame, format, yuv),
                SlotMut::F32(&mut tensor[..spec.slot.len()]),
            )
            .context("preprocessing failed")?;
        runner
            .run(BatchInput::F32(&tensor), 1, &mut scores)
            .context("inference failed")?;
        if i >= warmup {
            run_only.push(run_ms);
            inline.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((run_only, inline))
}

/// Deterministic values spread like a normalised image (roughly -2..2), so that no kernel
/// gets an easy all-zero input.
fn normalized_noise(len: usize) -> Vec<f32> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            // xorshift32
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}
