//! Batching and ordering between the streaming thread and the inference worker.
//!
//! The streaming thread preprocesses frame k into a slot of the batch being filled; a batch is
//! handed to the worker when it is full or when its first frame has waited `timeout`.
//! Serialized events and frames that reuse an earlier result travel through the same ordered
//! queue, so nothing overtakes anything. A small pool of batch tensors bounds the memory and
//! gives back-pressure: with none free, the streaming thread waits for the worker.
//!
//! [`Flow`] is the plain state (time is passed in, so it is tested with a fake clock);
//! [`Batcher`] wraps it in a mutex and condition variable for the two threads.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::model::{BatchInput, InputType};
use crate::preprocess::SlotMut;

/// Storage for a whole batch of preprocessed images.
#[derive(Debug)]
pub enum TensorData {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// A batch tensor: `capacity` slots of `slot_len` values each.
#[derive(Debug)]
pub struct BatchTensor {
    data: TensorData,
    slot_len: usize,
}

impl BatchTensor {
    pub fn new(kind: InputType, slot_len: usize, capacity: usize) -> Self {
        let len = slot_len * capacity;
        let data = match kind {
            InputType::F32 => TensorData::F32(vec![0.0; len]),
            InputType::U8 => TensorData::U8(vec![0; len]),
        };
        Self { data, slot_len }
    }

    /// The storage of slot `i`. Panics if `i` is beyond the capacity (a programming error:
    /// [`Flow`] never hands out more slots than a batch holds).
    pub fn slot_mut(&mut self, i: usize) -> SlotMut<'_> {
        let range = i * self.slot_len..(i + 1) * self.slot_len;
        match &mut self.data {
            TensorData::F32(v) => SlotMut::F32(&mut v[range]),
            TensorData::U8(v) => SlotMut::U8(&mut v[range]),
        }
    }

    pub fn input(&self) -> BatchInput<'_> {
        match &self.data {
            TensorData::F32(v) => BatchInput::F32(v),
            TensorData::U8(v) => BatchInput::U8(v),
        }
    }
}

/// One frame of a batch, in arrival order.
#[derive(Debug)]
pub enum Entry<T> {
    /// Classified from slot `slot` of the batch tensor.
    Classify { item: T, slot: usize },
    /// Not classified (inference-interval): gets the latest result before it.
    Reuse(T),
}

/// A batch: its frames in order and the tensor holding the classified ones.
#[derive(Debug)]
pub struct Batch<T> {
    pub entries: Vec<Entry<T>>,
    pub tensor: BatchTensor,
    /// Slots filled; slot `i` belongs to the i-th `Classify` entry.
    pub slots: usize,
    opened: Option<Instant>,
}

/// What the worker takes from the queue, in order.
#[derive(Debug)]
pub enum Work<T, E> {
    Batch(Batch<T>),
    Event(E),
    /// A frame that reuses the last result and had no batch to wait behind.
    Pass(T),
}

/// The worker's next step.
#[derive(Debug)]
pub enum Next<T, E> {
    Work(Work<T, E>),
    /// Nothing due before this instant (a partial batch is waiting for its timeout).
    WaitUntil(Instant),
    Wait,
    Flushing,
}

/// Batching state shared by the streaming thread and the worker. Not synchronized itself.
#[derive(Debug)]
pub struct Flow<T, E> {
    batch_size: usize,
    timeout: Duration,
    filling: Option<Batch<T>>,
    /// The streaming thread has the filling batch out to preprocess into it.
    filling_out: bool,
    ready: VecDeque<Work<T, E>>,
    spare: Vec<BatchTensor>,
    /// The worker holds a work item.
    busy: bool,
    flushing: bool,
}

impl<T, E> Flow<T, E> {
    /// `tensors` is the pool of batch tensors (at least 2 so preprocessing overlaps inference).
    pub fn new(batch_size: usize, timeout: Duration, tensors: Vec<BatchTensor>) -> Self {
        Self {
            batch_size: batch_size.max(1),
            timeout,
            filling: None,
            filling_out: false,
            ready: VecDeque::new(),
            spare: tensors,
            busy: false,
            flushing: false,
        }
    }

    /// Streaming thread: takes the batch to preprocess the next classified frame into.
    /// `Ok(None)`: no tensor is free, wait for the worker. `Err(())`: flushing.
    #[allow(clippy::result_unit_err)]
    pub fn take_filling(&mut self) -> Result<Option<Batch<T>>, ()> {
        if self.flushing {
            return Err(());
        }
        let batch = match self.filling.take() {
            Some(b) => Some(b),
            None => self.spare.pop().map(|tensor| Batch {
                entries: Vec::with_capacity(self.batch_size * 2),
                tensor,
                slots: 0,
                opened: None,
            }),
        };
        self.filling_out = batch.is_some();
        Ok(batch)
    }

    /// Streaming thread: returns the batch after preprocessing; `item` went into slot
    /// `batch.slots` (or `None` when preprocessing failed and the slot stays free).
    /// A full batch goes to the worker. Returns the item back if flushing started meanwhile.
    pub fn put_filling(&mut self, mut batch: Batch<T>, item: Option<T>, now: Instant) -> Option<T> {
        self.filling_out = false;
        if self.flushing {
            self.spare.push(batch.tensor);
            return item;
        }
        if let Some(item) = item {
            batch.entries.push(Entry::Classify {
                item,
                slot: batch.slots,
            });
            batch.slots += 1;
            batch.opened.get_or_insert(now);
        }
        if batch.slots >= self.batch_size {
            self.ready.push_back(Work::Batch(batch));
        } else if batch.entries.is_empty() {
            self.spare.push(batch.tensor);
        } else {
            self.filling = Some(batch);
        }
        None
    }

    /// Streaming thread: a frame that reuses the latest result. It waits behind the batch
    /// being filled, if any. Returns the item back when flushing.
    pub fn push_reuse(&mut self, item: T) -> Option<T> {
        if self.flushing {
            return Some(item);
        }
        match self.filling.as_mut() {
            Some(batch) => batch.entries.push(Entry::Reuse(item)),
            None => self.ready.push_back(Work::Pass(item)),
        }
        None
    }

    /// Streaming thread: a serialized event. The batch being filled is handed over first
    /// (partial), so the event stays behind every earlier frame. Returns it back when
    /// flushing.
    pub fn push_event(&mut self, event: E) -> Option<E> {
        if self.flushing {
            return Some(event);
        }
        self.dispatch_filling();
        self.ready.push_back(Work::Event(event));
        None
    }

    /// Hands the partial batch to the worker now (EOS, caps, queries).
    pub fn dispatch_filling(&mut self) {
        if let Some(batch) = self.filling.take() {
            self.ready.push_back(Work::Batch(batch));
        }
    }

    /// Worker: what to do next.
    pub fn next(&mut self, now: Instant) -> Next<T, E> {
        if self.flushing {
            return Next::Flushing;
        }
        if let Some(work) = self.ready.pop_front() {
            self.busy = true;
            return Next::Work(work);
        }
        if self.filling_out {
            return Next::Wait;
        }
        match self.filling.as_ref().and_then(|b| b.opened) {
            Some(opened) => {
                let deadline = opened + self.timeout;
                if now >= deadline {
                    self.busy = true;
                    match self.filling.take() {
                        Some(batch) => Next::Work(Work::Batch(batch)),
                        None => Next::Wait,
                    }
                } else {
                    Next::WaitUntil(deadline)
                }
            }
            None => Next::Wait,
        }
    }

    /// Worker: finished a work item; its tensor (if any) goes back to the pool.
    pub fn done(&mut self, tensor: Option<BatchTensor>) {
        self.busy = false;
        if let Some(t) = tensor {
            self.spare.push(t);
        }
    }

    /// Starts or stops flushing. Starting drops every queued frame and event and returns
    /// their tensors to the pool.
    pub fn set_flushing(&mut self, flushing: bool) {
        self.flushing = flushing;
        if flushing {
            if let Some(batch) = self.filling.take() {
                self.spare.push(batch.tensor);
            }
            for work in self.ready.drain(..) {
                if let Work::Batch(batch) = work {
                    self.spare.push(batch.tensor);
                }
            }
        }
    }

    pub fn is_flushing(&self) -> bool {
        self.flushing
    }

    /// Nothing queued, nothing being filled, the worker idle.
    pub fn is_drained(&self) -> bool {
        self.ready.is_empty() && self.filling.is_none() && !self.filling_out && !self.busy
    }

    /// Frames waiting (queued or being filled), for the stats.
    pub fn queued(&self) -> usize {
        let count = |w: &Work<T, E>| match w {
            Work::Batch(b) => b.entries.len(),
            Work::Pass(_) => 1,
            Work::Event(_) => 0,
        };
        self.ready.iter().map(count).sum::<usize>()
            + self.filling.as_ref().map_or(0, |b| b.entries.len())
    }
}

/// [`Flow`] behind a mutex, with the waits the two threads need.
#[derive(Debug)]
pub struct Batcher<T, E> {
    flow: Mutex<Flow<T, E>>,
    cond: Condvar,
}

impl<T, E> Batcher<T, E> {
    pub fn new(flow: Flow<T, E>) -> Self {
        Self {
            flow: Mutex::new(flow),
            cond: Condvar::new(),
        }
    }

    /// Locks the state; a poisoned lock (a panic elsewhere) still gives the state, which
    /// stays consistent because every method leaves it so before returning.
    pub fn lock(&self) -> MutexGuard<'_, Flow<T, E>> {
        self.flow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter after a change made through [`Batcher::lock`].
    pub fn notify(&self) {
        self.cond.notify_all();
    }

    /// Streaming thread: waits for a batch to fill; `None` when flushing.
    pub fn acquire(&self) -> Option<Batch<T>> {
        let mut flow = self.lock();
        loop {
            match flow.take_filling() {
                Err(()) => return None,
                Ok(Some(b)) => return Some(b),
                Ok(None) => flow = self.cond.wait(flow).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Streaming thread: see [`Flow::put_filling`].
    pub fn release(&self, batch: Batch<T>, item: Option<T>) -> Option<T> {
        let back = self.lock().put_filling(batch, item, Instant::now());
        self.cond.notify_all();
        back
    }

    pub fn push_reuse(&self, item: T) -> Option<T> {
        let back = self.lock().push_reuse(item);
        self.cond.notify_all();
        back
    }

    pub fn push_event(&self, event: E) -> Option<E> {
        let back = self.lock().push_event(event);
        self.cond.notify_all();
        back
    }

    /// Worker: blocks until there is work; `None` when flushing.
    pub fn next(&self) -> Option<Work<T, E>> {
        let mut flow = self.lock();
        loop {
            match flow.next(Instant::now()) {
                Next::Work(w) => return Some(w),
                Next::Flushing => return None,
                Next::Wait => flow = self.cond.wait(flow).unwrap_or_else(|e| e.into_inner()),
                Next::WaitUntil(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    flow = self
                        .cond
                        .wait_timeout(flow, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    pub fn done(&self, tensor: Option<BatchTensor>) {
        self.lock().done(tensor);
        self.cond.notify_all();
    }

    pub fn set_flushing(&self, flushing: bool) {
        self.lock().set_flushing(flushing);
        self.cond.notify_all();
    }

    /// Hands over the partial batch and waits until the worker has pushed everything.
    /// Returns false if flushing started meanwhile.
    pub fn drain(&self) -> bool {
        let mut flow = self.lock();
        flow.dispatch_filling();
        self.cond.notify_all();
        loop {
            if flow.is_flushing() {
                return false;
            }
            if flow.is_drained() {
                return true;
            }
            flow = self.cond.wait(flow).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type TestFlow = Flow<u32, &'static str>;

    fn flow(batch: usize, timeout_ms: u64, tensors: usize) -> TestFlow {
        let pool = (0..tensors)
            .map(|_| BatchTensor::new(InputType::F32, 4, batch))
            .collect();
        Flow::new(batch, Duration::from_millis(timeout_ms), pool)
    }

    fn classify(f: &mut TestFlow, item: u32, now: Instant) {
        let b = f
            .take_filling()
            .expect("not flushing")
            .expect("tensor free");
        assert!(f.put_filling(b, Some(item), now).is_none());
    }

    fn order(work: &Work<u32, &'static str>) -> Vec<String> {
        match work {
            Work::Batch(b) => b
                .entries
                .iter()
                .map(|e| match e {
                    Entry::Classify { item, slot } => format!("c{item}@{slot}"),
                    Entry::Reuse(item) => format!("r{item}"),
                })
                .collect(),
            Work::Event(e) => vec![format!("e:{e}")],
            Work::Pass(item) => vec![format!("p{item}")],
        }
    }

    fn take(f: &mut TestFlow, now: Instant) -> Vec<String> {
        match f.next(now) {
            Next::Work(w) => {
                let o = order(&w);
                let tensor = match w {
                    Work::Batch(b) => Some(b.tensor),
                    _ => None,
                };
                f.done(tensor);
                o
            }
            other => panic!("expected work, got {other:?}"),
        }
    }

    #[test]
    fn full_batch_goes_at_once_in_order() {
        let t0 = Instant::now();
        let mut f = flow(3, 1000, 2);
        for i in 0..3 {
            classify(&mut f, i, t0);
        }
        assert_eq!(take(&mut f, t0), ["c0@0", "c1@1", "c2@2"]);
        assert!(f.is_drained());
    }

    #[test]
    fn partial_batch_waits_for_timeout_from_first_frame() {
        let t0 = Instant::now();
        let mut f = flow(4, 50, 2);
        classify(&mut f, 0, t0);
        classify(&mut f, 1, t0 + Duration::from_millis(30));
        match f.next(t0 + Duration::from_millis(40)) {
            Next::WaitUntil(d) => assert_eq!(d, t0 + Duration::from_millis(50)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            take(&mut f, t0 + Duration::from_millis(50)),
            ["c0@0", "c1@1"]
        );
    }

    #[test]
    fn zero_timeout_gives_dynamic_batches() {
        let t0 = Instant::now();
        let mut f = flow(8, 0, 2);
        classify(&mut f, 0, t0);
        classify(&mut f, 1, t0);
        assert_eq!(take(&mut f, t0), ["c0@0", "c1@1"]);
    }

    #[test]
    fn events_and_reused_frames_keep_their_place() {
        let t0 = Instant::now();
        let mut f = flow(2, 1000, 3);
        assert!(f.push_reuse(100).is_none()); // nothing pending: passes straight on
        classify(&mut f, 0, t0);
        assert!(f.push_reuse(101).is_none());
        assert!(f.push_event("caps").is_none()); // hands the partial batch over first
        classify(&mut f, 1, t0);
        classify(&mut f, 2, t0);
        assert_eq!(take(&mut f, t0), ["p100"]);
        assert_eq!(take(&mut f, t0), ["c0@0", "r101"]);
        assert_eq!(take(&mut f, t0), ["e:caps"]);
        assert_eq!(take(&mut f, t0), ["c1@0", "c2@1"]);
        assert!(matches!(f.next(t0), Next::Wait));
    }

    #[test]
    fn no_free_tensor_means_wait() {
        let t0 = Instant::now();
        let mut f = flow(1, 0, 2);
        classify(&mut f, 0, t0);
        classify(&mut f, 1, t0);
        assert!(matches!(f.take_filling(), Ok(None)));
        assert_eq!(take(&mut f, t0), ["c0@0"]);
        assert!(matches!(f.take_filling(), Ok(Some(_))));
    }

    #[test]
    fn worker_waits_while_the_batch_is_being_filled() {
        let t0 = Instant::now();
        let mut f = flow(4, 0, 2);
        classify(&mut f, 0, t0);
        let b = f.take_filling().expect("ok").expect("batch");
        assert!(matches!(f.next(t0 + Duration::from_secs(1)), Next::Wait));
        f.put_filling(b, Some(1), t0);
        assert_eq!(take(&mut f, t0), ["c0@0", "c1@1"]);
    }

    #[test]
    fn failed_preprocess_keeps_the_slot_free() {
        let t0 = Instant::now();
        let mut f = flow(2, 0, 2);
        let b = f.take_filling().expect("ok").expect("batch");
        f.put_filling(b, None, t0);
        assert!(f.is_drained());
        classify(&mut f, 7, t0);
        assert_eq!(take(&mut f, t0), ["c7@0"]);
    }

    #[test]
    fn flushing_drops_everything_and_returns_tensors() {
        let t0 = Instant::now();
        let mut f = flow(2, 1000, 2);
        classify(&mut f, 0, t0);
        classify(&mut f, 1, t0);
        classify(&mut f, 2, t0);
        assert!(f.push_event("tag").is_none());
        f.set_flushing(true);
        assert!(matches!(f.next(t0), Next::Flushing));
        assert!(f.take_filling().is_err());
        assert_eq!(f.push_reuse(5), Some(5));
        assert_eq!(f.push_event("eos"), Some("eos"));
        f.set_flushing(false);
        assert!(f.is_drained());
        assert_eq!(f.queued(), 0);
        // Both tensors are back: two batches can be filled again.
        classify(&mut f, 3, t0);
        classify(&mut f, 4, t0);
        classify(&mut f, 5, t0);
        assert_eq!(f.queued(), 3);
    }

    #[test]
    fn flush_while_preprocessing_returns_the_frame() {
        let t0 = Instant::now();
        let mut f = flow(2, 1000, 2);
        let b = f.take_filling().expect("ok").expect("batch");
        f.set_flushing(true);
        assert_eq!(f.put_filling(b, Some(9), t0), Some(9));
        f.set_flushing(false);
        classify(&mut f, 1, t0);
        classify(&mut f, 2, t0);
        classify(&mut f, 3, t0);
        classify(&mut f, 4, t0);
        assert!(matches!(f.take_filling(), Ok(None)), "both tensors in use");
    }

    #[test]
    fn threads_keep_order_under_back_pressure() {
        let batcher = Arc::new(Batcher::<u32, &'static str>::new(flow(3, 1, 2)));
        let worker = {
            let batcher = batcher.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Some(work) = batcher.next() {
                    match work {
                        Work::Batch(b) => {
                            for e in b.entries {
                                match e {
                                    Entry::Classify { item, .. } | Entry::Reuse(item) => {
                                        seen.push(item)
                                    }
                                }
                            }
                            batcher.done(Some(b.tensor));
                        }
                        Work::Pass(item) => {
                            seen.push(item);
                            batcher.done(None);
                        }
                        Work::Event(_) => {
                            batcher.done(None);
                            break;
                        }
                    }
                }
                seen
            })
        };
        for i in 0..1000u32 {
            if i % 3 == 1 {
                assert!(batcher.push_reuse(i).is_none());
            } else {
                let b = batcher.acquire().expect("not flushing");
                assert!(batcher.release(b, Some(i)).is_none());
            }
        }
        assert!(batcher.drain());
        assert!(batcher.push_event("eos").is_none());
        let seen = worker.join().expect("worker");
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }
}
