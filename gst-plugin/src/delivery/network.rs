//! The network task: connects with back-off, hands messages to rumqttc in sequence order,
//! matches acknowledgements to messages, and puts everything unacknowledged back into the
//! spool when a connection ends.
//!
//! # Working around rumqttc's own retransmission
//! rumqttc keeps unacknowledged publishes of a lost connection and sends them again on the
//! next one, but only if the broker still has the session (`session_present`); otherwise it
//! silently discards them. It also resends them in packet-id order, not sending order. So
//! this task never reuses an `EventLoop`: each connection gets a fresh one, dropped with
//! whatever it held when the connection ends, and the task itself owns the truth: the ordered
//! list of messages handed over and not yet acknowledged (`outstanding`). On a lost
//! connection those go to the spool, and the next connection sends them again, from the spool,
//! in sequence order, as new publishes. (A broker that kept a QoS 2 message of the old session
//! under the same packet id takes the new publish as a reused id: mosquitto logs "Reused
//! message ID" and delivers it.)
//!
//! Matching acknowledgements: the event loop takes requests from its channel in order and
//! reports each publish it writes as `Outgoing::Publish(pkid)` (or `AwaitAck(pkid)` when the
//! id is still in use, followed later by `Outgoing::Publish(pkid)` when it goes out), so the
//! n-th such report is the n-th message handed over; a `PubAck`/`PubComp` then completes the
//! oldest outstanding message with that id. At most [`WINDOW`] ([`WINDOW_QOS2`] for QoS 2)
//! messages are outstanding, and rumqttc's own in-flight limit is above that, so its request
//! channel never fills. A message not acknowledged within [`ACK_TIMEOUT`] ends the connection
//! (and so is sent again), so a broker that loses an acknowledgement cannot stall delivery.
//!
//! The event loop runs in its own small task that forwards events through a channel: its
//! `poll()` must not be cancelled halfway, and this task needs to wait on several things.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, LastWill,
    MqttOptions, Outgoing, StateError, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use super::backoff::Backoff;
use super::{DeliveryConfig, DeliveryEvent, MAX_MESSAGE_BYTES, Pending, Shared};

/// Most messages handed to the MQTT client and not yet acknowledged.
pub const WINDOW: usize = 64;
/// The same for QoS 2. MQTT 3.1.1 has no way for a broker to announce how many incoming QoS 2
/// messages it holds at once, and mosquitto (`max_inflight_messages`, default 20) silently
/// drops what is over its limit, without PUBREC.
pub const WINDOW_QOS2: usize = 10;
/// A message not acknowledged within this time means the broker will not: reconnect, which
/// sends it again (MQTT 3.1.1 resends only on a new connection).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Housekeeping period: drop reports, the spool's age limit.
const TICK: Duration = Duration::from_secs(1);
/// How long the `offline` status may take after the grace period of a stop.
const OFFLINE_WAIT: Duration = Duration::from_millis(500);
/// How long to let the event loop write DISCONNECT.
const DISCONNECT_WAIT: Duration = Duration::from_millis(500);
/// TCP + TLS + CONNACK must complete within this.
const CONNECT_TIMEOUT_S: u64 = 5;

type NetEvent = Result<Event, ConnectionError>;

/// The rumqttc options for `config` (a fresh event loop is made from them per connection).
fn mqtt_options(config: &DeliveryConfig, tls: Option<Arc<rustls::ClientConfig>>) -> MqttOptions {
    let mut o = MqttOptions::new(
        config.client_id.clone(),
        config.broker.connect_host(),
        config.broker.port,
    );
    o.set_keep_alive(config.keep_alive);
    o.set_clean_session(!config.persistent_session);
    if let Some(user) = &config.username {
        let password = config.password.as_ref().map(|p| p.expose().to_owned());
        o.set_credentials(user.clone(), password.unwrap_or_default());
    }
    // Room for the biggest message `send` accepts; the broker sends us only acks.
    o.set_max_packet_size(64 * 1024, MAX_MESSAGE_BYTES + 1024);
    // Above WINDOW, plus the status messages: rumqttc never holds a request back.
    o.set_inflight(WINDOW as u16 + 4);
    if let Some(tls) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    if !config.status_topic.is_empty() {
        o.set_last_will(LastWill::new(
            config.status_topic.clone(),
            "offline",
            rumqttc::QoS::AtLeastOnce,
            true,
        ));
    }
    o
}

/// Drives one event loop until its connection ends; the end is the last item sent.
async fn poll(mut eventloop: EventLoop, tx: mpsc::Sender<NetEvent>) {
    eventloop
        .network_options
        .set_connection_timeout(CONNECT_TIMEOUT_S);
    loop {
        let event = eventloop.poll().await;
        let end = event.is_err();
        if tx.send(event).await.is_err() || end {
            break;
        }
    }
}

enum Item {
    Data(Pending),
    /// The retained `online`/`offline` status.
    Status {
        offline: bool,
    },
}

struct Outstanding {
    item: Item,
    /// Packet id the event loop gave it (0 for QoS 0), once written or waiting for an id.
    pkid: Option<u16>,
    /// When it was handed over.
    since: Instant,
}

impl Outstanding {
    fn new(item: Item) -> Self {
        Outstanding {
            item,
            pkid: None,
            since: Instant::now(),
        }
    }
}

enum SessionEnd {
    Lost(String),
    Stopped,
}

pub(crate) struct Task {
    shared: Arc<Shared>,
    options: MqttOptions,
    broker: String,
    tls: bool,
    qos: rumqttc::QoS,
    /// Most data messages outstanding at once.
    window: usize,
    status_topic: String,
    backoff: Backoff,
    stop: watch::Receiver<Option<Instant>>,
    done: std::sync::mpsc::Sender<()>,
    /// Handed to the current connection, not yet acknowledged, in sending order.
    outstanding: VecDeque<Outstanding>,
    /// Read from the spool, not yet handed over, in id order.
    loaded: VecDeque<Pending>,
    /// Highest spool id read into `loaded` (rows above it are still to read).
    cursor: u64,
    /// Last failure reported, so that a repeated one is not reported again.
    last_failure: Option<DeliveryEvent>,
}

impl Task {
    pub fn new(
        shared: Arc<Shared>,
        config: &DeliveryConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        stop: watch::Receiver<Option<Instant>>,
        done: std::sync::mpsc::Sender<()>,
    ) -> Self {
        Task {
            shared,
            options: mqtt_options(config, tls),
            broker: config.broker.to_string(),
            tls: config.broker.tls,
            qos: config.qos.to_mqtt(),
            window: match config.qos {
                super::Qos::ExactlyOnce => WINDOW_QOS2,
                _ => WINDOW,
            },
            status_topic: config.status_topic.clone(),
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            stop,
            done,
            outstanding: VecDeque::new(),
            loaded: VecDeque::new(),
            cursor: 0,
            last_failure: None,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    pub async fn run(mut self) {
        loop {
            if self.stopping() {
                break;
            }
            let (client, eventloop) = AsyncClient::new(self.options.clone(), WINDOW + 8);
            let (tx, mut events) = mpsc::channel(4 * WINDOW);
            let poller = tokio::spawn(poll(eventloop, tx));
            let first = tokio::select! {
                first = events.recv() => first,
                _ = self.stop.changed() => {
                    poller.abort();
                    break;
                }
            };
            match first {
                Some(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {}
                Some(Err(e)) => {
                    poller.abort();
                    let event = self.classify(&e);
                    self.failed(event);
                    if !self.wait_backoff().await {
                        break;
                    }
                    continue;
                }
                other => {
                    poller.abort();
                    self.failed(DeliveryEvent::Disconnected(format!(
                        "{}: expected CONNACK, got {other:?}",
                        self.broker
                    )));
                    if !self.wait_backoff().await {
                        break;
                    }
                    continue;
                }
            }
            self.backoff.reset();
            self.last_failure = None;
            {
                let mut st = self.shared.lock();
                st.online = true;
                st.stats.connected = true;
            }
            self.shared.emit(DeliveryEvent::Connected);
            let end = self.session(&client, &mut events).await;
            poller.abort();
            self.connection_ended();
            match end {
                SessionEnd::Stopped => break,
                SessionEnd::Lost(reason) => {
                    self.failed(DeliveryEvent::Disconnected(reason));
                    if !self.wait_backoff().await {
                        break;
                    }
                }
            }
        }
        self.finish();
    }

    /// Reports a failure unless it is the same as the last one.
    fn failed(&mut self, event: DeliveryEvent) {
        if self.last_failure.as_ref() != Some(&event) {
            self.last_failure = Some(event.clone());
            self.shared.emit(event);
        }
    }

    fn classify(&self, e: &ConnectionError) -> DeliveryEvent {
        let broker = &self.broker;
        match e {
            ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
            ) => DeliveryEvent::AuthFailed(format!(
                "{broker} refused the connection: {}",
                refusal(*code)
            )),
            ConnectionError::ConnectionRefused(code) => DeliveryEvent::Disconnected(format!(
                "{broker} refused the connection: {}",
                refusal(*code)
            )),
            ConnectionError::Tls(e) => {
                // Closed in the middle of the handshake rather than refused with an alert:
                // most likely not a TLS port.
                let hint = match e {
                    rumqttc::TlsError::Io(io)
                        if matches!(
                            io.kind(),
                            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                        ) =>
                    {
                        "; if this is a plain MQTT port, use mqtt://"
                    }
                    _ => "",
                };
                DeliveryEvent::TlsFailed(format!("TLS handshake with {broker} failed: {e}{hint}"))
            }
            // TLS 1.3 finishes the client's side of the handshake before the server checks the
            // client certificate: its refusal arrives as an alert on the first read.
            e if tls_cause(e).is_some() => DeliveryEvent::TlsFailed(format!(
                "TLS with {broker} failed: {}",
                tls_cause(e).map(|t| t.to_string()).unwrap_or_default()
            )),
            // Garbage or silence instead of a CONNACK on a plain connection: most likely a TLS
            // port (the TLS server rejects our plain-text CONNECT).
            ConnectionError::MqttState(
                StateError::ConnectionAborted | StateError::Deserialization(_),
            )
            | ConnectionError::NotConnAck(_)
            | ConnectionError::NetworkTimeout
                if !self.tls =>
            {
                DeliveryEvent::Disconnected(format!(
                    "{broker}: no MQTT answer to CONNECT ({e}); if this is a TLS port, use mqtts://"
                ))
            }
            e => DeliveryEvent::Disconnected(format!("{broker}: {e}")),
        }
    }

    /// Sleeps the next back-off delay, doing housekeeping; false if a stop came meanwhile.
    async fn wait_backoff(&mut self) -> bool {
        let until = tokio::time::Instant::now() + self.backoff.next_delay();
        loop {
            if self.stopping() {
                return false;
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            let step = (until - now).min(TICK);
            tokio::select! {
                _ = tokio::time::sleep(step) => self.housekeeping(),
                r = self.stop.changed() => {
                    if r.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    fn housekeeping(&self) {
        let mut st = self.shared.lock();
        self.shared.report_drops(&mut st, false);
        self.shared.expire(&mut st);
    }

    /// Publishes the retained `online`/`offline` status (when a status topic is set) and
    /// tracks it until the broker acknowledges it.
    fn publish_status(&mut self, client: &AsyncClient, offline: bool) {
        let payload = if offline { "offline" } else { "online" };
        if !self.status_topic.is_empty()
            && client
                .try_publish(&self.status_topic, rumqttc::QoS::AtLeastOnce, true, payload)
                .is_ok()
        {
            self.outstanding
                .push_back(Outstanding::new(Item::Status { offline }));
        }
    }

    async fn session(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<NetEvent>,
    ) -> SessionEnd {
        let mut collided: Option<u16> = None;
        let mut deadline: Option<Instant> = *self.stop.borrow();
        // Set once `offline` went out: until when to wait for its acknowledgement.
        let mut closing: Option<Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        self.publish_status(client, false);

        loop {
            if closing.is_none() {
                self.fill(client);
            }
            if let Some(d) = deadline {
                let now = Instant::now();
                if closing.is_none() && (now >= d || self.drained()) {
                    closing = Some(d.max(now + OFFLINE_WAIT));
                    self.publish_status(client, true);
                }
                if let Some(c) = closing {
                    let offline_pending = self
                        .outstanding
                        .iter()
                        .any(|o| matches!(o.item, Item::Status { offline: true }));
                    if !offline_pending || now >= c {
                        let _ = client.try_disconnect();
                        let _ = tokio::time::timeout(DISCONNECT_WAIT, async {
                            while let Some(Ok(event)) = events.recv().await {
                                self.on_event(event, &mut collided);
                            }
                        })
                        .await;
                        return SessionEnd::Stopped;
                    }
                }
            }
            let overdue = self.outstanding.front().map(|o| o.since + ACK_TIMEOUT);
            if overdue.is_some_and(|t| Instant::now() >= t) {
                return SessionEnd::Lost(format!(
                    "{}: no acknowledgement within {} s, reconnecting",
                    self.broker,
                    ACK_TIMEOUT.as_secs()
                ));
            }
            let wake_at = [closing.or(deadline), overdue]
                .into_iter()
                .flatten()
                .min()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                event = events.recv() => match event {
                    Some(Ok(event)) => self.on_event(event, &mut collided),
                    Some(Err(e)) => return SessionEnd::Lost(format!("{}: connection lost: {e}", self.broker)),
                    None => return SessionEnd::Lost(format!("{}: the MQTT event loop ended", self.broker)),
                },
                _ = self.shared.wake.notified(), if closing.is_none() => {}
                r = self.stop.changed(), if deadline.is_none() => {
                    let asked = if r.is_ok() { *self.stop.borrow() } else { None };
                    deadline = Some(asked.unwrap_or_else(Instant::now));
                }
                _ = tokio::time::sleep_until(wake_at.unwrap_or_else(tokio::time::Instant::now)), if wake_at.is_some() => {}
                _ = tick.tick() => self.housekeeping(),
            }
        }
    }

    /// Nothing left to deliver: no message outstanding, in memory or in the spool.
    fn drained(&self) -> bool {
        if self
            .outstanding
            .iter()
            .any(|o| matches!(o.item, Item::Data(_)))
            || !self.loaded.is_empty()
        {
            return false;
        }
        let st = self.shared.lock();
        st.queue.is_empty() && st.spool.as_ref().is_none_or(|s| s.max_id() <= self.cursor)
    }

    /// Hands messages to the client, lowest sequence number first, up to the window.
    fn fill(&mut self, client: &AsyncClient) {
        let mut handed = 0;
        while self.outstanding.len() < self.window {
            let Some(p) = self.next_message() else { break };
            let sent = client.try_publish(
                p.msg.topic.clone(),
                self.qos,
                p.msg.retain,
                p.msg.payload.clone(),
            );
            if sent.is_err() {
                // The event loop is going away; the message stays first in line.
                if p.spooled {
                    self.loaded.push_front(p);
                } else {
                    self.shared.lock().queue.push_front(p);
                }
                break;
            }
            self.outstanding.push_back(Outstanding::new(Item::Data(p)));
            handed += 1;
        }
        if handed > 0 {
            self.shared.lock().stats.sent += handed;
        }
    }

    /// The message with the lowest sequence number among those read from the spool and those
    /// in the memory queue, reading more of the spool when needed.
    fn next_message(&mut self) -> Option<Pending> {
        let mut st = self.shared.lock();
        let dropped_up_to = st.dropped_up_to;
        while self.loaded.front().is_some_and(|p| p.seq <= dropped_up_to) {
            self.loaded.pop_front();
        }
        if self.loaded.is_empty() {
            let mut failure = None;
            if let Some(spool) = st.spool.as_ref().filter(|s| s.max_id() > self.cursor) {
                match spool.load_after(self.cursor, self.window) {
                    Ok(rows) if rows.is_empty() => self.cursor = spool.max_id(),
                    Ok(rows) => {
                        self.cursor = rows.last().map_or(self.cursor, |r| r.id);
                        self.loaded.extend(rows.into_iter().map(|r| Pending {
                            seq: r.id,
                            created_ms: 0,
                            msg: r.message,
                            spooled: true,
                        }));
                    }
                    Err(e) => failure = Some(e.to_string()),
                }
            }
            if let Some(e) = failure {
                // Sending newer messages from memory first would break the order: wait.
                self.shared.spool_error(&mut st, e);
                return None;
            }
        }
        let from_spool = match (self.loaded.front(), st.queue.front()) {
            (Some(a), Some(b)) => a.seq < b.seq,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_spool {
            self.loaded.pop_front()
        } else {
            st.queue.pop_front()
        }
    }

    fn on_event(&mut self, event: Event, collided: &mut Option<u16>) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if pkid != 0 && *collided == Some(pkid) {
                    // The message that waited for this id went out now; it is already matched.
                    *collided = None;
                } else if let Some(i) = self.outstanding.iter().position(|o| o.pkid.is_none()) {
                    self.outstanding[i].pkid = Some(pkid);
                    if pkid == 0 {
                        // QoS 0: written and flushed is all there will be.
                        self.complete(i);
                    }
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                if let Some(i) = self.outstanding.iter().position(|o| o.pkid.is_none()) {
                    self.outstanding[i].pkid = Some(pkid);
                }
                *collided = Some(pkid);
            }
            Event::Incoming(Incoming::PubAck(ack)) => self.acknowledged(ack.pkid),
            Event::Incoming(Incoming::PubComp(comp)) => self.acknowledged(comp.pkid),
            _ => {}
        }
    }

    fn acknowledged(&mut self, pkid: u16) {
        if let Some(i) = self.outstanding.iter().position(|o| o.pkid == Some(pkid)) {
            self.complete(i);
        }
    }

    fn complete(&mut self, i: usize) {
        let Some(done) = self.outstanding.remove(i) else {
            return;
        };
        if let Item::Data(p) = done.item {
            let mut st = self.shared.lock();
            st.stats.acked += 1;
            if p.spooled {
                let removed = st.spool.as_mut().map(|s| s.remove(p.seq));
                if let Some(Err(e)) = removed {
                    self.shared.spool_error(&mut st, e.to_string());
                }
            }
        }
    }

    /// The connection is gone: what it was given and did not acknowledge, and what waits in
    /// memory, goes to the spool, to be read again from the start on the next connection.
    fn connection_ended(&mut self) {
        let mut st = self.shared.lock();
        st.online = false;
        st.stats.connected = false;
        let mut memory: Vec<Pending> = self
            .outstanding
            .drain(..)
            .filter_map(|o| match o.item {
                Item::Data(p) if !p.spooled => Some(p),
                _ => None,
            })
            .collect();
        memory.extend(st.queue.drain(..));
        memory.sort_by_key(|p| p.seq);
        self.loaded.clear();
        self.cursor = 0;
        if memory.is_empty() {
            return;
        }
        let items: Vec<_> = memory
            .iter()
            .map(|p| (p.seq, p.created_ms, &p.msg))
            .collect();
        if self.shared.spool_insert(&mut st, &items).is_err() {
            // The disk failed: keep them in memory, first in line.
            for p in memory.into_iter().rev() {
                st.queue.push_front(p);
            }
        }
    }

    fn finish(mut self) {
        self.connection_ended();
        let mut st = self.shared.lock();
        // Only a failed disk leaves messages in memory now; they end with the process.
        let lost = st.queue.len() as u64;
        st.queue.clear();
        st.stats.dropped += lost;
        self.shared.report_drops(&mut st, true);
        // Closing the file releases its lock for the next start.
        st.spool = None;
        st.online = false;
        st.stats.connected = false;
        drop(st);
        let _ = self.done.send(());
    }
}

/// The rustls error somewhere in an error's chain (rumqttc wraps it in I/O errors).
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // `io::Error::source` skips the wrapped error itself.
        let wrapped = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if wrapped.is_some() {
            return wrapped;
        }
        next = err.source();
    }
    None
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::BadClientId => "client id rejected",
        ConnectReturnCode::ServiceUnavailable => "server unavailable",
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}
