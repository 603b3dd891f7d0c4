//! One stream's side of the engine: the ordered hand-over from the element's streaming
//! thread to its src pad task.
//!
//! The streaming thread queues every frame and serialized event in arrival order; a frame to
//! classify gets a ticket and its preprocessed slot goes to the engine. The engine answers
//! tickets in whatever order batches run ([`Lane::deliver`]); the src pad task takes items
//! from the front only, waiting for the front frame's answer, so each stream leaves in its own
//! order whatever other streams do. Nothing of one stream waits on another's lane: a stalled,
//! paused or flushing stream holds up only itself.
//!
//! The number of frames to classify that are queued is bounded (`capacity`): the streaming
//! thread waits for a free place (back-pressure). The tensors frames are preprocessed into
//! belong to the engine's pool, not to the lane.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::batch::LaneId;
use crate::model::Generation;

/// Buffers an element may hold with `capacity` frames to classify queued and
/// `interval - 1` reused frames behind each: what upstream pools must allow on top of their
/// own needs. Saturates instead of overflowing.
pub fn held_buffers(capacity: usize, interval: u32) -> u32 {
    u32::try_from(capacity)
        .unwrap_or(u32::MAX)
        .saturating_mul(interval.max(1))
}

/// The engine's answer for one frame.
#[derive(Debug, Clone)]
pub struct Inferred {
    /// Scores of this frame (the model's classes).
    pub scores: Vec<f32>,
    /// Duration of the run that classified it.
    pub took: Duration,
    /// Frames in that run (of every stream).
    pub batch_fill: usize,
    /// The engine's number of that run (frames with the same number ran together).
    pub run: u64,
    /// The model that computed the scores.
    pub model: Arc<Generation>,
}

/// What the engine gives back per ticket: scores, or why the run failed.
pub type Outcome = Result<Inferred, String>;

/// Where the engine delivers answers (implemented by [`Lane`]; object-safe so the engine
/// does not know the stream's buffer and event types).
pub trait Deliver: Send + Sync {
    fn id(&self) -> LaneId;
    fn deliver(&self, ticket: u64, outcome: Outcome);
    /// The stream is flushing or stopping: it must not wait for the engine.
    fn is_flushing(&self) -> bool;
}

/// An item the src pad task takes, in arrival order.
#[derive(Debug)]
pub enum Ready<T, E> {
    /// A classified frame with its answer.
    Classified(T, Outcome),
    /// A frame not classified (inference-interval): it gets the latest result.
    Reuse(T),
    /// A frame whose regions were classified, with one answer per region in the order they
    /// were submitted (empty for a frame with no region to classify).
    Regions(T, Vec<Outcome>),
    Event(E),
}

/// The answers a queued frame waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tickets {
    /// None: the frame reuses the latest result.
    Reuse,
    /// One answer for the whole frame.
    Frame(u64),
    /// `count` answers, tickets `first..first + count`, one per region.
    Regions { first: u64, count: u64 },
}

impl Tickets {
    fn holds(self, ticket: u64) -> bool {
        match self {
            Self::Reuse => false,
            Self::Frame(t) => t == ticket,
            Self::Regions { first, count } => ticket >= first && ticket - first < count,
        }
    }

    fn counts_against_capacity(self) -> bool {
        self != Self::Reuse
    }
}

#[derive(Debug)]
enum Item<T, E> {
    Frame { item: T, tickets: Tickets },
    Event(E),
}

#[derive(Debug)]
struct State<T, E> {
    queue: VecDeque<Item<T, E>>,
    answers: HashMap<u64, Outcome>,
    /// Frames with a ticket in `queue`.
    classified_queued: usize,
    next_ticket: u64,
    flushing: bool,
    /// The src pad task stopped on a downstream error: nothing will be taken until a flush
    /// or restart, so a drain must not wait.
    stopped: bool,
    /// The src pad task holds an item it took.
    busy: bool,
}

/// A stream's ordered queue, shared by its two threads and the engine.
#[derive(Debug)]
pub struct Lane<T, E> {
    id: LaneId,
    capacity: usize,
    state: Mutex<State<T, E>>,
    cond: Condvar,
}

impl<T, E> Lane<T, E> {
    /// `capacity`: frames to classify that may be queued at once (at least 1).
    pub fn new(id: LaneId, capacity: usize) -> Self {
        Self {
            id,
            capacity: capacity.max(1),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                answers: HashMap::new(),
                classified_queued: 0,
                next_ticket: 0,
                flushing: false,
                stopped: false,
                busy: false,
            }),
            cond: Condvar::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        // Every method leaves the state consistent before it can panic, so a poisoned lock
        // still holds a usable state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State<T, E>>) -> MutexGuard<'a, State<T, E>> {
        self.cond.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    // ---- streaming thread ----------------------------------------------------------------

    /// Waits until one more frame to classify may be queued. False when flushing, or when the
    /// src pad task stopped on a downstream error (it will take nothing more until a flush).
    pub fn reserve(&self) -> bool {
        let mut s = self.lock();
        loop {
            if s.flushing || s.stopped {
                return false;
            }
            if s.classified_queued < self.capacity {
                return true;
            }
            s = self.wait(s);
        }
    }

    /// Queues a frame to classify; returns its ticket, under which its slot goes to the
    /// engine. `Err(item)` when flushing (the frame is dropped by the caller).
    pub fn push_classified(&self, item: T) -> Result<u64, T> {
        let mut s = self.lock();
        if s.flushing {
            return Err(item);
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.queue.push_back(Item::Frame {
            item,
            tickets: Tickets::Frame(ticket),
        });
        s.classified_queued += 1;
        drop(s);
        self.cond.notify_all();
        Ok(ticket)
    }

    /// Queues a frame whose `count` regions are classified (after [`Lane::reserve`], like a
    /// frame to classify); returns the first of its `count` consecutive tickets. The frame
    /// leaves when every region is answered, at once when `count` is 0. `Err(item)` when
    /// flushing.
    pub fn push_regions(&self, item: T, count: usize) -> Result<u64, T> {
        let mut s = self.lock();
        if s.flushing {
            return Err(item);
        }
        let first = s.next_ticket;
        let count = count as u64;
        s.next_ticket += count;
        s.queue.push_back(Item::Frame {
            item,
            tickets: Tickets::Regions { first, count },
        });
        s.classified_queued += 1;
        drop(s);
        self.cond.notify_all();
        Ok(first)
    }

    /// Queues a frame that reuses the latest result. `Err(item)` when flushing.
    pub fn push_reuse(&self, item: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.flushing {
            return Err(item);
        }
        s.queue.push_back(Item::Frame {
            item,
            tickets: Tickets::Reuse,
        });
        drop(s);
        self.cond.notify_all();
        Ok(())
    }

    /// Queues a serialized event behind every earlier frame. `Err(event)` when flushing.
    pub fn push_event(&self, event: E) -> Result<(), E> {
        let mut s = self.lock();
        if s.flushing {
            return Err(event);
        }
        s.queue.push_back(Item::Event(event));
        drop(s);
        self.cond.notify_all();
        Ok(())
    }

    /// Waits until the src pad task has pushed everything queued. False when it cannot
    /// happen: flushing, or the task stopped on a downstream error.
    pub fn drain(&self) -> bool {
        let mut s = self.lock();
        loop {
            if s.flushing || s.stopped {
                return false;
            }
            if s.queue.is_empty() && !s.busy {
                return true;
            }
            s = self.wait(s);
        }
    }

    // ---- src pad task ---------------------------------------------------------------------

    /// Waits for the front item to be ready and takes it; `None` when flushing.
    pub fn next(&self) -> Option<Ready<T, E>> {
        let mut s = self.lock();
        loop {
            if s.flushing {
                return None;
            }
            let ready = match s.queue.front() {
                None => false,
                Some(Item::Event(_)) => true,
                Some(Item::Frame { tickets, .. }) => match *tickets {
                    Tickets::Reuse => true,
                    Tickets::Frame(t) => s.answers.contains_key(&t),
                    Tickets::Regions { first, count } => {
                        (first..first + count).all(|t| s.answers.contains_key(&t))
                    }
                },
            };
            if ready {
                let taken = match s.queue.pop_front() {
                    Some(Item::Event(e)) => Ready::Event(e),
                    Some(Item::Frame { item, tickets }) => {
                        if tickets.counts_against_capacity() {
                            s.classified_queued -= 1;
                        }
                        let mut answer = |t: u64| {
                            s.answers
                                .remove(&t)
                                .unwrap_or_else(|| Err("answer lost".into()))
                        };
                        match tickets {
                            Tickets::Reuse => Ready::Reuse(item),
                            Tickets::Frame(t) => Ready::Classified(item, answer(t)),
                            Tickets::Regions { first, count } => {
                                Ready::Regions(item, (first..first + count).map(answer).collect())
                            }
                        }
                    }
                    None => unreachable!("front was checked"),
                };
                s.busy = true;
                drop(s);
                // A place is free: the streaming thread may go on.
                self.cond.notify_all();
                return Some(taken);
            }
            s = self.wait(s);
        }
    }

    /// The src pad task finished the item it took.
    pub fn done(&self) {
        self.lock().busy = false;
        self.cond.notify_all();
    }

    /// The src pad task stopped (downstream error) or restarted (`false`).
    pub fn set_stopped(&self, stopped: bool) {
        self.lock().stopped = stopped;
        self.cond.notify_all();
    }

    // ---- both ------------------------------------------------------------------------------

    /// Starting to flush drops everything queued and wakes every waiter; the caller also
    /// takes this lane's jobs out of the engine.
    pub fn set_flushing(&self, flushing: bool) {
        let mut s = self.lock();
        s.flushing = flushing;
        if flushing {
            s.queue.clear();
            s.answers.clear();
            s.classified_queued = 0;
        } else {
            s.stopped = false;
        }
        drop(s);
        self.cond.notify_all();
    }

    /// Items queued (frames and events), for the stats.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}

impl<T: Send, E: Send> Deliver for Lane<T, E> {
    fn id(&self) -> LaneId {
        self.id
    }

    fn deliver(&self, ticket: u64, outcome: Outcome) {
        let mut s = self.lock();
        // A frame flushed meanwhile has no ticket in the queue any more: its answer is dropped.
        let wanted = s
            .queue
            .iter()
            .any(|i| matches!(i, Item::Frame { tickets, .. } if tickets.holds(ticket)));
        if wanted {
            s.answers.insert(ticket, outcome);
        }
        drop(s);
        self.cond.notify_all();
    }

    fn is_flushing(&self) -> bool {
        self.lock().flushing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type TestLane = Lane<u32, &'static str>;

    fn lane(capacity: usize) -> TestLane {
        Lane::new(1, capacity)
    }

    fn answer(fill: usize) -> Outcome {
        Ok(Inferred {
            scores: vec![fill as f32],
            took: Duration::from_millis(1),
            batch_fill: fill,
            run: 0,
            model: Arc::new(Generation {
                number: 1,
                description: crate::model::Description::empty("m.onnx"),
                name: "m".into(),
            }),
        })
    }

    fn label(r: Ready<u32, &'static str>) -> String {
        match r {
            Ready::Classified(i, Ok(a)) => format!("c{i}:{}", a.batch_fill),
            Ready::Classified(i, Err(e)) => format!("c{i}:{e}"),
            Ready::Reuse(i) => format!("r{i}"),
            Ready::Regions(i, answers) => {
                let fills: Vec<String> = answers
                    .iter()
                    .map(|a| match a {
                        Ok(a) => a.batch_fill.to_string(),
                        Err(e) => e.clone(),
                    })
                    .collect();
                format!("o{i}:[{}]", fills.join(","))
            }
            Ready::Event(e) => format!("e:{e}"),
        }
    }

    fn take(l: &TestLane) -> String {
        let r = l.next().expect("not flushing");
        l.done();
        label(r)
    }

    #[test]
    fn held_buffers_saturate() {
        assert_eq!(held_buffers(16, 30), 480);
        assert_eq!(held_buffers(4, 0), 4);
        assert_eq!(held_buffers(usize::MAX, 1000), u32::MAX);
    }

    #[test]
    fn answers_out_of_order_leave_in_arrival_order() {
        let l = lane(4);
        assert!(l.reserve());
        let t0 = l.push_classified(0).expect("queued");
        l.push_reuse(1).expect("queued");
        let t2 = l.push_classified(2).expect("queued");
        l.push_event("eos").expect("queued");
        l.deliver(t2, answer(2));
        l.deliver(t0, answer(1));
        assert_eq!(
            [take(&l), take(&l), take(&l), take(&l)],
            ["c0:1", "r1", "c2:2", "e:eos"]
        );
        assert!(l.drain());
    }

    #[test]
    fn a_frame_of_regions_leaves_when_all_its_regions_are_answered() {
        let l = lane(4);
        assert!(l.reserve());
        let first = l.push_regions(0, 3).expect("queued");
        assert!(l.reserve());
        let empty = l.push_regions(1, 0).expect("queued");
        assert!(l.reserve());
        let next = l.push_regions(2, 2).expect("queued");
        assert_eq!(empty, first + 3, "tickets are consecutive");
        assert_eq!(next, first + 3);
        // Answers in any order, some from other runs; the frame waits for its last region.
        l.deliver(next + 1, answer(4));
        l.deliver(first + 2, answer(3));
        l.deliver(first, answer(1));
        l.deliver(next, Err("boom".into()));
        assert_eq!(l.queued(), 3);
        l.deliver(first + 1, answer(2));
        assert_eq!(
            [take(&l), take(&l), take(&l)],
            ["o0:[1,2,3]", "o1:[]", "o2:[boom,4]"]
        );
        // Tickets beyond any queued frame are not kept.
        l.deliver(next + 2, answer(9));
        assert!(l.drain());
    }

    #[test]
    fn capacity_bounds_the_frames_to_classify() {
        let l = Arc::new(lane(2));
        for i in 0..2 {
            assert!(l.reserve());
            l.push_classified(i).expect("queued");
        }
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || l.reserve())
        };
        // The waiter can only get a place once the front frame has been taken.
        l.deliver(0, answer(1));
        assert_eq!(take(&l), "c0:1");
        assert!(waiter.join().expect("thread"));
    }

    #[test]
    fn flushing_drops_queued_items_and_late_answers() {
        let l = lane(4);
        let t = l.push_classified(7).expect("queued");
        l.push_event("tag").expect("queued");
        l.set_flushing(true);
        assert!(l.next().is_none());
        assert!(l.is_flushing());
        assert!(!l.reserve());
        assert_eq!(l.push_reuse(3), Err(3));
        assert_eq!(l.push_event("x"), Err("x"));
        assert!(!l.drain());
        l.set_flushing(false);
        // The engine answers the flushed frame late: dropped.
        l.deliver(t, answer(1));
        assert_eq!(l.queued(), 0);
        let t = l.push_classified(8).expect("queued");
        l.deliver(t, Err("boom".into()));
        assert_eq!(take(&l), "c8:boom");
    }

    #[test]
    fn drain_returns_when_the_task_has_stopped() {
        let l = Arc::new(lane(4));
        l.push_event("caps").expect("queued");
        let drainer = {
            let l = l.clone();
            std::thread::spawn(move || l.drain())
        };
        l.set_stopped(true);
        assert!(
            !drainer.join().expect("thread"),
            "no wait on a stopped task"
        );
    }

    #[test]
    fn a_full_lane_stops_waiting_when_the_task_stops() {
        let l = Arc::new(lane(1));
        l.push_classified(0).expect("queued");
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || l.reserve())
        };
        l.set_stopped(true);
        assert!(!waiter.join().expect("thread"), "no wait on a stopped task");
    }

    #[test]
    fn threads_keep_order_under_back_pressure() {
        let l = Arc::new(lane(3));
        let consumer = {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                loop {
                    let r = l.next().expect("not flushing");
                    l.done();
                    match r {
                        Ready::Classified(i, _) | Ready::Reuse(i) | Ready::Regions(i, _) => {
                            seen.push(i)
                        }
                        Ready::Event(_) => break,
                    }
                }
                seen
            })
        };
        // An "engine" answering in reverse order of every pair of submissions.
        let mut pending: Vec<u64> = Vec::new();
        for i in 0..500u32 {
            if i % 3 == 1 {
                l.push_reuse(i).expect("queued");
                continue;
            }
            assert!(l.reserve());
            let t = l.push_classified(i).expect("queued");
            pending.push(t);
            if pending.len() == 2 {
                for t in pending.drain(..).rev() {
                    l.deliver(t, answer(2));
                }
            }
        }
        for t in pending.drain(..) {
            l.deliver(t, answer(1));
        }
        l.push_event("eos").expect("queued");
        assert_eq!(
            consumer.join().expect("thread"),
            (0..500).collect::<Vec<_>>()
        );
    }
}
