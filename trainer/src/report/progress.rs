//! Progress of a training run: an `indicatif` bar on a terminal, rate-limited log lines
//! otherwise.
//!
//! `indicatif` draws the bar (in place, rate-limited, messages printed above it, cleared at
//! the end); this module keeps what is ours: the epoch's image-weighted running means, the
//! ETA of the whole run (not only of the bar's epoch) and the log-line format for pipes and
//! files.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::history::EpochRecord;

/// Where the progress goes.
enum Sink {
    /// Nothing is shown.
    Quiet,
    /// An `indicatif` bar, for a terminal.
    Bar(ProgressBar),
    /// One line at most every `interval`, for logs and pipes.
    Lines(Box<dyn Write + Send>),
}

/// Most redraws of the bar per second.
const BAR_HZ: u8 = 10;
/// Shortest time between two batch lines when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// The bar: `epoch 3/20  [=====>      ] 200/469  loss 0.412  acc 0.861  12.3 img/s  eta 1m12s`.
const BAR_TEMPLATE: &str = "epoch {prefix}  [{bar:24}] {pos}/{len}  {msg}";

/// Shows the progress of training over epochs and batches.
///
/// On a terminal ([`Progress::new`] checks stderr) a bar redrawn in place with the running
/// loss, accuracy, images per second and the ETA of the whole run; otherwise plain lines such as
/// `epoch 3/20  batch 200/469  loss 0.412  acc 0.861  12.3 img/s  eta 1m12s`, at most one every
/// few seconds, plus one line per finished epoch. Write errors are ignored: progress never stops
/// training.
pub struct Progress {
    sink: Sink,
    epochs: usize,
    batches: usize,
    interval: Duration,
    epoch: usize,
    epoch_start: Instant,
    last_draw: Instant,
    /// Batches done in the current epoch, as last reported.
    done: usize,
    images: u64,
    /// Image-weighted sums of the batches' loss and accuracy in the current epoch.
    loss_sum: f64,
    acc_sum: f64,
    weight: f64,
    finished_epochs: usize,
    finished_seconds: f64,
}

/// `12s`, `1m12s`, `2h05m`.
pub(super) fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

impl Progress {
    /// Progress on stderr for `epochs` epochs of `batches_per_epoch` batches: a live bar when
    /// stderr is a terminal (and `TERM` is not `dumb`), log lines at most every 5 s otherwise.
    pub fn new(epochs: usize, batches_per_epoch: usize) -> Self {
        let stderr = std::io::stderr();
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if stderr.is_terminal() && !dumb {
            Self::bar(
                epochs,
                batches_per_epoch,
                ProgressDrawTarget::stderr_with_hz(BAR_HZ),
            )
        } else {
            Self::with_sink(
                Sink::Lines(Box::new(stderr)),
                epochs,
                batches_per_epoch,
                LINE_INTERVAL,
            )
        }
    }

    /// Plain log lines into `writer` (a log file, or a buffer in tests), a batch line at most
    /// every `interval` (`Duration::ZERO`: every batch).
    pub fn to_writer(
        epochs: usize,
        batches_per_epoch: usize,
        writer: impl Write + Send + 'static,
        interval: Duration,
    ) -> Self {
        Self::with_sink(
            Sink::Lines(Box::new(writer)),
            epochs,
            batches_per_epoch,
            interval,
        )
    }

    /// The bar drawn into `target`.
    fn bar(epochs: usize, batches_per_epoch: usize, target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(Some(batches_per_epoch as u64), target);
        // The template is a constant: it parses, and a test draws it.
        if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self::with_sink(Sink::Bar(bar), epochs, batches_per_epoch, Duration::ZERO)
    }

    /// Progress that shows nothing (tests, library use).
    pub fn quiet() -> Self {
        Self::with_sink(Sink::Quiet, 0, 0, Duration::MAX)
    }

    fn with_sink(sink: Sink, epochs: usize, batches: usize, interval: Duration) -> Self {
        let now = Instant::now();
        Progress {
            sink,
            epochs,
            batches,
            interval,
            epoch: 0,
            epoch_start: now,
            last_draw: now,
            done: 0,
            images: 0,
            loss_sum: 0.0,
            acc_sum: 0.0,
            weight: 0.0,
            finished_epochs: 0,
            finished_seconds: 0.0,
        }
    }

    /// Starts epoch `epoch` (counted from 1).
    pub fn start_epoch(&mut self, epoch: usize) {
        self.start_epoch_at(epoch, Instant::now());
    }

    fn start_epoch_at(&mut self, epoch: usize, now: Instant) {
        self.epoch = epoch;
        self.epoch_start = now;
        self.done = 0;
        self.images = 0;
        self.loss_sum = 0.0;
        self.acc_sum = 0.0;
        self.weight = 0.0;
        if let Sink::Bar(bar) = &self.sink {
            bar.reset();
            bar.set_prefix(format!("{epoch}/{}", self.epochs));
        }
    }

    /// Reports a finished batch: `done` batches of this epoch are finished now (1 after the
    /// first), the batch had loss `loss` and accuracy `accuracy` over `images` images. The
    /// display shows the epoch's running means, weighted by images.
    pub fn batch(&mut self, done: usize, loss: f64, accuracy: f64, images: usize) {
        self.batch_at(done, loss, accuracy, images, Instant::now());
    }

    fn batch_at(&mut self, done: usize, loss: f64, accuracy: f64, images: usize, now: Instant) {
        self.done = done;
        self.images += images as u64;
        if loss.is_finite() && accuracy.is_finite() {
            let w = images.max(1) as f64;
            self.loss_sum += loss * w;
            self.acc_sum += accuracy * w;
            self.weight += w;
        }
        let due = now.saturating_duration_since(self.last_draw) >= self.interval;
        match self.sink {
            Sink::Quiet => {}
            Sink::Lines(_) if due => {
                let line = self.status(now);
                self.last_draw = now;
                self.write(&format!("{line}\n"));
            }
            Sink::Bar(ref bar) => {
                // indicatif limits the redraws itself.
                bar.set_message(self.stats(now));
                bar.set_position(done as u64);
            }
            _ => {}
        }
    }

    /// Seconds left in the whole run: the rest of this epoch at its pace so far, then the
    /// remaining epochs at the mean length of the finished ones (this epoch's pace before any
    /// has finished).
    fn eta(&self, now: Instant) -> Option<f64> {
        if self.done == 0 {
            return None;
        }
        let elapsed = now
            .saturating_duration_since(self.epoch_start)
            .as_secs_f64();
        let per_batch = elapsed / self.done as f64;
        let rest_of_epoch = self.batches.saturating_sub(self.done) as f64 * per_batch;
        let epoch_seconds = if self.finished_epochs > 0 {
            self.finished_seconds / self.finished_epochs as f64
        } else {
            per_batch * self.batches as f64
        };
        let epochs_left = self.epochs.saturating_sub(self.epoch.max(1)) as f64;
        Some(rest_of_epoch + epochs_left * epoch_seconds)
    }

    /// The batch status line of the log.
    fn status(&self, now: Instant) -> String {
        format!(
            "epoch {}/{}  batch {}/{}  {}",
            self.epoch,
            self.epochs,
            self.done,
            self.batches,
            self.stats(now)
        )
    }

    /// The epoch's running loss and accuracy, images per second and the run's ETA.
    fn stats(&self, now: Instant) -> String {
        let mut s = if self.weight > 0.0 {
            format!(
                "loss {:.3}  acc {:.3}",
                self.loss_sum / self.weight,
                self.acc_sum / self.weight
            )
        } else {
            "loss nan".to_owned()
        };
        let elapsed = now
            .saturating_duration_since(self.epoch_start)
            .as_secs_f64();
        if elapsed > 0.0 {
            s += &format!("  {:.1} img/s", self.images as f64 / elapsed);
        }
        if let Some(eta) = self.eta(now) {
            s += &format!("  eta {}", format_duration(eta));
        }
        s
    }

    /// Reports a finished epoch: one line with train/validation loss and accuracy, the
    /// learning rate, the epoch's time and the ETA of the run (the total time after the last).
    pub fn end_epoch(&mut self, record: &EpochRecord) {
        self.end_epoch_at(record, Instant::now());
    }

    fn end_epoch_at(&mut self, record: &EpochRecord, now: Instant) {
        self.finished_epochs += 1;
        self.finished_seconds += record.seconds;
        let mut line = format!(
            "epoch {}/{}  train loss {:.3} acc {:.3}",
            record.epoch, self.epochs, record.train_loss, record.train_accuracy
        );
        match (record.val_loss, record.val_accuracy) {
            (Some(l), Some(a)) => line += &format!("  val loss {l:.3} acc {a:.3}"),
            (Some(l), None) => line += &format!("  val loss {l:.3}"),
            (None, Some(a)) => line += &format!("  val acc {a:.3}"),
            (None, None) => {}
        }
        line += &format!(
            "  lr {:.2e}  {}",
            record.learning_rate,
            format_duration(record.seconds)
        );
        let left = self.epochs.saturating_sub(record.epoch);
        if left > 0 {
            let mean = self.finished_seconds / self.finished_epochs as f64;
            line += &format!("  eta {}", format_duration(left as f64 * mean));
        } else {
            line += &format!("  total {}", format_duration(self.finished_seconds));
        }
        self.last_draw = now;
        match self.sink {
            Sink::Quiet => {}
            Sink::Lines(_) => self.write(&format!("{line}\n")),
            Sink::Bar(ref bar) => {
                bar.set_message("");
                bar.println(line);
            }
        }
    }

    /// Prints a message on its own line (the bar, if any, is redrawn below it).
    pub fn message(&mut self, message: &str) {
        match self.sink {
            Sink::Quiet => {}
            Sink::Lines(_) => self.write(&format!("{message}\n")),
            Sink::Bar(ref bar) => bar.println(message),
        }
    }

    fn write(&mut self, text: &str) {
        if let Sink::Lines(w) = &mut self.sink {
            // Progress is informative only: a closed pipe must not stop training.
            let _ = w.write_all(text.as_bytes()).and_then(|()| w.flush());
        }
    }
}

impl Drop for Progress {
    /// Clears a bar left on the terminal.
    fn drop(&mut self) {
        if let Sink::Bar(bar) = &self.sink {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn record(epoch: usize, seconds: f64, val: bool) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: 0.5,
            train_accuracy: 0.75,
            val_loss: val.then_some(0.625),
            val_accuracy: val.then_some(0.8),
            learning_rate: 0.001,
            seconds,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0.4), "0s");
        assert_eq!(format_duration(12.3), "12s");
        assert_eq!(format_duration(72.0), "1m12s");
        assert_eq!(format_duration(7500.0), "2h05m");
        assert_eq!(format_duration(-3.0), "0s");
    }

    #[test]
    fn lines_with_eta_at_the_set_rate() {
        let out = Shared::default();
        let mut p = Progress::to_writer(3, 10, out.clone(), Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        p.last_draw = t0;
        p.start_epoch_at(1, t0);
        // One batch a second, 32 images each: lines at 5 s and 10 s only.
        for b in 1..=10 {
            p.batch_at(b, 1.0 / b as f64, 0.5, 32, at(b as f64));
        }
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        // After 5 of 10 batches in 5 s: 5 s left in this epoch + 2 epochs of 10 s.
        assert!(
            lines[0].starts_with("epoch 1/3  batch 5/10  loss "),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("acc 0.500"), "{}", lines[0]);
        assert!(lines[0].contains("32.0 img/s"), "{}", lines[0]);
        assert!(lines[0].ends_with("eta 25s"), "{}", lines[0]);
        assert!(lines[1].starts_with("epoch 1/3  batch 10/10"));
        assert!(lines[1].ends_with("eta 20s"), "{}", lines[1]);

        // The epoch took 12 s with validation: later estimates use it.
        p.end_epoch_at(&record(1, 12.0, true), at(12.0));
        let text = out.text();
        let end = text.lines().nth(2).unwrap();
        assert_eq!(
            end,
            "epoch 1/3  train loss 0.500 acc 0.750  val loss 0.625 acc 0.800  lr 1.00e-3  12s  eta 24s"
        );
        p.start_epoch_at(2, at(12.0));
        p.batch_at(5, 0.4, 0.9, 32, at(17.0));
        let text = out.text();
        let line = text.lines().nth(3).unwrap();
        assert!(line.starts_with("epoch 2/3  batch 5/10  loss 0.400  acc 0.900"));
        // 5 s for the rest of this epoch + 1 epoch of 12 s.
        assert!(line.ends_with("eta 17s"), "{line}");
        p.message("saved checkpoint");
        p.end_epoch_at(&record(2, 12.0, false), at(24.0));
        p.start_epoch_at(3, at(24.0));
        p.end_epoch_at(&record(3, 13.0, false), at(37.0));
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[4], "saved checkpoint");
        assert!(lines[5].contains("train loss 0.500 acc 0.750  lr 1.00e-3  12s  eta 12s"));
        assert!(!lines[5].contains("val"));
        assert!(lines[6].ends_with("13s  total 37s"), "{}", lines[6]);
    }

    #[test]
    fn every_batch_with_zero_interval_and_weighted_means() {
        let out = Shared::default();
        let mut p = Progress::to_writer(1, 2, out.clone(), Duration::ZERO);
        p.start_epoch(1);
        p.batch(1, 1.0, 0.0, 30);
        p.batch(2, f64::NAN, 0.5, 10); // skipped in the means
        p.batch(2, 0.0, 1.0, 10);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("loss 1.000  acc 0.000"), "{}", lines[0]);
        assert!(lines[2].contains("loss 0.750  acc 0.250"), "{}", lines[2]);
        assert!(lines[2].contains("eta 0s"), "{}", lines[2]);
    }

    #[test]
    fn the_terminal_bar_shows_the_epoch_stats_and_messages_above_it() {
        use indicatif::{InMemoryTerm, TermLike};
        let term = InMemoryTerm::new(8, 100);
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(term.clone()), 100);
        let mut p = Progress::bar(2, 4, target);
        let t0 = Instant::now();
        p.start_epoch_at(1, t0);
        p.batch_at(1, 0.5, 0.5, 8, t0 + Duration::from_secs(1));
        p.message("hello");
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines.first().copied(), Some("hello"), "{screen:?}");
        let bar = lines.get(1).copied().unwrap_or_default();
        assert!(bar.starts_with("epoch 1/2  [======>"), "{screen:?}");
        assert!(
            bar.contains("] 1/4  loss 0.500  acc 0.500  8.0 img/s  eta "),
            "{screen:?}"
        );
        p.batch_at(4, 0.5, 0.5, 8, t0 + Duration::from_secs(2));
        p.end_epoch_at(&record(1, 2.0, true), t0 + Duration::from_secs(2));
        let screen = term.contents();
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with("epoch 1/2  train loss 0.500") && l.ends_with("eta 2s")),
            "{screen:?}"
        );
        drop(p);
        // The bar is cleared at the end; the printed lines stay.
        let screen = term.contents();
        assert!(screen.lines().all(|l| !l.contains('[')), "{screen:?}");
        assert!(screen.starts_with("hello\n"), "{screen:?}");
        assert_eq!(term.width(), 100);
    }

    #[test]
    fn quiet_writes_nothing_and_never_fails() {
        let mut p = Progress::quiet();
        p.start_epoch(1);
        p.batch(1, 0.1, 0.2, 3);
        p.message("x");
        p.end_epoch(&record(1, 1.0, false));
    }
}
