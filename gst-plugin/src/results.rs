//! One stream's result bookkeeping on its way out: frame numbers, the latest result that
//! frames in between (inference-interval) reuse, and the stream's own counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lane::Inferred;
use crate::meta::FrameResult;
use crate::scores::Scorer;

/// Frame numbering and the latest result of one stream. A flush starts both afresh.
#[derive(Debug)]
pub struct StreamResults {
    scorer: Scorer,
    model: Arc<str>,
    last: Option<FrameResult>,
    frames_out: u64,
}

impl StreamResults {
    pub fn new(scorer: Scorer, model: &str) -> Self {
        Self {
            scorer,
            model: Arc::from(model),
            last: None,
            frames_out: 0,
        }
    }

    /// The next frame's number (frames are numbered as they leave, from 0).
    fn number(&mut self) -> u64 {
        let n = self.frames_out;
        self.frames_out += 1;
        n
    }

    /// A classified frame's result; `None` when the scores are unusable (no class).
    pub fn classified(&mut self, answer: &Inferred) -> Option<FrameResult> {
        let frame = self.number();
        let r = self
            .scorer
            .classify(&answer.scores)
            .map(|classification| FrameResult {
                model: self.model.clone(),
                classification,
                inference_ns: answer.took.as_nanos().try_into().unwrap_or(u64::MAX),
                batch_size: answer.batch_fill.try_into().unwrap_or(u32::MAX),
                reused: false,
                frame,
            });
        self.last.clone_from(&r);
        r
    }

    /// A frame that carries the latest result, marked reused.
    pub fn reused(&mut self) -> Option<FrameResult> {
        let frame = self.number();
        self.last.clone().map(|mut r| {
            r.reused = true;
            r.frame = frame;
            r
        })
    }

    /// After a flush: numbering restarts at 0 and no earlier result is reused.
    pub fn reset(&mut self) {
        self.last = None;
        self.frames_out = 0;
    }
}

/// Counters of one stream, for the element's `stats`.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub frames: u64,
    pub classified: u64,
    /// Engine runs that held frames of this stream.
    pub batches: u64,
    pub inference_total: Duration,
    pub inference_max: Duration,
    pub first_frame: Option<Instant>,
    pub last_frame: Option<Instant>,
    last_run: Option<u64>,
}

impl StreamStats {
    /// A frame left at `now`; `answer` when it was classified.
    pub fn count(&mut self, answer: Option<&Inferred>, now: Instant) {
        self.frames += 1;
        self.first_frame.get_or_insert(now);
        self.last_frame = Some(now);
        if let Some(a) = answer {
            self.classified += 1;
            if self.last_run != Some(a.run) {
                self.last_run = Some(a.run);
                self.batches += 1;
                self.inference_total += a.took;
                self.inference_max = self.inference_max.max(a.took);
            }
        }
    }

    pub fn mean_inference_ms(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.inference_total.as_secs_f64() * 1000.0 / self.batches as f64
        }
    }

    pub fn fps(&self) -> f64 {
        match (self.first_frame, self.last_frame) {
            (Some(a), Some(b)) if b > a && self.frames > 1 => {
                (self.frames - 1) as f64 / (b - a).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ScoreKind;

    fn results() -> StreamResults {
        let labels = ["a".to_string(), "b".to_string()];
        StreamResults::new(Scorer::new(ScoreKind::Probabilities, &labels, 1, 0.0), "m")
    }

    fn answer(scores: [f32; 2], run: u64) -> Inferred {
        Inferred {
            scores: scores.to_vec(),
            took: Duration::from_millis(2),
            batch_fill: 3,
            run,
        }
    }

    #[test]
    fn frames_are_numbered_and_reuse_the_latest_result() {
        let mut r = results();
        assert!(r.reused().is_none(), "nothing to reuse yet");
        let a = r.classified(&answer([0.9, 0.1], 1)).expect("result");
        assert_eq!(
            (a.frame, &*a.classification.best.label, a.batch_size),
            (1, "a", 3)
        );
        let b = r.reused().expect("reused");
        assert!(b.reused);
        assert_eq!((b.frame, &*b.classification.best.label), (2, "a"));
        r.reset();
        assert!(r.reused().is_none(), "a flush forgets the latest result");
        let c = r.classified(&answer([0.2, 0.8], 2)).expect("result");
        assert_eq!((c.frame, &*c.classification.best.label), (1, "b"));
    }

    #[test]
    fn stats_count_runs_once_per_run() {
        let mut s = StreamStats::default();
        let t0 = Instant::now();
        s.count(Some(&answer([1.0, 0.0], 1)), t0);
        s.count(Some(&answer([1.0, 0.0], 1)), t0);
        s.count(None, t0);
        s.count(
            Some(&answer([1.0, 0.0], 4)),
            t0 + Duration::from_millis(100),
        );
        assert_eq!((s.frames, s.classified, s.batches), (4, 3, 2));
        assert!((s.mean_inference_ms() - 2.0).abs() < 1e-9);
        assert!((s.fps() - 30.0).abs() < 1e-6);
    }
}
