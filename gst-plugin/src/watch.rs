//! `watch-model`: notices that the model file was replaced and asks for a reload.
//!
//! Deployment tools replace a file by writing a new one beside it and renaming it over the old
//! (atomic on one file system); others copy over it in place. The watcher polls the file's
//! identity (device, inode, size, modification time) and reports a change once the new
//! identity has held still for the debounce time, so a file still being written is not loaded
//! half-way. Polling needs no extra dependency and works on every file system, including
//! bind mounts and network shares where inotify sees nothing.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_millis(250);
/// How long a new file must stay unchanged before it is loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    /// `None` when the file is missing or unreadable (for a moment, during a replacement).
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// The decision, apart from the thread and the clock: fed each look at the file, it says
/// when a changed file has held still for `debounce`.
#[derive(Debug)]
pub struct Tracker {
    last: Option<FileId>,
    pending: Option<(FileId, Instant)>,
    debounce: Duration,
}

impl Tracker {
    /// `current`: the file's identity when watching starts (the model loaded).
    pub fn new(current: Option<FileId>, debounce: Duration) -> Self {
        Self {
            last: current,
            pending: None,
            debounce,
        }
    }

    /// `true` when the file should be loaded now.
    pub fn observe(&mut self, seen: Option<FileId>, now: Instant) -> bool {
        let Some(id) = seen else {
            // Missing for a moment (deleted before the new one is written): wait for it.
            self.pending = None;
            return false;
        };
        if Some(id) == self.last {
            self.pending = None;
            return false;
        }
        match self.pending {
            Some((p, since)) if p == id => {
                if now.saturating_duration_since(since) >= self.debounce {
                    self.last = Some(id);
                    self.pending = None;
                    true
                } else {
                    false
                }
            }
            _ => {
                self.pending = Some((id, now));
                false
            }
        }
    }
}

/// A thread that watches one file until dropped.
pub struct Watcher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    target: Arc<Mutex<PathBuf>>,
    handle: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Watches `path` and calls `changed` (on the watcher's thread) each time a new version
    /// of the file has held still for `debounce`.
    pub fn start(
        path: PathBuf,
        poll: Duration,
        debounce: Duration,
        changed: impl Fn(&Path) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let target = Arc::new(Mutex::new(path.clone()));
        let watched = target.clone();
        let mut path = path;
        let mut tracker = Tracker::new(FileId::of(&path), debounce);
        let handle = std::thread::Builder::new()
            .name("vc-watch-model".into())
            .spawn(move || {
                let (lock, cond) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    stopped = cond
                        .wait_timeout(stopped, poll)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if *stopped {
                        return;
                    }
                    let now_watched = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if now_watched != path {
                        // Another file to watch: its current version is the one loaded.
                        tracker = Tracker::new(FileId::of(&now_watched), debounce);
                        path = now_watched;
                    }
                    if tracker.observe(FileId::of(&path), Instant::now()) {
                        drop(stopped);
                        changed(&path);
                        stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                    }
                }
            })?;
        Ok(Self {
            stop,
            target,
            handle: Some(handle),
        })
    }

    /// Watches `path` from now on (the `model` property changed); its version now is taken
    /// as loaded. Does not wait for the thread.
    pub fn retarget(&self, path: PathBuf) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = path;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let (lock, cond) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cond.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_rename_is_a_new_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"old").expect("write");
        let before = FileId::of(&model).expect("exists");
        let next = dir.path().join(".m.onnx.new");
        std::fs::write(&next, b"new").expect("write");
        std::fs::rename(&next, &model).expect("rename");
        let after = FileId::of(&model).expect("exists");
        assert_ne!(before, after);
        assert_eq!(FileId::of(&dir.path().join("missing")), None);
    }

    fn id(n: u64) -> Option<FileId> {
        Some(FileId {
            dev: 1,
            ino: n,
            len: 10,
            mtime_ns: 0,
        })
    }

    #[test]
    fn a_change_fires_once_after_holding_still() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Tracker::new(id(1), Duration::from_millis(500));
        assert!(!t.observe(id(1), ms(0)), "unchanged");
        assert!(!t.observe(id(2), ms(250)), "changed: wait");
        assert!(!t.observe(id(2), ms(500)), "still within the debounce");
        assert!(t.observe(id(2), ms(750)), "held still for 500 ms");
        assert!(!t.observe(id(2), ms(1000)), "fired once");
        assert!(!t.observe(id(2), ms(5000)), "fired once");
    }

    #[test]
    fn a_file_still_changing_waits() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Tracker::new(id(1), Duration::from_millis(500));
        assert!(!t.observe(id(2), ms(0)));
        assert!(!t.observe(id(3), ms(400)), "written again: start over");
        assert!(!t.observe(id(3), ms(800)));
        assert!(!t.observe(None, ms(900)), "gone for a moment");
        assert!(!t.observe(id(4), ms(1000)));
        assert!(t.observe(id(4), ms(1500)));
    }

    #[test]
    fn going_back_to_the_loaded_file_is_no_change() {
        let t0 = Instant::now();
        let mut t = Tracker::new(id(1), Duration::ZERO);
        assert!(!t.observe(None, t0));
        assert!(!t.observe(id(1), t0));
    }

    #[test]
    fn the_thread_reports_a_replaced_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"old").expect("write");
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = Watcher::start(
            model.clone(),
            Duration::from_millis(5),
            Duration::from_millis(10),
            move |p| {
                let _ = tx.send(p.to_path_buf());
            },
        )
        .expect("thread starts");
        let next = dir.path().join(".m.onnx.new");
        std::fs::write(&next, b"new version").expect("write");
        std::fs::rename(&next, &model).expect("rename");
        // A bound against a hang, not a timing assumption: the report comes after 2 polls.
        let got = rx.recv_timeout(Duration::from_secs(60)).expect("reported");
        assert_eq!(got, model);
        drop(watcher);
    }
}
