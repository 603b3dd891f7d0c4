//! GObject glue of `visionpublish`: properties, state changes, and the hand-over of each
//! buffer's result to the plain modules `event` (what to publish, as JSON) and `delivery`
//! (MQTT, spool). A `BaseTransform` in pass-through mode: buffers are only read.

use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::{ModeChoice, QosChoice, default_spool_dir};
use crate::delivery::{
    BrokerUri, Delivery, DeliveryConfig, DeliveryError, DeliveryEvent, DeliveryStats, Message, Qos,
    Secret,
};
use crate::event::{
    self, DeliveryCounts, EventBuilder, FrameContext, HealthTracker, Identity, Observation,
    Placeholder, Policy, PublishMode, Resolution, TopicTemplate, TopicValues,
};
use crate::meta;
use crate::redact::uri_credentials;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "visionpublish",
        gst::DebugColorFlags::empty(),
        Some("Classification events to MQTT"),
    )
});

/// How long `stop()` lets the delivery send what is queued before spooling the rest.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Least time between two warnings about events that could not be handed over.
const SEND_WARNING_EVERY: Duration = Duration::from_secs(5);

const DEFAULT_BROKER: &str = "mqtt://127.0.0.1:1883";
const DEFAULT_TOPIC: &str = "vision/{sensor}/classifications";
const DEFAULT_STATUS_TOPIC: &str = "vision/{sensor}/status";
const DEFAULT_HEALTH_TOPIC: &str = "vision/{sensor}/health";
const DEFAULT_SENSOR: &str = "camera-0";
const DEFAULT_KEEP_ALIVE: u32 = 30;
const DEFAULT_HEALTH_INTERVAL: u32 = 10;
const DEFAULT_SUMMARY_INTERVAL: u32 = 60;
const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;
const DEFAULT_SPOOL_MAX_AGE: u64 = 7 * 24 * 3600;
const DEFAULT_QUEUE_SIZE: u32 = 1024;
const DEFAULT_BACKOFF_MIN_MS: u32 = 1000;
const DEFAULT_BACKOFF_MAX_MS: u32 = 60_000;

#[derive(Debug, Clone)]
struct Settings {
    broker: String,
    client_id: Option<String>,
    keep_alive: u32,
    username: Option<String>,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    tls_insecure: bool,
    qos: QosChoice,
    persistent_session: bool,
    topic: String,
    status_topic: String,
    health_topic: String,
    health_interval: u32,
    sensor_id: String,
    source: Option<String>,
    tags: Option<String>,
    mode: ModeChoice,
    summary_interval: u32,
    min_confidence: f64,
    spool_dir: Option<PathBuf>,
    spool_max_bytes: u64,
    spool_max_age: u64,
    queue_size: u32,
    backoff_min_ms: u32,
    backoff_max_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            broker: DEFAULT_BROKER.into(),
            client_id: None,
            keep_alive: DEFAULT_KEEP_ALIVE,
            username: None,
            password: None,
            password_file: None,
            password_env: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            tls_insecure: false,
            qos: QosChoice::AtLeastOnce,
            persistent_session: true,
            topic: DEFAULT_TOPIC.into(),
            status_topic: DEFAULT_STATUS_TOPIC.into(),
            health_topic: DEFAULT_HEALTH_TOPIC.into(),
            health_interval: DEFAULT_HEALTH_INTERVAL,
            sensor_id: DEFAULT_SENSOR.into(),
            source: None,
            tags: None,
            mode: ModeChoice::All,
            summary_interval: DEFAULT_SUMMARY_INTERVAL,
            min_confidence: 0.0,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            spool_max_age: DEFAULT_SPOOL_MAX_AGE,
            queue_size: DEFAULT_QUEUE_SIZE,
            backoff_min_ms: DEFAULT_BACKOFF_MIN_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
        }
    }
}

/// What exists between `start()` and `stop()`.
struct Running {
    delivery: Delivery,
    builder: EventBuilder,
    health: HealthTracker,
    identity: Identity,
    topic: TopicTemplate,
    health_topic: Option<TopicTemplate>,
    /// The source was given, or already looked for upstream.
    source_known: bool,
    resolution: Option<Resolution>,
    started: Instant,
    /// Summary clock at the end of the last frame, for the window a flush closes.
    clock_end: u64,
    last_send_warning: Option<Instant>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
pub struct VisionPublish {
    settings: Mutex<Settings>,
    running: Mutex<Option<Running>>,
    /// Delivery counters at the last stop, so that `stats` still answers after the run.
    last_stats: Mutex<(u64, DeliveryStats)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn counts(s: &DeliveryStats) -> DeliveryCounts {
    DeliveryCounts {
        queue_depth: s.queue_depth,
        spooled: s.spool_depth,
        sent: s.sent,
        acked: s.acked,
        dropped: s.dropped,
        connected: s.connected,
    }
}

fn settings_error(setting: &str, reason: impl std::fmt::Display) -> gst::ErrorMessage {
    gst::error_msg!(gst::LibraryError::Settings, ("{setting}: {reason}"))
}

impl VisionPublish {
    // ---- lifecycle ------------------------------------------------------------------------

    fn delivery_config(&self, s: &Settings) -> Result<DeliveryConfig, gst::ErrorMessage> {
        let broker: BrokerUri = s
            .broker
            .parse()
            .map_err(|e: DeliveryError| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
        let client_id = s
            .client_id
            .clone()
            .unwrap_or_else(|| format!("visionpublish-{}", s.sensor_id));
        let spool_dir = match &s.spool_dir {
            Some(d) => d.clone(),
            None => default_spool_dir(
                &s.sensor_id,
                std::env::var_os("XDG_STATE_HOME")
                    .map(PathBuf::from)
                    .as_deref(),
                std::env::var_os("HOME").map(PathBuf::from).as_deref(),
            )
            .ok_or_else(|| {
                settings_error(
                    "spool-dir",
                    "is not set and neither $XDG_STATE_HOME nor $HOME is an absolute path",
                )
            })?,
        };
        let mut c = DeliveryConfig::new(broker, client_id, spool_dir.join("spool.sqlite"));
        c.keep_alive = Duration::from_secs(s.keep_alive.into());
        c.username = s.username.clone();
        c.password = self.password(s)?;
        c.ca_file = s.ca_file.clone();
        c.client_cert = s.client_cert.clone();
        c.client_key = s.client_key.clone();
        c.tls_insecure = s.tls_insecure;
        c.qos = match s.qos {
            QosChoice::AtMostOnce => Qos::AtMostOnce,
            QosChoice::AtLeastOnce => Qos::AtLeastOnce,
            QosChoice::ExactlyOnce => Qos::ExactlyOnce,
        };
        c.persistent_session = s.persistent_session;
        c.spool_max_bytes = s.spool_max_bytes;
        c.spool_max_age = Duration::from_secs(s.spool_max_age);
        c.queue_capacity = s.queue_size.max(1) as usize;
        c.backoff_min = Duration::from_millis(s.backoff_min_ms.into());
        c.backoff_max = Duration::from_millis(s.backoff_max_ms.into());
        c.status_topic = if s.status_topic.is_empty() {
            String::new()
        } else {
            TopicTemplate::parse("status-topic", &s.status_topic, &[Placeholder::Sensor])
                .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?
                .render(&TopicValues {
                    sensor: &s.sensor_id,
                    ..TopicValues::default()
                })
        };
        Ok(c)
    }

    /// The password from exactly one of `password`, `password-file`, `password-env`.
    fn password(&self, s: &Settings) -> Result<Option<Secret>, gst::ErrorMessage> {
        let given = [
            s.password.is_some(),
            s.password_file.is_some(),
            s.password_env.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(settings_error(
                "password",
                "set only one of password, password-file and password-env",
            ));
        }
        if let Some(p) = &s.password {
            return Ok(Some(p.clone()));
        }
        if let Some(path) = &s.password_file {
            return Secret::from_file(path).map(Some).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::OpenRead,
                    ("password-file {}: {e}", path.display())
                )
            });
        }
        if let Some(var) = &s.password_env {
            return Secret::from_env(var).map(Some).ok_or_else(|| {
                settings_error(
                    "password-env",
                    format!("environment variable {var} is not set (or not valid UTF-8)"),
                )
            });
        }
        Ok(None)
    }

    fn delivery_error(e: DeliveryError) -> gst::ErrorMessage {
        match e {
            DeliveryError::Settings { setting, reason } => {
                let domain = match setting {
                    "ca-file" | "client-cert" | "client-key" => gst::ResourceError::OpenRead,
                    _ => gst::ResourceError::Settings,
                };
                gst::error_msg!(domain, ("{setting}: {reason}"))
            }
            DeliveryError::Spool(reason) => {
                gst::error_msg!(gst::ResourceError::OpenReadWrite, ("spool-dir: {reason}"))
            }
            other => gst::error_msg!(gst::ResourceError::Failed, ("{other}")),
        }
    }

    fn start_running(&self) -> Result<(), gst::ErrorMessage> {
        let s = lock(&self.settings).clone();
        event::check_sensor_id(&s.sensor_id)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
        let all = [Placeholder::Sensor, Placeholder::Model, Placeholder::Label];
        let topic = TopicTemplate::parse("topic", &s.topic, &all)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
        let health_topic = if s.health_interval > 0 && !s.health_topic.is_empty() {
            Some(
                TopicTemplate::parse("health-topic", &s.health_topic, &[Placeholder::Sensor])
                    .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?,
            )
        } else {
            None
        };
        let tags = event::parse_tags(s.tags.as_deref().unwrap_or(""))
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
        if s.mode == ModeChoice::Summary && s.summary_interval == 0 {
            return Err(settings_error("summary-interval", "must be at least 1 s"));
        }
        let config = self.delivery_config(&s)?;
        let broker = config.broker.to_string();
        self.warn_about_trust(&config);
        let spool = config.spool_path.clone();
        let status = config.status_topic.clone();
        let (delivery, events) = Delivery::start(config).map_err(Self::delivery_error)?;

        let now = SystemTime::now();
        let identity = Identity {
            sensor_id: s.sensor_id.clone(),
            source: s.source.as_deref().map(|v| uri_credentials(v).into_owned()),
            tags,
            run: event::run_id(now, std::process::id()),
        };
        let policy = Policy {
            mode: match s.mode {
                ModeChoice::All => PublishMode::All,
                ModeChoice::Change => PublishMode::Change,
                ModeChoice::Summary => PublishMode::Summary,
            },
            min_confidence: s.min_confidence as f32,
            summary_interval: Duration::from_secs(s.summary_interval.into()),
        };
        gst::info!(
            CAT,
            imp = self,
            "publishing to {broker} as {} (run {}): topic {}, mode {:?}, status {status:?}, spool {}",
            identity.sensor_id,
            identity.run,
            s.topic,
            policy.mode,
            spool.display()
        );

        let rt = crate::runtime::handle();
        let mut tasks = vec![rt.spawn(Self::watch_delivery(self.downgrade(), events, broker))];
        if health_topic.is_some() {
            let every = Duration::from_secs(s.health_interval.into());
            let this = self.downgrade();
            tasks.push(rt.spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(this) = this.upgrade() else { return };
                    this.publish_health();
                }
            }));
        }
        *lock(&self.running) = Some(Running {
            delivery,
            builder: EventBuilder::new(identity.clone(), policy),
            health: HealthTracker::new(),
            source_known: identity.source.is_some(),
            identity,
            topic,
            health_topic,
            resolution: None,
            started: Instant::now(),
            clock_end: 0,
            last_send_warning: None,
            tasks,
        });
        Ok(())
    }

    /// Says loudly when the broker is not authenticated: `tls-insecure` (a warning on the bus
    /// and in the log, however it was set: a gateway may set it from an environment variable),
    /// or system roots that `SSL_CERT_FILE` / `SSL_CERT_DIR` replace (a warning in the log).
    fn warn_about_trust(&self, config: &DeliveryConfig) {
        let broker = &config.broker;
        if config.tls_insecure {
            let text = if broker.tls {
                format!(
                    "tls-insecure is set: the certificate of MQTT broker {broker} is NOT verified; \
                     anyone on the network path can read and change the events and take the \
                     credentials. Only for tests"
                )
            } else {
                format!(
                    "tls-insecure is set, and {broker} is plain TCP without any TLS: anyone on the \
                     network path can read and change the events and take the credentials"
                )
            };
            gst::warning!(CAT, imp = self, "{text}");
            gst::element_imp_warning!(self, gst::ResourceError::Settings, ("{text}"));
        } else if broker.tls && config.ca_file.is_none() {
            for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
                if let Some(v) = std::env::var_os(var) {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "ca-file is not set: the broker's certificate is checked against the CAs \
                         in ${var}={} instead of the system's root certificates",
                        v.to_string_lossy()
                    );
                }
            }
        }
    }

    /// Turns the delivery's reports into log lines and bus messages, until it stops.
    async fn watch_delivery(
        this: glib::subclass::ObjectImplWeakRef<VisionPublish>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<DeliveryEvent>,
        broker: String,
    ) {
        while let Some(ev) = events.recv().await {
            let Some(imp) = this.upgrade() else { return };
            match ev {
                DeliveryEvent::Connected => {
                    gst::info!(CAT, imp = imp, "connected to {broker}");
                    gst::element_imp_info!(
                        imp,
                        gst::ResourceError::OpenWrite,
                        ("connected to MQTT broker {broker}")
                    );
                }
                DeliveryEvent::Disconnected(reason) => gst::element_imp_warning!(
                    imp,
                    gst::ResourceError::Write,
                    ("MQTT broker {broker} unreachable: {reason}; retrying, events are kept in the spool")
                ),
                DeliveryEvent::AuthFailed(reason) => gst::element_imp_warning!(
                    imp,
                    gst::ResourceError::NotAuthorized,
                    ("MQTT broker {broker} refused the credentials (check username and password): {reason}; retrying, events are kept in the spool")
                ),
                DeliveryEvent::TlsFailed(reason) => gst::element_imp_warning!(
                    imp,
                    gst::ResourceError::OpenWrite,
                    ("TLS with MQTT broker {broker} failed (check ca-file, client-cert, client-key and that the port speaks TLS): {reason}; retrying, events are kept in the spool")
                ),
                DeliveryEvent::SpoolFull { dropped, policy } => gst::element_imp_warning!(
                    imp,
                    gst::ResourceError::NoSpaceLeft,
                    ("spool full: {dropped} events dropped ({policy})")
                ),
                DeliveryEvent::SpoolError(reason) => {
                    gst::element_imp_warning!(imp, gst::ResourceError::Write, ("spool: {reason}"))
                }
            }
        }
    }

    fn publish_health(&self) {
        let mut running = lock(&self.running);
        let Some(r) = running.as_mut() else { return };
        let Some(topic) = &r.health_topic else { return };
        let health = r.health.snapshot(
            &r.identity,
            r.started.elapsed(),
            r.builder.next_sequence(),
            counts(&r.delivery.stats()),
            SystemTime::now(),
        );
        let topic = topic.render(&TopicValues {
            sensor: &r.identity.sensor_id,
            ..TopicValues::default()
        });
        gst::debug!(
            CAT,
            imp = self,
            "health to {topic}: {} frames",
            health.frames
        );
        if let Err(e) = r.delivery.send(Message::new(topic, health.to_json())) {
            gst::warning!(CAT, imp = self, "health message not sent: {e}");
        }
    }

    fn stop_running(&self) {
        let Some(mut r) = lock(&self.running).take() else {
            return;
        };
        for t in &r.tasks {
            t.abort();
        }
        let ctx = self.context(&r, None, r.clock_end);
        if let Some(ev) = r.builder.flush(&ctx) {
            self.send_event(&mut r, &ev);
        }
        let events = r.builder.next_sequence();
        gst::info!(
            CAT,
            imp = self,
            "stopping: {events} events, delivery {:?}",
            r.delivery.stats()
        );
        // Blocks up to the grace period: this is the state change, not a streaming thread.
        let delivery = r.delivery;
        let stats = delivery.stats();
        delivery.stop(STOP_GRACE);
        *lock(&self.last_stats) = (events, stats);
        gst::info!(CAT, imp = self, "stopped");
    }

    // ---- streaming ------------------------------------------------------------------------

    fn context(&self, r: &Running, timestamp: Option<u64>, clock: u64) -> FrameContext {
        FrameContext {
            timestamp,
            clock,
            resolution: r.resolution,
            system_time: SystemTime::now(),
        }
    }

    fn send_event(&self, r: &mut Running, ev: &event::Event) {
        let topic = r.topic.render(&TopicValues {
            sensor: &r.identity.sensor_id,
            model: &ev.model,
            label: ev.label(),
        });
        gst::log!(CAT, imp = self, "event {} to {topic}", ev.sequence);
        if let Err(e) = r.delivery.send(Message::new(topic, ev.to_json())) {
            let now = Instant::now();
            if r.last_send_warning
                .is_none_or(|t| now.duration_since(t) >= SEND_WARNING_EVERY)
            {
                r.last_send_warning = Some(now);
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    ("event {} not published: {e}", ev.sequence)
                );
            } else {
                gst::debug!(CAT, imp = self, "event {} not published: {e}", ev.sequence);
            }
        }
    }

    /// The result on a buffer: our meta, else (GStreamer >= 1.24) GstAnalytics
    /// classifications from another producer.
    fn observation(buffer: &gst::BufferRef) -> Option<Observation> {
        if let Some(r) = meta::read(buffer) {
            return Some(Observation::from(&r));
        }
        #[cfg(feature = "v1_24")]
        if let Some(labels) = meta::analytics::read(buffer).into_iter().next() {
            return Observation::from_labels(std::sync::Arc::from("unknown"), labels);
        }
        None
    }

    /// The `location`, `uri` or `device` of the first upstream element that has one.
    fn upstream_source(&self) -> Option<String> {
        let mut pad = self.obj().static_pad("sink")?.peer()?;
        for _ in 0..64 {
            let Some(element) = pad.parent_element() else {
                // The inside of a ghost pad: continue outside the bin.
                let ghost = pad.parent().and_downcast::<gst::GhostPad>()?;
                pad = ghost.peer()?;
                continue;
            };
            for name in ["location", "uri", "device"] {
                let Some(spec) = element.find_property(name) else {
                    continue;
                };
                if spec.value_type() != String::static_type()
                    || !spec.flags().contains(glib::ParamFlags::READABLE)
                {
                    continue;
                }
                if let Ok(Some(v)) = element.property_value(name).get::<Option<String>>()
                    && !v.is_empty()
                {
                    // rtsp://user:password@camera/...: the events go to every subscriber.
                    return Some(uri_credentials(&v).into_owned());
                }
            }
            pad = element.sink_pads().into_iter().next()?.peer()?;
        }
        None
    }

    /// The regions `visionclassify target=roi` classified on a buffer, and (GStreamer >= 1.24)
    /// object detections with classifications related to them; regions without a result
    /// are left out.
    fn regions(buffer: &gst::BufferRef) -> Vec<event::Region> {
        meta::objects(buffer)
            .into_iter()
            .filter_map(|o| {
                let r = &o.region;
                let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
                Some(event::Region {
                    x: clamp(r.x),
                    y: clamp(r.y),
                    w: clamp(r.w),
                    h: clamp(r.h),
                    label: r.label.clone(),
                    confidence: o.confidence,
                    id: r.tracking_id,
                    observation: match &o.result {
                        Some(result) => Observation::from(result),
                        // A detection classified by another producer (GstAnalytics).
                        None => Observation::from_labels(
                            std::sync::Arc::from("unknown"),
                            o.labels.clone(),
                        )?,
                    },
                })
            })
            .collect()
    }

    fn handle_buffer(&self, buffer: &gst::BufferRef) {
        let regions = Self::regions(buffer);
        let obs = if regions.is_empty() {
            Self::observation(buffer)
        } else {
            None
        };
        let segment = self.obj().segment();
        let timestamp = segment
            .downcast_ref::<gst::ClockTime>()
            .zip(buffer.pts())
            .and_then(|(seg, pts)| seg.to_stream_time(pts))
            .map(|t| t.nseconds());
        // Looked for once, without holding the lock while reading other elements.
        let look_upstream = lock(&self.running)
            .as_ref()
            .is_some_and(|r| !r.source_known);
        let source = look_upstream.then(|| self.upstream_source());
        let mut running = lock(&self.running);
        let Some(r) = running.as_mut() else { return };
        if let Some(source) = source {
            gst::info!(CAT, imp = self, "source: {source:?}");
            r.identity.source.clone_from(&source);
            r.source_known = true;
            r.builder.set_source(source);
        }
        let clock = timestamp.unwrap_or_else(|| r.started.elapsed().as_nanos() as u64);
        r.clock_end = clock + buffer.duration().map_or(0, |d| d.nseconds());
        if !regions.is_empty() {
            r.health
                .record_regions(regions.iter().map(|region| &region.observation));
            let ctx = self.context(r, timestamp, clock);
            if let Some(ev) = r.builder.regions(&ctx, &regions) {
                self.send_event(r, &ev);
            }
            return;
        }
        let Some(obs) = obs else {
            gst::log!(
                CAT,
                imp = self,
                "buffer {:?} has no classification",
                buffer.pts()
            );
            r.health.record_frame();
            return;
        };
        r.health.record(&obs);
        let ctx = self.context(r, timestamp, clock);
        if let Some(ev) = r.builder.frame(&ctx, &obs) {
            self.send_event(r, &ev);
        }
    }

    fn flush_summary(&self) {
        let mut running = lock(&self.running);
        let Some(r) = running.as_mut() else { return };
        let ctx = self.context(r, None, r.clock_end);
        if let Some(ev) = r.builder.flush(&ctx) {
            self.send_event(r, &ev);
        }
    }

    fn stats_structure(&self) -> gst::Structure {
        let (events, s) = match lock(&self.running).as_ref() {
            Some(r) => (r.builder.next_sequence(), r.delivery.stats()),
            None => lock(&self.last_stats).clone(),
        };
        gst::Structure::builder("visionpublish-stats")
            .field("events", events)
            .field("published", s.sent)
            .field("acked", s.acked)
            .field("spooled", s.spooled)
            .field("dropped", s.dropped)
            .field("queued", s.queue_depth)
            .field("spool-depth", s.spool_depth)
            .field("connected", s.connected)
            .build()
    }
}

fn path_value(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.to_string_lossy().into_owned())
}

fn string_from(value: &glib::Value) -> Option<String> {
    value
        .get::<Option<String>>()
        .ok()
        .flatten()
        .filter(|s| !s.is_empty())
}

fn path_from(value: &glib::Value) -> Option<PathBuf> {
    string_from(value).map(PathBuf::from)
}

impl ObjectImpl for VisionPublish {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("broker")
                    .nick("Broker")
                    .blurb("MQTT broker: mqtt://host[:port] (TCP, port 1883 by default) or mqtts://host[:port] (TLS, 8883). A TLS URI never falls back to plain TCP. No user:password@ in it: use username and password-file or password-env")
                    .default_value(Some(DEFAULT_BROKER))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("client-id")
                    .nick("Client id")
                    .blurb("MQTT client id; a persistent session is found by it, so keep it stable (unset: visionpublish-<sensor-id>)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("keep-alive")
                    .nick("Keep-alive (s)")
                    .blurb("MQTT keep-alive in seconds; the broker drops the client (and sends its last will) after 1.5 times this without traffic. 0 = off")
                    .maximum(65535)
                    .default_value(DEFAULT_KEEP_ALIVE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("username")
                    .nick("User name")
                    .blurb("MQTT user name (unset: none)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("password")
                    .nick("Password")
                    .blurb("MQTT password (write-only, never logged); needs username. Prefer password-file or password-env: a property may show in process listings")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("password-file")
                    .nick("Password file")
                    .blurb("File whose content (without the final line break) is the MQTT password")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("password-env")
                    .nick("Password variable")
                    .blurb("Name of the environment variable that holds the MQTT password")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("ca-file")
                    .nick("CA file")
                    .blurb("PEM file of the CA certificates that may sign the broker's certificate (mqtts://; unset: the system's root certificates)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("client-cert")
                    .nick("Client certificate")
                    .blurb("PEM client certificate for mutual TLS; needs client-key")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("client-key")
                    .nick("Client key")
                    .blurb("PEM private key of client-cert")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("tls-insecure")
                    .nick("TLS insecure")
                    .blurb("Accept any broker certificate without verifying it; posts a warning when the element starts. Only for tests: anyone on the path can then read and change the events")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("mqtt-qos", QosChoice::AtLeastOnce)
                    .nick("MQTT QoS")
                    .blurb("MQTT quality of service of the events and health messages: 0, 1 or 2 (named mqtt-qos because BaseTransform's own qos property is about QoS events)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("persistent-session")
                    .nick("Persistent session")
                    .blurb("Ask the broker to keep the session (clean session off) so that in-flight messages survive a reconnection")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("topic")
                    .nick("Topic")
                    .blurb("Topic of the events; placeholders {sensor}, {model} and {label} (the event's label, 'none' below the threshold)")
                    .default_value(Some(DEFAULT_TOPIC))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("status-topic")
                    .nick("Status topic")
                    .blurb("Retained topic that says \"online\" while running and \"offline\" after stop, also as the MQTT last will; placeholder {sensor}; empty = none")
                    .default_value(Some(DEFAULT_STATUS_TOPIC))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("health-topic")
                    .nick("Health topic")
                    .blurb("Topic of the periodic health message (frames, fps, inference time, queue depth, dropped and spooled counts, confidence distribution per label); placeholder {sensor}")
                    .default_value(Some(DEFAULT_HEALTH_TOPIC))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("health-interval")
                    .nick("Health interval (s)")
                    .blurb("Seconds between health messages; 0 = none")
                    .default_value(DEFAULT_HEALTH_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("sensor-id")
                    .nick("Sensor id")
                    .blurb("Name of this camera in events (sensorId) and topics ({sensor}); may contain '/' but not '+' or '#'")
                    .default_value(Some(DEFAULT_SENSOR))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("source")
                    .nick("Source")
                    .blurb("The events' source field (unset: the location, uri or device of the first upstream element that has one; none if no element has). The user and password of a URI (rtsp://user:pass@host) are replaced by ***")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tags")
                    .nick("Tags")
                    .blurb("JSON object copied into every event's tags field, e.g. {\"site\":\"north\"} (as gvametaconvert's tags)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("mode", ModeChoice::All)
                    .nick("Mode")
                    .blurb("Which frames become events")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("summary-interval")
                    .nick("Summary interval (s)")
                    .blurb("Seconds of stream time per summary event (mode=summary); the last partial window is sent at end of stream")
                    .minimum(1)
                    .default_value(DEFAULT_SUMMARY_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("min-confidence")
                    .nick("Minimum confidence")
                    .blurb("A frame whose best class is below this (or below visionclassify's threshold) has no label: not published in mode all, a change to 'no label' in mode change, counted as below_threshold in mode summary")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(0.0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("spool-dir")
                    .nick("Spool directory")
                    .blurb("Directory of the on-disk spool of events not yet acknowledged (unset: $XDG_STATE_HOME/visionpublish/<sensor-id>, else ~/.local/state/visionpublish/<sensor-id>). Events left there are sent at the next start")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("spool-max-bytes")
                    .nick("Spool size limit")
                    .blurb("Most bytes of events kept in the spool; at the limit the oldest are dropped, counted and reported as a warning. 0 = no limit")
                    .default_value(DEFAULT_SPOOL_MAX_BYTES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("spool-max-age")
                    .nick("Spool age limit (s)")
                    .blurb("Spooled events older than this many seconds are dropped, counted and reported as a warning. 0 = no limit")
                    .default_value(DEFAULT_SPOOL_MAX_AGE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("queue-size")
                    .nick("Queue size")
                    .blurb("Events held in memory while connected; beyond that they go to the spool (never dropped, never waited for)")
                    .minimum(1)
                    .default_value(DEFAULT_QUEUE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("backoff-min")
                    .nick("Reconnect delay min (ms)")
                    .blurb("First delay before reconnecting to the broker, in milliseconds; it doubles after each failed attempt up to backoff-max")
                    .minimum(1)
                    .default_value(DEFAULT_BACKOFF_MIN_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("backoff-max")
                    .nick("Reconnect delay max (ms)")
                    .blurb("Longest delay between two reconnection attempts, in milliseconds")
                    .minimum(1)
                    .default_value(DEFAULT_BACKOFF_MAX_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Read-only: events (made), published (handed to MQTT), acked, spooled, dropped, queued, spool-depth, connected. After a stop: the counters as they were when the stop began")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let name = pspec.name();
        match name {
            "broker" => s.broker = string_from(value).unwrap_or_else(|| DEFAULT_BROKER.into()),
            "client-id" => s.client_id = string_from(value),
            "keep-alive" => s.keep_alive = value.get().unwrap_or(DEFAULT_KEEP_ALIVE),
            "username" => s.username = string_from(value),
            "password" => s.password = string_from(value).map(Secret::new),
            "password-file" => s.password_file = path_from(value),
            "password-env" => s.password_env = string_from(value),
            "ca-file" => s.ca_file = path_from(value),
            "client-cert" => s.client_cert = path_from(value),
            "client-key" => s.client_key = path_from(value),
            "tls-insecure" => s.tls_insecure = value.get().unwrap_or(false),
            "mqtt-qos" => s.qos = value.get().unwrap_or_default(),
            "persistent-session" => s.persistent_session = value.get().unwrap_or(true),
            "topic" => {
                s.topic = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }
            "status-topic" => {
                s.status_topic = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }
            "health-topic" => {
                s.health_topic = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }
            "health-interval" => s.health_interval = value.get().unwrap_or(DEFAULT_HEALTH_INTERVAL),
            "sensor-id" => {
                s.sensor_id = string_from(value).unwrap_or_else(|| DEFAULT_SENSOR.into())
            }
            "source" => s.source = string_from(value),
            "tags" => s.tags = string_from(value),
            "mode" => s.mode = value.get().unwrap_or_default(),
            "summary-interval" => {
                s.summary_interval = value.get().unwrap_or(DEFAULT_SUMMARY_INTERVAL)
            }
            "min-confidence" => s.min_confidence = value.get().unwrap_or(0.0),
            "spool-dir" => s.spool_dir = path_from(value),
            "spool-max-bytes" => s.spool_max_bytes = value.get().unwrap_or(DEFAULT_SPOOL_MAX_BYTES),
            "spool-max-age" => s.spool_max_age = value.get().unwrap_or(DEFAULT_SPOOL_MAX_AGE),
            "queue-size" => s.queue_size = value.get().unwrap_or(DEFAULT_QUEUE_SIZE),
            "backoff-min" => s.backoff_min_ms = value.get().unwrap_or(DEFAULT_BACKOFF_MIN_MS),
            "backoff-max" => s.backoff_max_ms = value.get().unwrap_or(DEFAULT_BACKOFF_MAX_MS),
            _ => unimplemented!("property {name}"),
        }
        if name == "password" {
            gst::debug!(CAT, imp = self, "set password (not shown)");
        } else {
            let shown = format!("{value:?}");
            gst::debug!(CAT, imp = self, "set {name} = {}", uri_credentials(&shown));
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats_structure().to_value();
        }
        let s = lock(&self.settings);
        match pspec.name() {
            "broker" => s.broker.to_value(),
            "client-id" => s.client_id.to_value(),
            "keep-alive" => s.keep_alive.to_value(),
            "username" => s.username.to_value(),
            "password-file" => path_value(&s.password_file).to_value(),
            "password-env" => s.password_env.to_value(),
            "ca-file" => path_value(&s.ca_file).to_value(),
            "client-cert" => path_value(&s.client_cert).to_value(),
            "client-key" => path_value(&s.client_key).to_value(),
            "tls-insecure" => s.tls_insecure.to_value(),
            "mqtt-qos" => s.qos.to_value(),
            "persistent-session" => s.persistent_session.to_value(),
            "topic" => s.topic.to_value(),
            "status-topic" => s.status_topic.to_value(),
            "health-topic" => s.health_topic.to_value(),
            "health-interval" => s.health_interval.to_value(),
            "sensor-id" => s.sensor_id.to_value(),
            "source" => s.source.to_value(),
            "tags" => s.tags.to_value(),
            "mode" => s.mode.to_value(),
            "summary-interval" => s.summary_interval.to_value(),
            "min-confidence" => s.min_confidence.to_value(),
            "spool-dir" => path_value(&s.spool_dir).to_value(),
            "spool-max-bytes" => s.spool_max_bytes.to_value(),
            "spool-max-age" => s.spool_max_age.to_value(),
            "queue-size" => s.queue_size.to_value(),
            "backoff-min" => s.backoff_min_ms.to_value(),
            "backoff-max" => s.backoff_max_ms.to_value(),
            name => unimplemented!("property {name}"),
        }
    }
}

impl GstObjectImpl for VisionPublish {}

impl ElementImpl for VisionPublish {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Vision classification publisher (MQTT)",
                "Filter/Analyzer/Video/Network",
                "Publishes the classification metadata of each frame (from visionclassify, or GstAnalytics classifications) as JSON events on MQTT, with QoS, TLS, a retained online/offline status, periodic health messages and an on-disk spool that keeps events across broker outages and restarts; the video passes through untouched",
                "visionclassify developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::new_any();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("sink template"),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("src template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for VisionPublish {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.start_running()
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.stop_running();
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let resolution = gst_video::VideoInfo::from_caps(incaps)
            .ok()
            .map(|info| Resolution {
                width: info.width(),
                height: info.height(),
            });
        gst::debug!(CAT, imp = self, "caps {incaps}: resolution {resolution:?}");
        if let Some(r) = lock(&self.running).as_mut() {
            r.resolution = resolution;
        }
        self.parent_set_caps(incaps, outcaps)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if event.type_() == gst::EventType::Eos {
            // The last partial summary window belongs to this stream.
            self.flush_summary();
        }
        self.parent_sink_event(event)
    }

    fn transform_ip_passthrough(
        &self,
        buf: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.handle_buffer(buf.as_ref());
        Ok(gst::FlowSuccess::Ok)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for VisionPublish {
    const NAME: &'static str = "GstVisionPublish";
    type Type = super::VisionPublish;
    type ParentType = gst_base::BaseTransform;
}
