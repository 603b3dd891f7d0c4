//! Running a pipeline with `visionclassify` inside the test process, to see what only the
//! buffers carry: the `VisionClassificationMeta` of every frame, including the frames that
//! reuse an earlier result (those are not posted on the bus).

use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use gst::prelude::*;

use crate::messages::Classified;
use crate::paths::plugin_file;
use crate::video::run_pipeline;

/// The meta's registered name (see gst-plugin/src/meta.rs).
pub const META_NAME: &str = "VisionClassificationMeta";

/// A buffer's meta (`None`: it had none), or why it did not parse.
type MetaOrError = Result<Option<Classified>, String>;

/// Loads the built plugin (`target/debug/libgstvision.so`) into this process, once.
pub fn load_plugin() -> Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let load = || -> Result<()> {
                gst::init().context("initialising GStreamer")?;
                let file = plugin_file()?;
                gst::Plugin::load_file(&file)
                    .with_context(|| format!("loading {}", file.display()))?;
                if gst::ElementFactory::find("visionclassify").is_none() {
                    bail!("{} has no visionclassify element", file.display());
                }
                Ok(())
            };
            load().map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Runs `description` to EOS and returns, for every buffer reaching the element named
/// `sink`, its classification meta (`None` for a buffer without one), in arrival order.
pub fn metas_at_sink(description: &str) -> Result<Vec<Option<Classified>>> {
    load_plugin()?;
    let seen: Arc<Mutex<Vec<MetaOrError>>> = Arc::default();
    let pipeline = gst::parse::launch(description)
        .with_context(|| format!("parsing pipeline: {description}"))?;
    let bin = pipeline
        .downcast_ref::<gst::Bin>()
        .context("the description is not a pipeline")?;
    let sink = bin
        .by_name("sink")
        .context("the pipeline has no element named `sink`")?;
    let pad = sink.static_pad("sink").context("`sink` has no sink pad")?;
    let store = seen.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            let item = match gst::meta::CustomMeta::from_buffer(buffer, META_NAME) {
                Err(_) => Ok(None),
                Ok(meta) => Classified::from_structure(
                    String::new(),
                    meta.structure(),
                    buffer.pts().map(|t| t.nseconds()),
                )
                .map(Some)
                .map_err(|e| format!("{e:#}")),
            };
            store.lock().unwrap_or_else(|e| e.into_inner()).push(item);
        }
        gst::PadProbeReturn::Ok
    });
    run_pipeline(&pipeline).with_context(|| format!("pipeline: {description}"))?;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    seen.into_iter()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| anyhow!("buffer {i}: {e}")))
        .collect()
}
