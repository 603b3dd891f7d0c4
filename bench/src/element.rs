//! Measurement (a): `appsrc ! visionclassify ! fakesink sync=false`, timed from the first
//! pushed frame to EOS on the bus.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gst::prelude::*;

use crate::Config;
use crate::cpu::CpuTimes;
use crate::frames::Frames;

/// How long any single wait (warm-up, EOS) may take before the run is declared stuck.
const STUCK: Duration = Duration::from_secs(120);

/// One timed run of the element.
#[derive(Debug, Clone, Copy)]
pub struct ElementRun {
    pub fps: f64,
    /// The element's own mean `session.run` time per batch over the timed frames (from its
    /// `stats` property), to tell a slower inference from time lost around it.
    pub inference_ms: f64,
    /// CPU time of the whole process per frame, and time its threads waited for a CPU.
    pub cpu_ms: f64,
    pub wait_ms: f64,
}

/// Frames that reached the sink, for waiting until the warm-up frames are through.
#[derive(Default)]
struct Arrivals {
    count: Mutex<u64>,
    changed: Condvar,
}

/// `appsrc ! visionclassify ! fakesink`, with a probe counting the frames at the sink.
struct Bench {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    classify: gst::Element,
    arrivals: Arc<Arrivals>,
    bus: gst::Bus,
}

fn build(frames: &Frames, model: &Path, ort_library: &Path, config: &Config) -> Result<Bench> {
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&frames.caps)
        .format(gst::Format::Time)
        .block(true)
        // A few frames in flight, so the pushing thread never starves the element.
        .max_bytes(4 * frames.frame_size() as u64)
        .build();
    let classify = gst::ElementFactory::make("visionclassify")
        .property("model", path_str(model)?)
        .property("ort-library", path_str(ort_library)?)
        .property("batch-size", config.batch as u32)
        .property("batch-timeout", config.batch_timeout_ms)
        .property("threads", config.threads as u32)
        .property("inference-workers", config.workers as u32)
        .build()
        .context("cannot make visionclassify")?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .context("cannot make fakesink")?;
    pipeline.add_many([src.upcast_ref(), &classify, &sink])?;
    gst::Element::link_many([src.upcast_ref(), &classify, &sink])?;

    let arrivals = Arc::new(Arrivals::default());
    let sink_pad = sink
        .static_pad("sink")
        .context("fakesink has no sink pad")?;
    let counter = arrivals.clone();
    sink_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let mut count = counter.count.lock().unwrap_or_else(|e| e.into_inner());
        *count += 1;
        counter.changed.notify_all();
        gst::PadProbeReturn::Ok
    });

    let bus = pipeline.bus().context("pipeline has no bus")?;
    Ok(Bench {
        pipeline,
        src,
        classify,
        arrivals,
        bus,
    })
}

/// Runs `config.frames` frames (cycling through the pool) through a fresh pipeline.
/// `warmup` frames go first and are not timed (the session's first runs are slow).
pub fn run(
    frames: &Frames,
    model: &Path,
    ort_library: &Path,
    config: &Config,
    warmup: usize,
) -> Result<ElementRun> {
    let Bench {
        pipeline,
        src,
        classify,
        arrivals,
        bus,
    } = build(frames, model, ort_library, config)?;
    let result = (|| {
        if pipeline.set_state(gst::State::Playing).is_err() {
            bail!("cannot start the pipeline: {}", bus_error(&bus));
        }
        for i in 0..warmup {
            push(&src, frames.buffer(i), &bus)?;
        }
        wait_for(&arrivals, warmup as u64, &bus)?;
        let warm = Stats::read(&classify)?;

        let cpu = CpuTimes::now();
        let started = Instant::now();
        for i in warmup..warmup + config.frames {
            push(&src, frames.buffer(i), &bus)?;
        }
        src.end_of_stream()
            .map_err(|e| anyhow::anyhow!("appsrc refused EOS: {e:?}"))?;
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(STUCK.as_secs()),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .context("no EOS within two minutes")?;
        if let gst::MessageView::Error(e) = msg.view() {
            bail!("pipeline error: {} ({:?})", e.error(), e.debug());
        }
        let elapsed = started.elapsed();
        let cpu_end = CpuTimes::now();
        let (cpu_ms, wait_ms) = cpu_end.per_frame_since(&cpu, config.frames);
        if config.per_thread {
            eprintln!(
                "  element, threads {} batch {}: CPU per thread",
                config.threads, config.batch
            );
            for (thread, ms) in cpu_end.by_thread_since(&cpu, config.frames) {
                eprintln!("    {thread:<28} {ms:6.2} ms/frame");
            }
        }
        let done = Stats::read(&classify)?;
        let batches = done.batches.saturating_sub(warm.batches);
        let inference_ms = if batches > 0 {
            (done.inference_total_ms() - warm.inference_total_ms()) / batches as f64
        } else {
            0.0
        };
        Ok(ElementRun {
            fps: config.frames as f64 / elapsed.as_secs_f64(),
            inference_ms,
            cpu_ms,
            wait_ms,
        })
    })();
    pipeline
        .set_state(gst::State::Null)
        .context("cannot stop the pipeline")?;
    result
}

/// Milliseconds from pushing a frame into `appsrc` to its arrival at the sink, one frame at
/// a time (the next is pushed only after the previous arrived), for `count` frames after
/// `warmup` untimed ones: what the element adds in front of a live stream's display or
/// decision, preprocessing and thread hand-overs included.
pub fn latency(
    frames: &Frames,
    model: &Path,
    ort_library: &Path,
    config: &Config,
    warmup: usize,
    count: usize,
) -> Result<Vec<f64>> {
    let Bench {
        pipeline,
        src,
        arrivals,
        bus,
        ..
    } = build(frames, model, ort_library, config)?;
    let result = (|| {
        if pipeline.set_state(gst::State::Playing).is_err() {
            bail!("cannot start the pipeline: {}", bus_error(&bus));
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..warmup + count {
            let started = Instant::now();
            push(&src, frames.buffer(i), &bus)?;
            wait_for(&arrivals, i as u64 + 1, &bus)?;
            if i >= warmup {
                out.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        Ok(out)
    })();
    pipeline
        .set_state(gst::State::Null)
        .context("cannot stop the pipeline")?;
    result
}

/// The fields of visionclassify's `stats` property the bench uses.
struct Stats {
    batches: u64,
    mean_inference_ms: f64,
}

impl Stats {
    fn read(element: &gst::Element) -> Result<Self> {
        let s = element.property::<gst::Structure>("stats");
        Ok(Self {
            batches: s.get("batches").context("stats has no `batches`")?,
            mean_inference_ms: s
                .get("mean-inference-ms")
                .context("stats has no `mean-inference-ms`")?,
        })
    }

    fn inference_total_ms(&self) -> f64 {
        self.mean_inference_ms * self.batches as f64
    }
}

fn push(src: &gst_app::AppSrc, buffer: gst::Buffer, bus: &gst::Bus) -> Result<()> {
    src.push_buffer(buffer)
        .map_err(|e| anyhow::anyhow!("appsrc push failed ({e:?}): {}", bus_error(bus)))?;
    Ok(())
}

fn wait_for(arrivals: &Arrivals, want: u64, bus: &gst::Bus) -> Result<()> {
    let deadline = Instant::now() + STUCK;
    let mut count = arrivals.count.lock().unwrap_or_else(|e| e.into_inner());
    while *count < want {
        let now = Instant::now();
        if now >= deadline {
            bail!("only {} of {want} frames came through", *count);
        }
        // Short waits, so that an error on the bus is noticed instead of waiting it out.
        let step = (deadline - now).min(Duration::from_millis(100));
        count = arrivals
            .changed
            .wait_timeout(count, step)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            bail!("pipeline error: {} ({:?})", e.error(), e.debug());
        }
    }
    Ok(())
}

/// The first error on the bus, for messages about a failed start or push.
fn bus_error(bus: &gst::Bus) -> String {
    match bus
        .pop_filtered(&[gst::MessageType::Error])
        .as_ref()
        .map(|m| m.view())
    {
        Some(gst::MessageView::Error(e)) => format!("{} ({:?})", e.error(), e.debug()),
        _ => "no error on the bus".into(),
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))
}
