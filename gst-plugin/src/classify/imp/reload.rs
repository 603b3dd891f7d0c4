//! Hot reload glue of `visionclassify`: `model` and `labels-file` set while running,
//! `watch-model`, and the `visionclassify-model` element messages. The work is done by
//! [`Engine::reload`](crate::engine::Engine::reload) (open, check, test run, swap between
//! batches) and [`Watcher`].

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::{CAT, Settings, VisionClassify, lock};
use crate::contract::read_labels_file;
use crate::engine::{EngineError, Reloaded};
use crate::lane::Inferred;
use crate::model::Generation;
use crate::watch::{self, Watcher};

/// Name of the element messages that say which model is live: `state` is `live` (this
/// element's frames come from it: at start, and at the first frame after a switch), `loaded`
/// (a replacement passed the checks and the engine's workers take it before their next
/// batch; posted from the reloading thread, so the `live` of its first frame, posted from
/// the streaming thread, can come before it) or `rejected` (a replacement failed; `rejected` names it, `reason` says why, the
/// other fields describe the model that stays).
pub const MODEL_MESSAGE: &str = "visionclassify-model";

impl VisionClassify {
    /// `model` was set while running: the engine loads and checks it on a thread of its own;
    /// the running model keeps classifying meanwhile.
    pub(super) fn request_reload(&self, path: PathBuf) {
        let Some(run) = self.running() else {
            return;
        };
        if let Some(w) = lock(&self.watcher).as_ref() {
            w.retarget(path.clone());
        }
        let this = self.downgrade();
        let file = path.clone();
        let spawned = std::thread::Builder::new()
            .name("vc-reload".into())
            .spawn(move || {
                let result = run.engine.reload(&file);
                if let Some(this) = this.upgrade() {
                    this.reloaded(&file, &run.engine.live(), result);
                }
            });
        if let Err(e) = spawned {
            gst::element_imp_warning!(
                self,
                gst::CoreError::Thread,
                (
                    "cannot start a thread to load model {}: {e}",
                    path.display()
                )
            );
        }
    }

    /// `watch-model`: watches `path` (the live model's file) until the element stops.
    pub(super) fn watch(&self, path: PathBuf) {
        let this = self.downgrade();
        let started = Watcher::start(path, watch::POLL, watch::DEBOUNCE, move |changed| {
            let Some(this) = this.upgrade() else {
                return;
            };
            let Some(run) = this.running() else {
                return;
            };
            gst::info!(CAT, imp = this, "{} changed: reloading", changed.display());
            let result = run.engine.reload(changed);
            this.reloaded(changed, &run.engine.live(), result);
        });
        match started {
            Ok(w) => *lock(&self.watcher) = Some(w),
            Err(e) => gst::element_imp_warning!(
                self,
                gst::CoreError::Thread,
                ("watch-model: cannot start the watcher thread: {e}")
            ),
        }
    }

    /// Reports a reload's outcome; `live` is the engine's model after it.
    fn reloaded(&self, path: &Path, live: &Generation, result: Result<Reloaded, EngineError>) {
        match result {
            Ok(r) => {
                self.reloads.fetch_add(1, Ordering::SeqCst);
                for w in &r.warnings {
                    gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{w}"));
                }
                gst::info!(
                    CAT,
                    imp = self,
                    "model {} (generation {}) loaded in {:?}, live from the next batch",
                    path.display(),
                    r.model.number,
                    r.took
                );
                let mut s = self.model_structure("loaded", &r.model);
                s.set("load-ms", r.took.as_secs_f64() * 1000.0);
                s.set("tested-on-frame", r.real_frame);
                self.post_model(s);
            }
            Err(e) => {
                self.rejected_reloads.fetch_add(1, Ordering::SeqCst);
                let stays = live.path().to_path_buf();
                let reverted = {
                    let mut settings = lock(&self.settings);
                    let asked = settings.model.as_deref() == Some(path);
                    if asked {
                        settings.model = Some(stays.clone());
                    }
                    asked
                };
                if reverted {
                    self.obj().notify("model");
                }
                if let Some(w) = lock(&self.watcher).as_ref() {
                    w.retarget(stays.clone());
                }
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Settings,
                    ("model reload refused, {} stays live: {e}", stays.display())
                );
                let mut s = self.model_structure("rejected", live);
                s.set("rejected", path.display().to_string());
                s.set("reason", e.to_string());
                self.post_model(s);
            }
        }
    }

    /// `labels-file` set: while running it is checked against the live model and used from
    /// the next frame. `false` when it was refused (the old labels stay).
    pub(super) fn relabel(&self, settings: &Settings, path: Option<&Path>) -> bool {
        let Some(run) = self.running() else {
            return true;
        };
        let labels = match path.map(read_labels_file).transpose() {
            Ok(labels) => labels,
            Err(e) => return self.refuse_labels(path, &e),
        };
        let overrides = settings.overrides(labels);
        match run
            .engine
            .set_overrides(run.deliver.id(), overrides.clone())
        {
            Ok(spec) => {
                if let Some(o) = lock(&self.output).as_mut() {
                    o.relabel(&spec, overrides);
                }
                true
            }
            Err(e) => self.refuse_labels(path, &e.to_string()),
        }
    }

    fn refuse_labels(&self, path: Option<&Path>, reason: &str) -> bool {
        self.rejected_reloads.fetch_add(1, Ordering::SeqCst);
        let name = path.map_or_else(|| "(none)".into(), |p| p.display().to_string());
        gst::element_imp_warning!(
            self,
            gst::ResourceError::Settings,
            ("labels-file {name} refused, the labels stay: {reason}")
        );
        false
    }

    /// Before a frame's result is made: when its answer came from a model this stream has
    /// not read yet, read that model from now on and say so on the bus.
    pub(super) fn follow(&self, answer: &Inferred, pts: Option<gst::ClockTime>) {
        let switched = lock(&self.output).as_mut().map(|o| o.follow(&answer.model));
        match switched {
            Some(Ok(true)) => {
                let mut s = self.model_structure("live", &answer.model);
                s.set("timestamp", pts);
                self.post_model(s);
            }
            Some(Err(e)) => gst::warning!(
                CAT,
                imp = self,
                "the new model does not fit this stream's settings: {e}"
            ),
            Some(Ok(false)) | None => {}
        }
    }

    pub(super) fn model_structure(&self, state: &str, model: &Generation) -> gst::Structure {
        gst::Structure::builder(MODEL_MESSAGE)
            .field("state", state)
            .field("model", model.path().display().to_string())
            .field("name", model.name.as_str())
            .field("version", model.version().unwrap_or_default())
            .field("generation", model.number)
            .build()
    }

    pub(super) fn post_model(&self, s: gst::Structure) {
        let msg = gst::message::Element::builder(s).src(&*self.obj()).build();
        let _ = self.obj().post_message(msg);
    }
}
