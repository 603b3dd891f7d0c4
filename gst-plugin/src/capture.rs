//! Capture of doubtful frames for retraining: which frames to keep ([`Policy`]: below a
//! confidence, one in N, at most a rate), and a writer thread that stores them as
//! `DIR/<predicted-label>/<sensor>-<pts>.png` with a JSON sidecar of the same stem, within a
//! disk budget (the oldest captures go first). The layout is the trainer's labelled-folder
//! input (`--data folder:DIR`, `--extra-data folder:DIR`): a person corrects a label by moving
//! the files to another class folder.
//!
//! The streaming side only decides and hands over a small RGB image; the queue to the writer
//! is bounded and never waited on: when it is full the frame is not captured, and counted.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
#[cfg(test)]
use std::time::Duration;
use std::time::{Instant, SystemTime};

/// Captured frames waiting for the writer at most; more are not captured (counted).
pub const QUEUE: usize = 8;

/// What to capture and where.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    pub dir: PathBuf,
    /// Capture frames whose best confidence is below this (0 = off).
    pub below: f32,
    /// Capture one classified frame in this many, whatever its confidence (0 = off).
    pub every: u64,
    /// Longest side of the stored image in pixels (0 = the frame's own size).
    pub max_side: u32,
    /// Disk budget of the folder's captures in bytes (0 = none): the oldest are removed.
    pub max_bytes: u64,
    /// Captures per second at most (0 = no limit).
    pub max_rate: f64,
    /// First part of the file names (the element's name).
    pub sensor: String,
}

impl CaptureConfig {
    pub fn is_active(&self) -> bool {
        self.below > 0.0 || self.every > 0
    }
}

/// Why a frame was captured (written into its sidecar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its confidence was below `capture-below`.
    Below,
    /// The reference sample of `capture-every`.
    Every,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Below => "below",
            Self::Every => "every",
        }
    }
}

/// The decision for one classified frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Skip,
    Capture(Reason),
    /// It qualified, but the rate limit was reached.
    RateLimited,
}

/// Which frames to capture: pure, with time as an argument.
#[derive(Debug)]
pub struct Policy {
    below: f32,
    every: u64,
    classified: u64,
    /// Token bucket: up to one second's worth of captures at once.
    rate: f64,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Policy {
    pub fn new(config: &CaptureConfig) -> Self {
        let rate = config.max_rate.max(0.0);
        Self {
            below: config.below,
            every: config.every,
            classified: 0,
            rate,
            tokens: rate.max(1.0),
            refilled: None,
        }
    }

    /// Decides for the next classified frame, whose best confidence is `confidence`.
    pub fn decide(&mut self, confidence: f32, now: Instant) -> Decision {
        let n = self.classified;
        self.classified += 1;
        let reason = if self.every > 0 && n.is_multiple_of(self.every) {
            Reason::Every
        } else if confidence < self.below {
            Reason::Below
        } else {
            return Decision::Skip;
        };
        if self.rate <= 0.0 {
            return Decision::Capture(reason);
        }
        let burst = self.rate.max(1.0);
        if let Some(then) = self.refilled {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(burst);
        }
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Decision::Capture(reason)
        } else {
            Decision::RateLimited
        }
    }
}

/// The size an image of `width × height` is stored at: the longer side at most `max_side`
/// (0 = unchanged), the aspect ratio kept, each side at least 1.
pub fn fit(width: usize, height: usize, max_side: u32) -> (usize, usize) {
    let max_side = max_side as usize;
    let longer = width.max(height);
    if max_side == 0 || longer <= max_side {
        return (width.max(1), height.max(1));
    }
    let scale = |side: usize| ((side * max_side + longer / 2) / longer).max(1);
    (scale(width), scale(height))
}

/// A label as a folder name: path separators and control characters become `_`, and a name
/// that is empty or only dots becomes `_`.
pub fn folder_name(label: &str) -> String {
    let name: String = label
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.trim_matches('.').is_empty() {
        "_".into()
    } else {
        name
    }
}

/// An 8-bit RGB image, rows packed.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// One frame to store.
#[derive(Debug)]
pub struct Shot {
    /// The predicted label: the class folder.
    pub label: String,
    /// The file stem, e.g. `cam1-000000001234567890`.
    pub stem: String,
    pub image: RgbImage,
    pub sidecar: serde_json::Value,
}

/// The file stem of a capture: the sensor, then the timestamp in nanoseconds (20 digits, so
/// names sort in time order), or the frame number when the buffer has no timestamp.
pub fn stem(sensor: &str, pts_ns: Option<u64>, frame: u64) -> String {
    let sensor = folder_name(sensor);
    match pts_ns {
        Some(ns) => format!("{sensor}-{ns:020}"),
        None => format!("{sensor}-frame{frame:012}"),
    }
}

/// Counters of a capture (all since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames written (image and sidecar).
    pub saved: u64,
    /// Frames not captured because the writer's queue was full.
    pub dropped: u64,
    /// Frames not captured because of `capture-max-rate`.
    pub rate_limited: u64,
    /// Earlier captures removed to stay within `capture-max-bytes`.
    pub evicted: u64,
    /// Frames that could not be written (the error is reported).
    pub errors: u64,
    /// Bytes the folder's captures take now (as far as this writer knows).
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    saved: AtomicU64,
    dropped: AtomicU64,
    rate_limited: AtomicU64,
    evicted: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

/// The captures in the folder, oldest first, and their total size.
#[derive(Debug, Default)]
struct Budget {
    max: u64,
    files: VecDeque<(PathBuf, u64)>,
    total: u64,
}

impl Budget {
    /// The images (`*/*.png`) already in `dir` with their sidecars, oldest first.
    fn scan(dir: &Path, max: u64) -> Self {
        let mut found = Vec::new();
        for class in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(entries) = std::fs::read_dir(class.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "png")
                    && let Ok(m) = e.metadata()
                {
                    let sidecar = std::fs::metadata(path.with_extension("json"))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    let when = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    found.push((when, path, m.len() + sidecar));
                }
            }
        }
        found.sort();
        let total = found.iter().map(|f| f.2).sum();
        Self {
            max,
            files: found.into_iter().map(|(_, p, n)| (p, n)).collect(),
            total,
        }
    }

    /// Adds a capture; returns the oldest ones to remove so the total fits the budget (never
    /// the one just added).
    fn add(&mut self, image: PathBuf, bytes: u64) -> Vec<PathBuf> {
        self.files.push_back((image, bytes));
        self.total += bytes;
        let mut gone = Vec::new();
        while self.max > 0 && self.total > self.max && self.files.len() > 1 {
            if let Some((p, n)) = self.files.pop_front() {
                self.total -= n;
                gone.push(p);
            }
        }
        gone
    }
}

/// The writer thread and its queue; dropping it writes what is queued and joins the thread.
pub struct Capture {
    tx: Option<SyncSender<Shot>>,
    handle: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Capture {
    /// Creates `config.dir` if needed, counts the captures already in it against the budget,
    /// and starts the writer. `on_error` is called (on the writer thread) for each frame that
    /// cannot be written.
    pub fn start(
        config: &CaptureConfig,
        on_error: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        let budget = Budget::scan(&config.dir, config.max_bytes);
        let counters = Arc::new(Counters::default());
        counters.bytes.store(budget.total, Ordering::Relaxed);
        let (tx, rx) = sync_channel(QUEUE);
        let dir = config.dir.clone();
        let for_writer = counters.clone();
        let handle = std::thread::Builder::new()
            .name("vc-capture".into())
            .spawn(move || write_all(&dir, rx, budget, &for_writer, &on_error))?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            counters,
        })
    }

    /// Hands a frame to the writer without waiting; `false` (and counted) when the queue is
    /// full.
    pub fn offer(&self, shot: Shot) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(shot) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Counts a frame the policy's rate limit kept out.
    pub fn rate_limited(&self) {
        self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CaptureStats {
        let c = &self.counters;
        CaptureStats {
            saved: c.saved.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn write_all(
    dir: &Path,
    rx: Receiver<Shot>,
    mut budget: Budget,
    counters: &Counters,
    on_error: &dyn Fn(String),
) {
    for shot in rx {
        match write_one(dir, &shot) {
            Ok((image, bytes)) => {
                counters.saved.fetch_add(1, Ordering::Relaxed);
                for old in budget.add(image, bytes) {
                    let _ = std::fs::remove_file(&old);
                    let _ = std::fs::remove_file(old.with_extension("json"));
                    counters.evicted.fetch_add(1, Ordering::Relaxed);
                }
                counters.bytes.store(budget.total, Ordering::Relaxed);
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                on_error(e);
            }
        }
    }
}

/// Writes the image and then its sidecar, each to a hidden temporary name renamed into place,
/// so a reader (the trainer) never sees half a file. Returns the image path and the bytes of
/// both files.
fn write_one(dir: &Path, shot: &Shot) -> Result<(PathBuf, u64), String> {
    let folder = dir.join(folder_name(&shot.label));
    std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let png = encode_png(&shot.image)?;
    let image = folder.join(format!("{}.png", shot.stem));
    put(&image, &png)?;
    let mut json = serde_json::to_vec_pretty(&shot.sidecar).map_err(|e| e.to_string())?;
    json.push(b'\n');
    put(&image.with_extension("json"), &json)?;
    Ok((image, (png.len() + json.len()) as u64))
}

fn put(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

/// The image as an 8-bit RGB PNG.
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, String> {
    let err = |e: png::EncodingError| format!("PNG encoding: {e}");
    let (w, h) = (
        u32::try_from(image.width).map_err(|e| e.to_string())?,
        u32::try_from(image.height).map_err(|e| e.to_string())?,
    );
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(err)?;
    writer.write_image_data(&image.data).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> CaptureConfig {
        CaptureConfig {
            dir: dir.to_path_buf(),
            below: 0.5,
            every: 0,
            max_side: 64,
            max_bytes: 0,
            max_rate: 0.0,
            sensor: "cam1".into(),
        }
    }

    #[test]
    fn below_and_every_pick_their_frames() {
        let t = Instant::now();
        let mut p = Policy::new(&CaptureConfig {
            every: 3,
            ..config(Path::new("x"))
        });
        let got: Vec<Decision> = [0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.4]
            .iter()
            .map(|&c| p.decide(c, t))
            .collect();
        use Decision::*;
        assert_eq!(
            got,
            vec![
                Capture(Reason::Every),
                Skip,
                Capture(Reason::Below),
                Capture(Reason::Every),
                Skip,
                Skip,
                Capture(Reason::Every)
            ]
        );
    }

    #[test]
    fn the_rate_limit_allows_a_second_s_worth_then_refills() {
        let t0 = Instant::now();
        let mut p = Policy::new(&CaptureConfig {
            below: 1.0,
            max_rate: 2.0,
            ..config(Path::new("x"))
        });
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(p.decide(0.1, at(0)), Decision::Capture(Reason::Below));
        assert_eq!(p.decide(0.1, at(0)), Decision::Capture(Reason::Below));
        assert_eq!(p.decide(0.1, at(100)), Decision::RateLimited);
        assert_eq!(p.decide(0.1, at(600)), Decision::Capture(Reason::Below));
        assert_eq!(p.decide(0.1, at(700)), Decision::RateLimited);
    }

    #[test]
    fn fit_keeps_the_aspect_ratio_within_the_longest_side() {
        assert_eq!(fit(1920, 1080, 320), (320, 180));
        assert_eq!(fit(1080, 1920, 320), (180, 320));
        assert_eq!(fit(200, 100, 320), (200, 100));
        assert_eq!(fit(1920, 1080, 0), (1920, 1080));
        assert_eq!(fit(4000, 1, 100), (100, 1));
    }

    #[test]
    fn labels_become_safe_folder_names() {
        assert_eq!(folder_name("tabby cat"), "tabby cat");
        assert_eq!(folder_name("a/b"), "a_b");
        assert_eq!(folder_name(".."), "_");
        assert_eq!(folder_name(""), "_");
        assert_eq!(
            stem("cam/1", Some(33_000_000), 1),
            "cam_1-00000000000033000000"
        );
        assert_eq!(stem("cam1", None, 7), "cam1-frame000000000007");
    }

    fn shot(label: &str, n: u64) -> Shot {
        let image = RgbImage {
            width: 8,
            height: 4,
            data: (0..8 * 4 * 3).map(|i| (i * 7 + n as usize) as u8).collect(),
        };
        Shot {
            label: label.into(),
            stem: stem("cam1", Some(n), n),
            image,
            sidecar: serde_json::json!({ "label": label, "n": n }),
        }
    }

    #[test]
    fn captures_land_in_their_label_folders_with_sidecars() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Capture::start(&config(dir.path()), |e| panic!("{e}")).expect("start");
        assert!(c.offer(shot("red", 1)));
        assert!(c.offer(shot("blue", 2)));
        let stats = {
            drop(c);
            Budget::scan(dir.path(), 0)
        };
        assert_eq!(stats.files.len(), 2);
        let png = dir.path().join("red/cam1-00000000000000000001.png");
        let decoded = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(&png).expect("png"),
        ))
        .read_info()
        .expect("a PNG");
        assert_eq!((decoded.info().width, decoded.info().height), (8, 4));
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(png.with_extension("json")).expect("sidecar"))
                .expect("json");
        assert_eq!(sidecar["label"], "red");
        assert!(
            dir.path()
                .join("blue/cam1-00000000000000000002.json")
                .exists()
        );
        let hidden = std::fs::read_dir(dir.path().join("red"))
            .expect("dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with('.'));
        assert!(!hidden, "no temporary file left");
    }

    #[test]
    fn the_disk_budget_removes_the_oldest_captures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = {
            let c = Capture::start(&config(dir.path()), |e| panic!("{e}")).expect("start");
            assert!(c.offer(shot("a", 0)));
            drop(c);
            Budget::scan(dir.path(), 0).total
        };
        assert!(one > 0);
        // Room for three captures: after ten, the last three are left.
        let c = Capture::start(
            &CaptureConfig {
                max_bytes: one * 3 + one / 2,
                ..config(dir.path())
            },
            |e| panic!("{e}"),
        )
        .expect("start");
        for n in 1..10 {
            // The queue holds QUEUE shots; offering faster than the writer only drops (and
            // counts) what does not fit, so wait for room instead.
            while !c.offer(shot("a", n)) {
                std::thread::yield_now();
            }
        }
        let counters = c.counters.clone();
        drop(c);
        let left = Budget::scan(dir.path(), 0);
        let names: Vec<String> = left
            .files
            .iter()
            .map(|(p, _)| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[2].ends_with("09.png"), "{names:?}");
        assert_eq!(counters.evicted.load(Ordering::Relaxed), 7);
        assert!(counters.bytes.load(Ordering::Relaxed) <= one * 3 + one / 2);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file where the label folder should be: every write fails, and the error report
        // blocks the writer until released, so the queue fills.
        std::fs::write(dir.path().join("x"), b"file").expect("write");
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let blocked = std::sync::Mutex::new(blocked);
        let c = Capture::start(&config(dir.path()), move |_| {
            let _ = blocked.lock().map(|b| b.recv());
        })
        .expect("start");
        let total = QUEUE as u64 * 4;
        let accepted: u64 = (0..total).map(|n| u64::from(c.offer(shot("x", n)))).sum();
        let s = c.stats();
        assert_eq!(accepted + s.dropped, total);
        // The queue, plus the one the writer may have taken before blocking.
        assert!(
            (QUEUE as u64..=QUEUE as u64 + 1).contains(&accepted),
            "{accepted}"
        );
        drop(release);
        drop(c);
    }
}
