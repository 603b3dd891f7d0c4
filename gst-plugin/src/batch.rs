//! Batch planning for the inference engine: which waiting frames, of which streams, go into
//! the next run, and when.
//!
//! Every stream (a `visionclassify` element) preprocesses its frames on its own streaming
//! thread into a [`Slot`] and hands it to the engine as a job. [`Plan`] keeps the jobs of
//! every attached stream in one queue, in arrival order, and says when a batch is due:
//! - when `batch_size` jobs wait (a full batch, of whatever streams they come from);
//! - when the oldest job has waited `timeout` (0: as soon as the worker is free, i.e. dynamic
//!   batching);
//! - at once when a stream asks for its jobs to be hurried (EOS, caps, a drain query), so one
//!   stream's serialized event never waits for the timeout nor for other streams. A hurry
//!   seals the jobs waiting at that moment: they run without the jobs that come after, as the
//!   partial batch is handed over before the event.
//!
//! Fairness is oldest-first: a batch takes the jobs that arrived first, whatever stream they
//! come from, so a frame waits only behind frames that arrived before it. Each stream can
//! have at most a bounded number of frames in the engine (its lane's capacity), so a fast
//! camera fills batches in proportion to its rate and can never push a slow camera's frame
//! back. Time is an argument, so all of it is tested with a fake clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::model::{BatchInput, InputType, MAX_BATCH_VALUES};
use crate::preprocess::SlotMut;

/// One preprocessed image: the tensor of one frame, filled on its stream's thread.
#[derive(Debug)]
pub enum Slot {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl Slot {
    pub fn new(kind: InputType, len: usize) -> Self {
        match kind {
            InputType::F32 => Self::F32(vec![0.0; len]),
            InputType::U8 => Self::U8(vec![0; len]),
        }
    }

    pub fn as_mut(&mut self) -> SlotMut<'_> {
        match self {
            Self::F32(v) => SlotMut::F32(v),
            Self::U8(v) => SlotMut::U8(v),
        }
    }
}

/// The contiguous tensor of a whole batch, which ONNX Runtime reads: `capacity` images of
/// `slot_len` values. Images are copied in from their slots (a few hundred microseconds for
/// eight 224×224 images, against tens of milliseconds of inference).
#[derive(Debug)]
pub struct BatchTensor {
    data: Slot,
    slot_len: usize,
}

/// Why a batch tensor was not made.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error(
        "a batch of {images} images × {slot_len} values is more than the limit of {MAX_BATCH_VALUES} values per batch (MAX_BATCH_VALUES)"
    )]
    TooLarge { images: usize, slot_len: usize },
    #[error("no memory for a batch tensor of {values} values: {source}")]
    NoMemory {
        values: usize,
        source: std::collections::TryReserveError,
    },
}

/// `len` zeros, or the allocator's refusal (instead of an abort).
fn zeros<T: Clone + Default>(len: usize) -> Result<Vec<T>, TensorError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|source| TensorError::NoMemory {
            values: len,
            source,
        })?;
    v.resize(len, T::default());
    Ok(v)
}

impl BatchTensor {
    /// Zeros for `capacity` images of `slot_len` values. Refused, before anything is
    /// allocated, beyond [`MAX_BATCH_VALUES`] values; refused when the memory is not there.
    pub fn new(kind: InputType, slot_len: usize, capacity: usize) -> Result<Self, TensorError> {
        let len = slot_len
            .checked_mul(capacity)
            .filter(|&n| n <= MAX_BATCH_VALUES)
            .ok_or(TensorError::TooLarge {
                images: capacity,
                slot_len,
            })?;
        let data = match kind {
            InputType::F32 => Slot::F32(zeros(len)?),
            InputType::U8 => Slot::U8(zeros(len)?),
        };
        Ok(Self { data, slot_len })
    }

    /// Copies `slot` into image `i`. False when the slot is not of this tensor's type and
    /// size or `i` is beyond the capacity (nothing is copied then).
    pub fn put(&mut self, i: usize, slot: &Slot) -> bool {
        let range = i * self.slot_len..(i + 1) * self.slot_len;
        match (&mut self.data, slot) {
            (Slot::F32(dst), Slot::F32(src)) if src.len() == self.slot_len => {
                dst.get_mut(range).map(|d| d.copy_from_slice(src)).is_some()
            }
            (Slot::U8(dst), Slot::U8(src)) if src.len() == self.slot_len => {
                dst.get_mut(range).map(|d| d.copy_from_slice(src)).is_some()
            }
            _ => false,
        }
    }

    pub fn input(&self) -> BatchInput<'_> {
        match &self.data {
            Slot::F32(v) => BatchInput::F32(v),
            Slot::U8(v) => BatchInput::U8(v),
        }
    }
}

/// Identifies one attached stream.
pub type LaneId = u64;

/// Admission of frames into the engine: at most `limit` frames wait for a batch or are being
/// preprocessed for one, across all streams, so the preprocessed tensors held (and the time a
/// frame waits) do not grow with the number of cameras. Streams that find it full are
/// admitted in the order they asked (first come, first served), so a fast camera cannot take
/// every place that frees up from a slow one.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    /// Places given out whose frame is not submitted yet.
    reserved: usize,
    waiting: VecDeque<LaneId>,
}

impl Admission {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            reserved: 0,
            waiting: VecDeque::new(),
        }
    }

    /// `lane` asks for a place while `pending` frames wait in the plan. True: admitted (the
    /// caller preprocesses, then [`Admission::submitted`] or [`Admission::returned`]).
    /// False: it is (now) in line; ask again when something changed.
    pub fn try_admit(&mut self, lane: LaneId, pending: usize) -> bool {
        if !self.waiting.contains(&lane) {
            self.waiting.push_back(lane);
        }
        let room = pending + self.reserved < self.limit;
        if room && self.waiting.front() == Some(&lane) {
            self.waiting.pop_front();
            self.reserved += 1;
            true
        } else {
            false
        }
    }

    /// `lane` stops asking (flushing, stopping).
    pub fn cancel(&mut self, lane: LaneId) {
        self.waiting.retain(|l| *l != lane);
    }

    /// An admitted frame went into the plan.
    pub fn submitted(&mut self) {
        self.reserved = self.reserved.saturating_sub(1);
    }

    /// An admitted frame was not submitted (preprocessing failed, flushing).
    pub fn returned(&mut self) {
        self.reserved = self.reserved.saturating_sub(1);
    }

    /// Streams waiting for a place.
    pub fn in_line(&self) -> usize {
        self.waiting.len()
    }
}

/// A frame waiting for inference.
#[derive(Debug)]
pub struct Job<J> {
    pub lane: LaneId,
    pub payload: J,
    pub arrived: Instant,
}

/// The worker's next step.
#[derive(Debug)]
pub enum Next<J> {
    /// Run these jobs as one batch, in this order.
    Run(Vec<Job<J>>),
    /// Nothing due before this instant (the oldest job's deadline).
    WaitUntil(Instant),
    /// Nothing waiting.
    Wait,
    /// The engine is closing.
    Shutdown,
}

/// The queue of jobs of every stream and the batching rule. Not synchronized itself.
#[derive(Debug)]
pub struct Plan<J> {
    batch_size: usize,
    timeout: Duration,
    pending: VecDeque<Job<J>>,
    /// Hurries, oldest first: (jobs from the front that arrived before it, the stream that
    /// asked). Those jobs run without waiting, and without the jobs that came after.
    cuts: VecDeque<(usize, LaneId)>,
    shutdown: bool,
}

impl<J> Plan<J> {
    pub fn new(batch_size: usize, timeout: Duration) -> Self {
        Self {
            batch_size: batch_size.max(1),
            timeout,
            pending: VecDeque::new(),
            cuts: VecDeque::new(),
            shutdown: false,
        }
    }

    /// A stream hands over a preprocessed frame.
    pub fn submit(&mut self, lane: LaneId, payload: J, now: Instant) {
        self.pending.push_back(Job {
            lane,
            payload,
            arrived: now,
        });
    }

    /// The stream's waiting jobs go in the next batch without waiting for the timeout
    /// (a serialized event or query is behind them).
    pub fn hurry(&mut self, lane: LaneId) {
        let at = self.pending.len();
        if self.pending.iter().any(|j| j.lane == lane) && !self.cuts.contains(&(at, lane)) {
            self.cuts.push_back((at, lane));
        }
    }

    /// Takes the stream's waiting jobs out of the plan (flush, stop): they will not run.
    pub fn remove(&mut self, lane: LaneId) -> Vec<J> {
        // Each other stream's hurry keeps its place among the jobs that stay.
        let pending = &self.pending;
        let kept_before = |at: usize| pending.iter().take(at).filter(|j| j.lane != lane).count();
        let cuts: VecDeque<_> = self
            .cuts
            .iter()
            .filter(|(_, by)| *by != lane)
            .map(|&(at, by)| (kept_before(at), by))
            .filter(|(at, _)| *at > 0)
            .collect();
        self.cuts = cuts;
        let (gone, kept): (VecDeque<_>, VecDeque<_>) =
            self.pending.drain(..).partition(|j| j.lane == lane);
        self.pending = kept;
        gone.into_iter().map(|j| j.payload).collect()
    }

    pub fn shut_down(&mut self) {
        self.shutdown = true;
    }

    /// Jobs waiting, for the stats.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    /// Jobs of one stream waiting.
    pub fn queued_for(&self, lane: LaneId) -> usize {
        self.pending.iter().filter(|j| j.lane == lane).count()
    }

    /// What the worker does next (called when it is free).
    pub fn next(&mut self, now: Instant) -> Next<J> {
        if self.shutdown {
            return Next::Shutdown;
        }
        let Some(oldest) = self.pending.front().map(|j| j.arrived) else {
            self.cuts.clear();
            return Next::Wait;
        };
        let deadline = oldest + self.timeout;
        let full = self.pending.len() >= self.batch_size;
        let n = if full || now >= deadline {
            self.pending.len().min(self.batch_size)
        } else if let Some(&(at, _)) = self.cuts.front() {
            at.min(self.batch_size)
        } else {
            return Next::WaitUntil(deadline);
        };
        let jobs: Vec<Job<J>> = self.pending.drain(..n).collect();
        for cut in self.cuts.iter_mut() {
            cut.0 = cut.0.saturating_sub(n);
        }
        self.cuts.retain(|(at, _)| *at > 0);
        Next::Run(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, m: u64) -> Instant {
        t0 + Duration::from_millis(m)
    }

    fn run(plan: &mut Plan<&'static str>, now: Instant) -> Vec<(LaneId, &'static str)> {
        match plan.next(now) {
            Next::Run(jobs) => jobs.into_iter().map(|j| (j.lane, j.payload)).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn a_full_batch_mixes_streams_in_arrival_order() {
        let t0 = Instant::now();
        let mut p = Plan::new(4, Duration::from_millis(100));
        p.submit(1, "a0", t0);
        p.submit(2, "b0", ms(t0, 1));
        p.submit(1, "a1", ms(t0, 2));
        assert!(matches!(p.next(ms(t0, 3)), Next::WaitUntil(d) if d == ms(t0, 100)));
        p.submit(3, "c0", ms(t0, 3));
        p.submit(2, "b1", ms(t0, 4));
        assert_eq!(
            run(&mut p, ms(t0, 4)),
            [(1, "a0"), (2, "b0"), (1, "a1"), (3, "c0")]
        );
        // The fifth frame waits for its own deadline, counted from its arrival.
        assert!(matches!(p.next(ms(t0, 5)), Next::WaitUntil(d) if d == ms(t0, 104)));
        assert_eq!(run(&mut p, ms(t0, 104)), [(2, "b1")]);
        assert!(matches!(p.next(ms(t0, 200)), Next::Wait));
    }

    #[test]
    fn a_partial_batch_runs_when_its_oldest_frame_has_waited_the_timeout() {
        let t0 = Instant::now();
        let mut p = Plan::new(8, Duration::from_millis(50));
        p.submit(1, "a0", t0);
        p.submit(2, "b0", ms(t0, 30));
        assert!(matches!(p.next(ms(t0, 49)), Next::WaitUntil(_)));
        assert_eq!(run(&mut p, ms(t0, 50)), [(1, "a0"), (2, "b0")]);
    }

    #[test]
    fn zero_timeout_runs_whatever_waits() {
        let t0 = Instant::now();
        let mut p = Plan::new(8, Duration::ZERO);
        p.submit(1, "a0", t0);
        p.submit(2, "b0", t0);
        assert_eq!(run(&mut p, t0), [(1, "a0"), (2, "b0")]);
    }

    #[test]
    fn a_hurried_stream_runs_at_once_and_takes_older_frames_with_it() {
        let t0 = Instant::now();
        let mut p = Plan::new(8, Duration::from_secs(10));
        p.submit(2, "b0", t0);
        p.submit(1, "a0", ms(t0, 1));
        p.hurry(3); // nothing of stream 3 waits: no effect
        assert!(matches!(p.next(ms(t0, 2)), Next::WaitUntil(_)));
        p.hurry(1);
        assert_eq!(run(&mut p, ms(t0, 2)), [(2, "b0"), (1, "a0")]);
        p.submit(2, "b1", ms(t0, 3));
        assert!(
            matches!(p.next(ms(t0, 4)), Next::WaitUntil(_)),
            "the hurry ended with the batch that took stream 1's frames"
        );
    }

    #[test]
    fn a_hurry_seals_the_batch_frames_after_it_wait() {
        let t0 = Instant::now();
        let mut p = Plan::new(8, Duration::from_secs(10));
        p.submit(1, "a0", t0);
        p.submit(1, "a1", t0);
        p.hurry(1); // caps: the two frames before it go now
        p.submit(1, "a2", t0);
        p.submit(2, "b0", t0);
        assert_eq!(run(&mut p, t0), [(1, "a0"), (1, "a1")]);
        assert!(matches!(p.next(t0), Next::WaitUntil(_)));
        p.hurry(2);
        p.submit(2, "b1", t0);
        assert_eq!(run(&mut p, t0), [(1, "a2"), (2, "b0")]);
        assert!(matches!(p.next(t0), Next::WaitUntil(_)));
    }

    #[test]
    fn hurries_before_the_worker_wakes_keep_their_own_batches() {
        let t0 = Instant::now();
        let mut p = Plan::new(8, Duration::from_secs(10));
        p.submit(1, "a0", t0);
        p.submit(1, "a1", t0);
        p.hurry(1); // caps
        p.hurry(1); // segment: nothing new before it
        p.submit(1, "a2", t0);
        p.hurry(1); // EOS
        assert_eq!(run(&mut p, t0), [(1, "a0"), (1, "a1")]);
        assert_eq!(run(&mut p, t0), [(1, "a2")]);
        assert!(matches!(p.next(t0), Next::Wait));
    }

    #[test]
    fn a_hurry_lasts_until_all_of_the_streams_frames_have_run() {
        let t0 = Instant::now();
        let mut p = Plan::new(2, Duration::from_secs(10));
        for (lane, name) in [(1, "a0"), (2, "b0"), (1, "a1")] {
            p.submit(lane, name, t0);
        }
        p.hurry(1);
        assert_eq!(run(&mut p, t0), [(1, "a0"), (2, "b0")]);
        assert_eq!(run(&mut p, t0), [(1, "a1")]);
    }

    #[test]
    fn removing_a_stream_leaves_the_others_in_order() {
        let t0 = Instant::now();
        let mut p = Plan::new(3, Duration::from_secs(10));
        for (lane, name) in [(1, "a0"), (2, "b0"), (1, "a1"), (2, "b1")] {
            p.submit(lane, name, t0);
        }
        p.hurry(1);
        assert_eq!(p.remove(1), ["a0", "a1"]);
        assert_eq!(p.queued(), 2);
        assert_eq!(p.queued_for(2), 2);
        assert!(
            matches!(p.next(t0), Next::WaitUntil(_)),
            "the removed stream's hurry is gone with it"
        );
        p.submit(3, "c0", t0);
        assert_eq!(run(&mut p, t0), [(2, "b0"), (2, "b1"), (3, "c0")]);
    }

    #[test]
    fn a_fast_stream_cannot_push_an_older_frame_of_a_slow_one_back() {
        let t0 = Instant::now();
        let mut p = Plan::new(4, Duration::from_secs(10));
        p.submit(9, "slow", t0);
        for i in 0..11u64 {
            p.submit(1, "fast", ms(t0, 1 + i));
        }
        let first = run(&mut p, ms(t0, 20));
        assert_eq!(first[0], (9, "slow"));
    }

    #[test]
    fn shutdown_wins() {
        let t0 = Instant::now();
        let mut p = Plan::new(1, Duration::ZERO);
        p.submit(1, "a0", t0);
        p.shut_down();
        assert!(matches!(p.next(t0), Next::Shutdown));
    }

    #[test]
    fn admission_is_bounded_and_first_come_first_served() {
        let mut a = Admission::new(2);
        assert!(a.try_admit(1, 0));
        assert!(a.try_admit(1, 0));
        assert!(!a.try_admit(1, 0), "two places reserved");
        assert!(!a.try_admit(2, 0), "stream 2 lines up behind stream 1");
        assert_eq!(a.in_line(), 2);
        a.submitted();
        a.submitted();
        // Both frames now wait in the plan: still full.
        assert!(!a.try_admit(2, 2));
        // One ran: stream 1 asked first, so the place is its, even if stream 2 asks first now.
        assert!(!a.try_admit(2, 1));
        assert!(a.try_admit(1, 1));
        assert!(!a.try_admit(1, 1));
        a.returned();
        assert!(!a.try_admit(1, 1), "stream 2 is ahead of stream 1 now");
        assert!(a.try_admit(2, 1));
        a.cancel(1);
        assert_eq!(a.in_line(), 0);
    }

    #[test]
    fn batch_tensor_gathers_slots_and_refuses_wrong_ones() {
        let mut t = BatchTensor::new(InputType::F32, 2, 3).expect("fits");
        assert!(t.put(1, &Slot::F32(vec![1.0, 2.0])));
        assert!(!t.put(3, &Slot::F32(vec![1.0, 2.0])), "beyond capacity");
        assert!(!t.put(0, &Slot::U8(vec![1, 2])), "wrong type");
        assert!(!t.put(0, &Slot::F32(vec![1.0])), "wrong size");
        match t.input() {
            BatchInput::F32(v) => assert_eq!(v, [0.0, 0.0, 1.0, 2.0, 0.0, 0.0]),
            BatchInput::U8(_) => panic!("f32 tensor"),
        }
    }

    /// Sizes a model may declare: refused with the limit named, before any allocation (an
    /// allocation of this size would abort the process).
    #[test]
    fn batch_tensors_beyond_the_limit_are_refused() {
        for (slot_len, images) in [
            (usize::MAX, 2),
            (MAX_BATCH_VALUES, 2),
            (MAX_BATCH_VALUES / 4 + 1, 4),
        ] {
            let e =
                BatchTensor::new(InputType::U8, slot_len, images).expect_err("beyond the limit");
            assert!(matches!(e, TensorError::TooLarge { .. }), "{e}");
            assert!(e.to_string().contains("MAX_BATCH_VALUES"), "{e}");
        }
        let t = BatchTensor::new(InputType::U8, MAX_BATCH_VALUES / 4, 4).expect("at the limit");
        assert!(matches!(t.input(), BatchInput::U8(v) if v.len() == MAX_BATCH_VALUES));
    }
}
