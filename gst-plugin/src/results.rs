//! One stream's result bookkeeping on its way out: frame numbers, the latest result that
//! frames in between (inference-interval) reuse, and the stream's own counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lane::Inferred;
use crate::meta::FrameResult;
use crate::model::{Generation, ModelError, ModelSpec, Overrides};
use crate::roi::Latest;
use crate::scores::Scorer;

/// How a stream turns a model's scores into results: its own overrides (labels-file, score
/// kind), `top-k` and `threshold`.
#[derive(Debug, Clone)]
pub struct Scoring {
    pub overrides: Overrides,
    pub top_k: usize,
    pub threshold: f32,
}

impl Scoring {
    pub fn scorer(&self, spec: &ModelSpec) -> Scorer {
        Scorer::new(spec.scores, &spec.labels, self.top_k, self.threshold)
    }
}

/// Frame numbering and the latest result of one stream (of each tracked object with
/// `target=roi`). A flush starts them afresh.
#[derive(Debug)]
pub struct StreamResults {
    scorer: Scorer,
    scoring: Scoring,
    /// The model whose scores `scorer` reads.
    generation: u64,
    model: Arc<str>,
    version: Arc<str>,
    last: Option<FrameResult>,
    objects: Latest<FrameResult>,
    frames_out: u64,
}

impl StreamResults {
    /// `reclassify_interval`: how long tracked objects go without being classified (it
    /// bounds how long their results are kept).
    pub fn new(
        model: &Generation,
        spec: &ModelSpec,
        scoring: Scoring,
        reclassify_interval: u32,
    ) -> Self {
        Self {
            scorer: scoring.scorer(spec),
            scoring,
            generation: model.number,
            model: Arc::from(model.name.as_str()),
            version: Arc::from(model.version().unwrap_or_default()),
            last: None,
            objects: Latest::new(reclassify_interval),
            frames_out: 0,
        }
    }

    /// Reads the scores of `model` from now on, when it is not the model read so far (a
    /// reload went live). `Ok(true)` when it switched. On an error the stream keeps its
    /// scorer (the engine checked the stream's overrides against the model before it went
    /// live, so this is a stream whose overrides changed since).
    pub fn follow(&mut self, model: &Generation) -> Result<bool, ModelError> {
        if model.number == self.generation {
            return Ok(false);
        }
        let spec = model.description.spec(&self.scoring.overrides)?;
        self.scorer = self.scoring.scorer(&spec);
        self.generation = model.number;
        self.model = Arc::from(model.name.as_str());
        self.version = Arc::from(model.version().unwrap_or_default());
        Ok(true)
    }

    /// New labels (labels-file changed while streaming), already checked against the model.
    pub fn relabel(&mut self, spec: &ModelSpec, overrides: Overrides) {
        self.scoring.overrides = overrides;
        self.scorer = self.scoring.scorer(spec);
    }

    /// The model this stream reads now: name, version (empty when none), generation.
    pub fn model(&self) -> (String, String, u64) {
        (
            self.model.to_string(),
            self.version.to_string(),
            self.generation,
        )
    }

    fn score(&mut self, answer: &Inferred, frame: u64) -> Option<FrameResult> {
        self.scorer
            .classify(&answer.scores)
            .map(|classification| FrameResult {
                model: self.model.clone(),
                model_version: self.version.clone(),
                classification,
                inference_ns: answer.took.as_nanos().try_into().unwrap_or(u64::MAX),
                batch_size: answer.batch_fill.try_into().unwrap_or(u32::MAX),
                reused: false,
                frame,
            })
    }

    /// Starts a frame whose regions are classified; returns its number.
    pub fn regions_frame(&mut self) -> u64 {
        self.objects.next_frame();
        self.number()
    }

    /// A classified region of frame `frame`; its result is kept for its tracked object.
    pub fn region(
        &mut self,
        answer: &Inferred,
        frame: u64,
        tracking_id: Option<u64>,
    ) -> Option<FrameResult> {
        let r = self.score(answer, frame)?;
        if let Some(id) = tracking_id {
            self.objects.store(id, r.clone());
        }
        Some(r)
    }

    /// A region of frame `frame` not classified again: its object's latest result, marked
    /// reused.
    pub fn region_reused(&mut self, frame: u64, tracking_id: u64) -> Option<FrameResult> {
        self.objects.get(tracking_id).map(|mut r| {
            r.reused = true;
            r.frame = frame;
            r
        })
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
        let r = self.score(answer, frame);
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
        self.objects.reset();
        self.frames_out = 0;
    }
}

/// Counters of one stream, for the element's `stats`.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub frames: u64,
    pub classified: u64,
    /// Regions classified (`target=roi`).
    pub regions: u64,
    /// Regions that reused their object's result (`reclassify-interval`).
    pub regions_reused: u64,
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
            self.run(a);
        }
    }

    /// A frame of regions left at `now`, with the answers of its classified regions and the
    /// number of regions that reused a result. It counts as classified when it had any.
    pub fn count_regions(&mut self, answers: &[&Inferred], reused: usize, now: Instant) {
        self.count(None, now);
        self.classified += u64::from(!answers.is_empty());
        self.regions += answers.len() as u64;
        self.regions_reused += reused as u64;
        for a in answers {
            self.run(a);
        }
    }

    fn run(&mut self, a: &Inferred) {
        if self.last_run != Some(a.run) {
            self.last_run = Some(a.run);
            self.batches += 1;
            self.inference_total += a.took;
            self.inference_max = self.inference_max.max(a.took);
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

    fn generation() -> Arc<Generation> {
        Arc::new(Generation {
            number: 1,
            description: crate::model::Description::empty("m.onnx"),
            name: "m".into(),
        })
    }

    fn results() -> StreamResults {
        let labels = ["a".to_string(), "b".to_string()];
        StreamResults {
            scorer: Scorer::new(ScoreKind::Probabilities, &labels, 1, 0.0),
            scoring: Scoring {
                overrides: Overrides::default(),
                top_k: 1,
                threshold: 0.0,
            },
            generation: 1,
            model: Arc::from("m"),
            version: Arc::from(""),
            last: None,
            objects: Latest::new(1),
            frames_out: 0,
        }
    }

    fn answer(scores: [f32; 2], run: u64) -> Inferred {
        Inferred {
            scores: scores.to_vec(),
            took: Duration::from_millis(2),
            batch_fill: 3,
            run,
            model: generation(),
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
    fn tracked_regions_reuse_their_objects_result() {
        let mut r = results();
        let f = r.regions_frame();
        let a = r
            .region(&answer([0.9, 0.1], 1), f, Some(7))
            .expect("result");
        let b = r.region(&answer([0.2, 0.8], 1), f, None).expect("result");
        assert_eq!((a.frame, &*a.classification.best.label), (0, "a"));
        assert_eq!(&*b.classification.best.label, "b");
        let f = r.regions_frame();
        let again = r.region_reused(f, 7).expect("object 7 has a result");
        assert!(again.reused);
        assert_eq!((again.frame, &*again.classification.best.label), (1, "a"));
        assert!(
            r.region_reused(f, 8).is_none(),
            "object 8 was never classified"
        );
        r.reset();
        assert!(r.region_reused(f, 7).is_none(), "a flush forgets objects");
    }

    #[test]
    fn stats_count_regions_and_their_runs() {
        let mut s = StreamStats::default();
        let t0 = Instant::now();
        let (a, b) = (answer([1.0, 0.0], 1), answer([1.0, 0.0], 2));
        s.count_regions(&[&a, &a, &b], 1, t0);
        s.count_regions(&[], 2, t0);
        assert_eq!((s.frames, s.classified, s.batches), (2, 1, 2));
        assert_eq!((s.regions, s.regions_reused), (3, 3));
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
