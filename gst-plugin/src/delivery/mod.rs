//! MQTT delivery that loses nothing: a bounded in-memory queue, a store-and-forward spool on
//! disk, and one network task on the plugin's tokio runtime ([`crate::runtime`]). No GStreamer
//! types inside.
//!
//! # Guarantees
//! - [`Delivery::send`] never waits on the network. While connected a message goes to the
//!   in-memory queue (at most `queue_capacity` messages); when the queue is full, or while
//!   the broker is unreachable, it is written to the spool instead (one SQLite row, a local
//!   disk write). Only a full disk, or the spool's own limits, lose messages; both are counted
//!   and reported.
//! - Order: every message gets a sequence number when it is sent; the network task always
//!   hands over the lowest number not yet handed over, whether it waits in memory or in the
//!   spool, so the broker receives messages in the order they were sent. Messages a previous
//!   run left in the spool come first.
//! - At least once: a message leaves the spool (or memory) only when the broker acknowledged
//!   it (PUBACK for QoS 1, PUBCOMP for QoS 2; written to the socket for QoS 0). When a
//!   connection is lost, every message handed to it but not acknowledged goes back to the
//!   spool, and is sent again, in order, on the next connection. So nothing is lost across
//!   outages and restarts, but a message whose acknowledgement was lost arrives twice.
//! - Limits: the spool keeps at most `spool_max_bytes` of topics and payloads and nothing
//!   older than `spool_max_age`; at a limit the *oldest* messages are dropped, counted in
//!   [`DeliveryStats::dropped`] and reported as [`DeliveryEvent::SpoolFull`] (at most once a
//!   second, with the number dropped since the last report).
//! - A crash loses at most what was in memory (the queue and unacknowledged messages taken from
//!   it, while connected); the spool itself survives a crash mid-write.
//! - QoS 2 keeps at most 10 messages in flight: mosquitto (`max_inflight_messages`, default
//!   20) completes the handshake of QoS 2 messages over its limit but never delivers them.
//!   A broker configured below 10 loses messages that way.
//!
//! How order and acknowledgements are kept around rumqttc's own in-flight handling is
//! described in `network.rs`.

mod backoff;
mod config;
mod network;
pub mod spool;
mod tls;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

pub use config::{BrokerUri, DeliveryConfig, Qos, Secret};
use spool::{Dropped, Spool, SpoolLimits};

/// Largest topic + payload accepted by [`Delivery::send`] (the MQTT packet limit the client is
/// configured with, less room for the header).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024 - 1024;

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    /// A message that is not retained.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            retain: false,
        }
    }
}

/// What happened on the way to the broker; the element turns these into log lines and bus
/// messages. Failures repeat only when they change (a broker down for an hour is one
/// `Disconnected`, not one per attempt); `Connected` comes on every (re)connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// The broker accepted the connection; queued and spooled messages are on their way.
    Connected,
    /// The connection was lost, or could not be made; retrying with back-off.
    Disconnected(String),
    /// The broker refused the credentials (bad user name or password, not authorized), with
    /// its reason; retrying with back-off, messages are kept.
    AuthFailed(String),
    /// The TLS handshake failed (certificate not trusted, wrong name, not a TLS port, ...);
    /// retrying with back-off, messages are kept.
    TlsFailed(String),
    /// The spool dropped `dropped` messages (the oldest) since the last report; `policy` says
    /// which limit and what was done.
    SpoolFull { dropped: u64, policy: String },
    /// The spool could not be read or written (disk full, I/O error).
    SpoolError(String),
}

/// Counters since [`Delivery::start`] (the first five), and the current state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Messages accepted into the in-memory queue.
    pub queued: u64,
    /// Messages written to the spool (queue full, broker unreachable, unacknowledged when a
    /// connection was lost, or still waiting at stop).
    pub spooled: u64,
    /// Publishes handed to the MQTT client; a message sent again after a reconnection counts
    /// again.
    pub sent: u64,
    /// Messages the broker acknowledged (QoS 0: written to the connection).
    pub acked: u64,
    /// Messages lost: dropped by a spool limit, or not storable because the spool failed.
    pub dropped: u64,
    pub connected: bool,
    /// Messages waiting in memory now.
    pub queue_depth: u64,
    /// Messages in the spool now.
    pub spool_depth: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A setting is unusable; `setting` is the element property's name (`broker`, `ca-file`).
    #[error("invalid {setting}: {reason}")]
    Settings {
        setting: &'static str,
        reason: String,
    },
    /// The spool could not be opened or written.
    #[error("{0}")]
    Spool(String),
    /// The message cannot be published (bad topic, too large).
    #[error("cannot publish: {0}")]
    Message(String),
    /// [`Delivery::send`] after the delivery was stopped.
    #[error("delivery is stopped")]
    Stopped,
}

/// A message waiting for the broker, with its place in the sending order.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub seq: u64,
    pub created_ms: i64,
    pub msg: Message,
    /// Whether a spool row holds it (to delete once acknowledged).
    pub spooled: bool,
}

/// Drops not yet reported, so that a full spool is one event a second, not one per message.
#[derive(Debug, Default)]
struct DropReport {
    unreported: u64,
    by_size: bool,
    by_age: bool,
    last: Option<Instant>,
}

/// State shared by the element's threads ([`Delivery::send`]) and the network task.
pub(crate) struct State {
    pub queue: VecDeque<Pending>,
    pub next_seq: u64,
    /// `None` once stopped (the file is closed).
    pub spool: Option<Spool>,
    /// Connected: messages go to the queue rather than straight to the spool.
    pub online: bool,
    /// Spool rows up to this id were dropped by a limit: copies in memory must not be sent.
    pub dropped_up_to: u64,
    pub stats: DeliveryStats,
    drops: DropReport,
    last_spool_error: Option<Instant>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the network task when a message was queued or spooled.
    pub wake: tokio::sync::Notify,
    events: UnboundedSender<DeliveryEvent>,
    pub queue_capacity: usize,
    limits: SpoolLimits,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn emit(&self, event: DeliveryEvent) {
        // Nobody listening is fine: the stats still count.
        let _ = self.events.send(event);
    }

    /// Writes messages to the spool, counting them and whatever the limits dropped.
    pub fn spool_insert(
        &self,
        st: &mut State,
        items: &[(u64, i64, &Message)],
    ) -> Result<(), DeliveryError> {
        let Some(spool) = st.spool.as_mut() else {
            return Err(DeliveryError::Stopped);
        };
        match spool.insert(items) {
            Ok(dropped) => {
                st.stats.spooled += items.len() as u64;
                self.note_drops(st, dropped);
                Ok(())
            }
            Err(e) => {
                let e = e.to_string();
                self.spool_error(st, e.clone());
                Err(DeliveryError::Spool(e))
            }
        }
    }

    /// Reports a spool failure, at most once every few seconds.
    pub fn spool_error(&self, st: &mut State, error: String) {
        let now = Instant::now();
        if st
            .last_spool_error
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5))
        {
            st.last_spool_error = Some(now);
            self.emit(DeliveryEvent::SpoolError(error));
        }
    }

    pub fn note_drops(&self, st: &mut State, dropped: Dropped) {
        if dropped.total() == 0 {
            return;
        }
        st.stats.dropped += dropped.total();
        st.dropped_up_to = st.dropped_up_to.max(dropped.up_to);
        st.drops.unreported += dropped.total();
        st.drops.by_size |= dropped.by_size > 0;
        st.drops.by_age |= dropped.by_age > 0;
        self.report_drops(st, false);
    }

    /// Emits [`DeliveryEvent::SpoolFull`] for unreported drops if a second passed since the
    /// last one (or `force`).
    pub fn report_drops(&self, st: &mut State, force: bool) {
        let d = &mut st.drops;
        if d.unreported == 0 {
            return;
        }
        let now = Instant::now();
        if !force
            && d.last
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        let mut policy = Vec::new();
        if d.by_size {
            policy.push(format!(
                "drop-oldest: spool-max-bytes ({} bytes) reached",
                self.limits.max_bytes
            ));
        }
        if d.by_age {
            policy.push(format!(
                "drop-expired: older than spool-max-age ({} s)",
                self.limits.max_age.as_secs()
            ));
        }
        let event = DeliveryEvent::SpoolFull {
            dropped: d.unreported,
            policy: policy.join("; "),
        };
        *d = DropReport {
            last: Some(now),
            ..DropReport::default()
        };
        self.emit(event);
    }

    /// Applies the spool's age limit as time passes.
    pub fn expire(&self, st: &mut State) {
        if self.limits.max_age.is_zero() {
            return;
        }
        let Some(spool) = st.spool.as_mut() else {
            return;
        };
        if spool.is_empty() {
            return;
        }
        match spool.enforce(spool::now_ms()) {
            Ok(dropped) => self.note_drops(st, dropped),
            Err(e) => self.spool_error(st, e.to_string()),
        }
    }
}

/// A running MQTT publisher. See the module documentation for what it guarantees.
pub struct Delivery {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::watch::Sender<Option<Instant>>>,
    /// In a mutex only so that `Delivery` is `Sync` (an mpsc receiver is not).
    done: Mutex<std::sync::mpsc::Receiver<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Longer than any spool write or the network task's last steps take.
const STOP_MARGIN: Duration = Duration::from_secs(10);

impl Delivery {
    /// Validates settings (files readable, URI parsed, TLS material loadable: errors name the
    /// setting), opens the spool (messages left by a previous run are sent first, in order),
    /// and spawns the network task on [`crate::runtime::handle`].
    ///
    /// Does not wait for the broker: an unreachable broker is a [`DeliveryEvent`], not an
    /// error. The receiver gets every event; dropping it is allowed.
    pub fn start(
        config: DeliveryConfig,
    ) -> Result<(Delivery, UnboundedReceiver<DeliveryEvent>), DeliveryError> {
        config.check()?;
        let tls = if config.broker.tls {
            Some(tls::client_config(&config)?)
        } else {
            None
        };
        let limits = SpoolLimits {
            max_bytes: config.spool_max_bytes,
            max_age: config.spool_max_age,
        };
        let (spool, dropped) = Spool::open(&config.spool_path, limits)
            .map_err(|e| DeliveryError::Spool(e.to_string()))?;
        let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                next_seq: spool.max_id() + 1,
                spool: Some(spool),
                online: false,
                dropped_up_to: 0,
                stats: DeliveryStats::default(),
                drops: DropReport::default(),
                last_spool_error: None,
            }),
            wake: tokio::sync::Notify::new(),
            events,
            queue_capacity: config.queue_capacity,
            limits,
        });
        {
            let mut st = shared.lock();
            shared.note_drops(&mut st, dropped);
        }
        let (stop, stop_rx) = tokio::sync::watch::channel(None);
        let (done_tx, done) = std::sync::mpsc::channel();
        let task = network::Task::new(shared.clone(), &config, tls, stop_rx, done_tx);
        let task = crate::runtime::handle().spawn(task.run());
        Ok((
            Delivery {
                shared,
                stop: Some(stop),
                done: Mutex::new(done),
                task,
            },
            events_rx,
        ))
    }

    /// Hands a message over for publishing. Never blocks on the network: the message goes to
    /// the bounded in-memory queue, or, when that is full or the broker is unreachable, to
    /// the spool (a local disk write).
    ///
    /// Errors: a topic that cannot be published to or a message over [`MAX_MESSAGE_BYTES`]
    /// ([`DeliveryError::Message`]); the spool failing while the memory queue is full
    /// ([`DeliveryError::Spool`], the message is lost and counted as dropped).
    pub fn send(&self, msg: Message) -> Result<(), DeliveryError> {
        config::check_topic(&msg.topic).map_err(DeliveryError::Message)?;
        if msg.topic.len() + msg.payload.len() > MAX_MESSAGE_BYTES {
            return Err(DeliveryError::Message(format!(
                "{} bytes is more than the {MAX_MESSAGE_BYTES} a message may have",
                msg.topic.len() + msg.payload.len()
            )));
        }
        let created_ms = spool::now_ms();
        let mut st = self.shared.lock();
        if st.spool.is_none() {
            return Err(DeliveryError::Stopped);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let room = st.queue.len() < self.shared.queue_capacity;
        let to_spool = !(st.online && room);
        let spool_error = if to_spool {
            self.shared
                .spool_insert(&mut st, &[(seq, created_ms, &msg)])
                .err()
        } else {
            None
        };
        let mut result = Ok(());
        match spool_error {
            Some(e) if !room => {
                st.stats.dropped += 1;
                result = Err(e);
            }
            // On disk now.
            None if to_spool => {}
            // Online with room, or the disk failed but memory has room: keep it there.
            _ => {
                st.queue.push_back(Pending {
                    seq,
                    created_ms,
                    msg,
                    spooled: false,
                });
                st.stats.queued += 1;
            }
        }
        drop(st);
        self.shared.wake.notify_one();
        result
    }

    pub fn stats(&self) -> DeliveryStats {
        let st = self.shared.lock();
        let mut stats = st.stats.clone();
        stats.queue_depth = st.queue.len() as u64;
        stats.spool_depth = st.spool.as_ref().map_or(0, Spool::len);
        stats
    }

    /// Delivers what it can within `grace` (queue and spool, while connected), spools the
    /// rest, publishes `offline` to the status topic, disconnects and closes the spool.
    ///
    /// Blocks the calling thread for up to `grace` and a little more (the last `offline`
    /// acknowledgement, the final spool write); call it from the element's `stop()`, not from
    /// a task of the plugin runtime. If the broker is unreachable it returns at once.
    pub fn stop(mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Some(Instant::now() + grace));
        }
        let done = self
            .done
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(grace + STOP_MARGIN);
        if done.is_err() {
            // The task is stuck (it should never be): end it, keep what memory holds.
            self.task.abort();
            let mut st = self.shared.lock();
            let memory: Vec<Pending> = st.queue.drain(..).collect();
            let items: Vec<_> = memory
                .iter()
                .map(|p| (p.seq, p.created_ms, &p.msg))
                .collect();
            let _ = self.shared.spool_insert(&mut st, &items);
            st.spool = None;
        }
    }
}

impl Drop for Delivery {
    /// Without [`Delivery::stop`]: the network task spools what it holds and ends, without
    /// waiting for the broker.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Some(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Delivery>();
    }
}
