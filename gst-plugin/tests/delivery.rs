//! The MQTT delivery layer against a real mosquitto on 127.0.0.1: order, outages, restarts,
//! spool limits, TLS, authentication and bad settings.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use gstvision::delivery::{
    BrokerUri, Delivery, DeliveryConfig, DeliveryError, DeliveryEvent, Message, Qos, Secret,
};
use support::mosquitto::{
    Mosquitto, MosquittoConfig, Received, Subscriber, SubscriberOptions, TlsListener, free_port,
};
use support::pki::TestPki;
use support::proxy::TcpProxy;
use tokio::sync::mpsc::UnboundedReceiver;

const DATA_TOPIC: &str = "test/data";

/// A configuration for tests: quick back-off, status on `test/status/<client>`.
fn config(uri: &str, client: &str, spool_dir: &Path) -> anyhow::Result<DeliveryConfig> {
    let broker: BrokerUri = uri.parse()?;
    let mut c = DeliveryConfig::new(broker, client, spool_dir.join("spool.db"));
    c.keep_alive = Duration::from_secs(5);
    c.backoff_min = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(800);
    c.status_topic = format!("test/status/{client}");
    Ok(c)
}

fn data(seq: u64) -> Message {
    Message::new(DATA_TOPIC, seq.to_string())
}

/// Sequence numbers of the data messages, in arrival order.
fn seqs(received: &[Received]) -> Vec<u64> {
    received
        .iter()
        .filter(|m| m.topic == DATA_TOPIC)
        .filter_map(|m| m.text().parse().ok())
        .collect()
}

/// Sequence numbers in order of first arrival, and how many arrived again.
fn first_arrivals(seqs: &[u64]) -> (Vec<u64>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut firsts = Vec::new();
    for &s in seqs {
        if seen.insert(s) {
            firsts.push(s);
        }
    }
    let dups = seqs.len() - firsts.len();
    (firsts, dups)
}

/// Waits until the subscriber has every data sequence number in `0..n` at least once.
fn wait_for_all(sub: &Subscriber, range: std::ops::Range<u64>, timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = seqs(&sub.messages());
        let (firsts, _) = first_arrivals(&got);
        let have = firsts.iter().filter(|s| range.contains(*s)).count() as u64;
        if have == range.end - range.start || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The events a delivery reported, waited for in order.
struct Events {
    rx: UnboundedReceiver<DeliveryEvent>,
    seen: Vec<DeliveryEvent>,
    pos: usize,
}

impl Events {
    fn new(rx: UnboundedReceiver<DeliveryEvent>) -> Self {
        Events {
            rx,
            seen: Vec::new(),
            pos: 0,
        }
    }

    fn pump(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
    }

    /// The next event after the last one returned that matches `pred`, waiting up to
    /// `timeout`.
    fn next(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&DeliveryEvent) -> bool,
    ) -> Option<DeliveryEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            if let Some(k) = self.seen[self.pos..].iter().position(&pred) {
                let event = self.seen[self.pos + k].clone();
                self.pos += k + 1;
                return Some(event);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&DeliveryEvent) -> bool,
    ) -> anyhow::Result<DeliveryEvent> {
        self.next(timeout, pred).with_context(|| {
            self.pump();
            format!(
                "no {what} event within {timeout:?}; events: {:?}",
                self.seen
            )
        })
    }

    fn all(&mut self) -> Vec<DeliveryEvent> {
        self.pump();
        self.seen.clone()
    }
}

fn is_connected(e: &DeliveryEvent) -> bool {
    matches!(e, DeliveryEvent::Connected)
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn delivers_in_order_with_retained_status() -> anyhow::Result<()> {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "order-sub", "test/#"));
    let dir = tempfile::tempdir()?;
    let uri = format!("mqtt://127.0.0.1:{}", broker.port());
    let (delivery, rx) = Delivery::start(config(&uri, "order-pub", dir.path())?)?;
    let mut events = Events::new(rx);
    for i in 0..300 {
        delivery.send(data(i))?;
    }
    let got = wait_for_all(&sub, 0..300, Duration::from_secs(10));
    assert_eq!(
        got,
        (0..300).collect::<Vec<_>>(),
        "every message once, in order"
    );
    events.expect("Connected", Duration::from_secs(5), is_connected)?;
    assert!(wait_until(Duration::from_secs(5), || delivery
        .stats()
        .acked
        == 300));
    let stats = delivery.stats();
    assert_eq!((stats.sent, stats.dropped), (300, 0), "{stats:?}");
    assert!(stats.connected);

    delivery.stop(Duration::from_secs(2));
    let status: Vec<String> = sub
        .wait_for(302, Duration::from_secs(5))
        .iter()
        .filter(|m| m.topic == "test/status/order-pub")
        .map(Received::text)
        .collect();
    assert_eq!(status, ["online", "offline"]);
    // Retained: a later subscriber is told the publisher is offline.
    let late = Subscriber::start(SubscriberOptions::new(
        broker.port(),
        "late-sub",
        "test/status/#",
    ));
    let retained = late.wait_for(1, Duration::from_secs(5));
    assert_eq!(retained.len(), 1);
    assert!(retained[0].retain);
    assert_eq!(retained[0].text(), "offline");
    Ok(())
}

#[test]
fn qos_0_and_2_deliver_in_order() -> anyhow::Result<()> {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let uri = format!("mqtt://127.0.0.1:{}", broker.port());
    for (qos, name) in [(Qos::AtMostOnce, "qos0"), (Qos::ExactlyOnce, "qos2")] {
        let sub = Subscriber::start(SubscriberOptions::new(
            broker.port(),
            &format!("{name}-sub"),
            "test/data",
        ));
        let dir = tempfile::tempdir()?;
        let mut c = config(&uri, &format!("{name}-pub"), dir.path())?;
        c.qos = qos;
        let (delivery, _rx) = Delivery::start(c)?;
        for i in 0..200 {
            delivery.send(data(i))?;
        }
        let got = wait_for_all(&sub, 0..200, Duration::from_secs(10));
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "{name}");
        assert!(
            wait_until(Duration::from_secs(5), || delivery.stats().acked == 200),
            "{name}: {:?}",
            delivery.stats()
        );
        delivery.stop(Duration::from_secs(1));
    }
    Ok(())
}

#[test]
fn outage_loses_nothing() -> anyhow::Result<()> {
    let mut broker = Mosquitto::start(MosquittoConfig {
        persistence: true,
        ..MosquittoConfig::anonymous()
    });
    let sub = Subscriber::start(SubscriberOptions::new(
        broker.port(),
        "outage-sub",
        "test/data",
    ));
    let dir = tempfile::tempdir()?;
    let uri = format!("mqtt://127.0.0.1:{}", broker.port());
    let mut c = config(&uri, "outage-pub", dir.path())?;
    c.queue_capacity = 8;
    c.persistent_session = true;
    let (delivery, rx) = Delivery::start(c)?;
    let mut events = Events::new(rx);
    events.expect("Connected", Duration::from_secs(5), is_connected)?;

    // 20 messages a second for 8 s; the broker is down from 1.5 s to 5.5 s.
    const N: u64 = 160;
    let started = Instant::now();
    let mut stopped_at = None;
    let mut restarted = false;
    for i in 0..N {
        let due = started + Duration::from_millis(50 * i);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = started.elapsed();
        if stopped_at.is_none() && t >= Duration::from_millis(1500) {
            broker.stop();
            stopped_at = Some(Instant::now());
        }
        if !restarted && stopped_at.is_some_and(|s| s.elapsed() >= Duration::from_secs(4)) {
            broker.restart();
            restarted = true;
        }
        let before = Instant::now();
        delivery.send(data(i))?;
        assert!(
            before.elapsed() < Duration::from_millis(100),
            "send blocked for {:?}",
            before.elapsed()
        );
    }
    assert!(restarted);
    let got = wait_for_all(&sub, 0..N, Duration::from_secs(15));
    let (firsts, dups) = first_arrivals(&got);
    let missing: Vec<u64> = (0..N).filter(|s| !firsts.contains(s)).collect();
    eprintln!(
        "outage: {} received, {dups} duplicates, missing {missing:?}, stats {:?}",
        got.len(),
        delivery.stats()
    );
    assert!(
        missing.is_empty(),
        "lost {} messages: {missing:?}",
        missing.len()
    );
    assert_eq!(
        firsts,
        (0..N).collect::<Vec<_>>(),
        "first arrivals are in order"
    );

    events.expect("Disconnected", Duration::from_secs(1), |e| {
        matches!(e, DeliveryEvent::Disconnected(_))
    })?;
    events.expect("Connected again", Duration::from_secs(1), is_connected)?;
    let stats = delivery.stats();
    assert!(stats.spooled > 0, "{stats:?}");
    assert!(stats.acked >= N, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    delivery.stop(Duration::from_secs(2));
    Ok(())
}

/// Messages the broker received but whose acknowledgements were lost with the connection are
/// sent again: duplicates, never a gap. Run for each QoS that has acknowledgements, with and
/// without a persistent session (rumqttc's own resending differs between the two).
#[test]
fn unacknowledged_messages_are_sent_again() -> anyhow::Result<()> {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    for (qos, persistent, name) in [
        (Qos::AtLeastOnce, false, "q1"),
        (Qos::AtLeastOnce, true, "q1p"),
        (Qos::ExactlyOnce, true, "q2p"),
    ] {
        let sub = Subscriber::start(SubscriberOptions::new(
            broker.port(),
            &format!("{name}-sub"),
            "test/data",
        ));
        let proxy = TcpProxy::start(broker.port());
        let dir = tempfile::tempdir()?;
        let mut c = config(
            &format!("mqtt://127.0.0.1:{}", proxy.port()),
            &format!("{name}-pub"),
            dir.path(),
        )?;
        c.qos = qos;
        c.persistent_session = persistent;
        let (delivery, rx) = Delivery::start(c)?;
        let mut events = Events::new(rx);
        events.expect("Connected", Duration::from_secs(5), is_connected)?;
        for i in 0..10 {
            delivery.send(data(i))?;
        }
        assert!(wait_until(Duration::from_secs(5), || delivery
            .stats()
            .acked
            == 10));

        // The broker gets 10..20 (QoS 1: and delivers them), its answers are lost.
        proxy.drop_replies(true);
        for i in 10..20 {
            delivery.send(data(i))?;
        }
        if qos == Qos::AtLeastOnce {
            wait_for_all(&sub, 0..20, Duration::from_secs(5));
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(delivery.stats().acked, 10, "{name}");
        proxy.cut();
        proxy.drop_replies(false);
        events.expect("Disconnected", Duration::from_secs(5), |e| {
            matches!(e, DeliveryEvent::Disconnected(_))
        })?;
        events.expect("Connected", Duration::from_secs(5), is_connected)?;
        for i in 20..30 {
            delivery.send(data(i))?;
        }
        let got = wait_for_all(&sub, 0..30, Duration::from_secs(10));
        let (firsts, dups) = first_arrivals(&got);
        eprintln!("{name}: {} received, {dups} duplicates", got.len());
        assert_eq!(firsts, (0..30).collect::<Vec<_>>(), "{name}: {got:?}");
        if qos == Qos::AtLeastOnce {
            assert!(
                dups >= 10,
                "{name}: 10..20 were delivered before the cut: {got:?}"
            );
        }
        assert!(
            wait_until(Duration::from_secs(5), || delivery.stats().acked >= 30),
            "{name}: {:?}",
            delivery.stats()
        );
        let stats = delivery.stats();
        assert!(
            stats.spooled >= 10,
            "{name}: unacknowledged went to the spool: {stats:?}"
        );
        assert_eq!(stats.spool_depth, 0, "{name}: {stats:?}");
        delivery.stop(Duration::from_secs(1));
    }
    Ok(())
}

#[test]
fn restart_sends_the_spool_first_in_order() -> anyhow::Result<()> {
    let mut broker = Mosquitto::start(MosquittoConfig {
        persistence: true,
        ..MosquittoConfig::anonymous()
    });
    let sub = Subscriber::start(SubscriberOptions::new(
        broker.port(),
        "restart-sub",
        "test/data",
    ));
    let dir = tempfile::tempdir()?;
    let uri = format!("mqtt://127.0.0.1:{}", broker.port());

    let (first, rx) = Delivery::start(config(&uri, "restart-pub", dir.path())?)?;
    let mut events = Events::new(rx);
    events.expect("Connected", Duration::from_secs(5), is_connected)?;
    for i in 0..5 {
        first.send(data(i))?;
    }
    assert_eq!(
        wait_for_all(&sub, 0..5, Duration::from_secs(5)),
        [0, 1, 2, 3, 4]
    );
    assert!(wait_until(Duration::from_secs(5), || first.stats().acked == 5));

    broker.stop();
    events.expect("Disconnected", Duration::from_secs(5), |e| {
        matches!(e, DeliveryEvent::Disconnected(_))
    })?;
    for i in 5..25 {
        first.send(data(i))?;
    }
    let stats = first.stats();
    assert_eq!((stats.spooled, stats.spool_depth), (20, 20), "{stats:?}");
    let t = Instant::now();
    first.stop(Duration::from_secs(3));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop waited for an unreachable broker"
    );

    broker.restart();
    let (second, rx) = Delivery::start(config(&uri, "restart-pub", dir.path())?)?;
    for i in 25..30 {
        second.send(data(i))?;
    }
    let got = wait_for_all(&sub, 0..30, Duration::from_secs(10));
    let (firsts, dups) = first_arrivals(&got);
    assert_eq!(firsts, (0..30).collect::<Vec<_>>(), "got {got:?}");
    assert_eq!(dups, 0, "got {got:?}");
    Events::new(rx).expect("Connected", Duration::from_secs(1), is_connected)?;
    assert!(wait_until(Duration::from_secs(5), || second
        .stats()
        .spool_depth
        == 0));
    second.stop(Duration::from_secs(2));
    Ok(())
}

#[test]
fn spool_limit_drops_the_oldest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Nothing listens on this port: everything goes to the spool.
    let port = free_port();
    let uri = format!("mqtt://127.0.0.1:{port}");
    let message_bytes = (DATA_TOPIC.len() + 90) as u64;
    let padded = |i: u64| Message::new(DATA_TOPIC, format!("{i:>90}"));
    let mut c = config(&uri, "limit-pub", dir.path())?;
    c.spool_max_bytes = 10 * message_bytes;
    let (delivery, rx) = Delivery::start(c.clone())?;
    let mut events = Events::new(rx);
    for i in 0..30 {
        delivery.send(padded(i))?;
    }
    let stats = delivery.stats();
    assert_eq!(
        (stats.spooled, stats.dropped, stats.spool_depth),
        (30, 20, 10),
        "{stats:?}"
    );
    let full = events.expect("SpoolFull", Duration::from_secs(1), |e| {
        matches!(e, DeliveryEvent::SpoolFull { .. })
    })?;
    let DeliveryEvent::SpoolFull { dropped, policy } = full else {
        unreachable!()
    };
    assert!(dropped >= 1);
    assert!(
        policy.contains("drop-oldest") && policy.contains("spool-max-bytes"),
        "{policy}"
    );
    delivery.stop(Duration::ZERO);
    // The rest of the drops are reported by the time it stopped.
    let reported: u64 = events
        .all()
        .iter()
        .map(|e| match e {
            DeliveryEvent::SpoolFull { dropped, .. } => *dropped,
            _ => 0,
        })
        .sum();
    assert_eq!(reported, 20);

    // The newest ten are what a broker gets later.
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let sub = Subscriber::start(SubscriberOptions::new(
        broker.port(),
        "limit-sub",
        "test/data",
    ));
    c.broker = format!("mqtt://127.0.0.1:{}", broker.port()).parse()?;
    let (delivery, _rx) = Delivery::start(c)?;
    let got: Vec<u64> = sub
        .wait_for(10, Duration::from_secs(10))
        .iter()
        .filter_map(|m| m.text().trim().parse().ok())
        .collect();
    assert_eq!(got, (20..30).collect::<Vec<_>>());
    assert_eq!(delivery.stats().dropped, 0);
    delivery.stop(Duration::from_secs(1));
    Ok(())
}

const USER: &str = "vision";
const PASSWORD: &str = "right-pass";

/// A broker with a password file, a TLS listener (server certificate from `pki`) and a plain
/// one; and a subscriber on the plain one.
fn secure_broker(
    pki: &TestPki,
    require_client_cert: bool,
    client: &str,
) -> (Mosquitto, Subscriber) {
    let broker = Mosquitto::start(MosquittoConfig {
        tls: Some(TlsListener {
            ca: pki.ca.clone(),
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            require_client_cert,
        }),
        users: vec![
            (USER.into(), PASSWORD.into()),
            ("reader".into(), "reader-pass".into()),
        ],
        ..Default::default()
    });
    let sub = Subscriber::start(
        SubscriberOptions::new(broker.port(), client, "test/data")
            .credentials("reader", "reader-pass"),
    );
    (broker, sub)
}

fn tls_config(
    port: u16,
    client: &str,
    dir: &Path,
    ca: &Path,
    password: &str,
) -> anyhow::Result<DeliveryConfig> {
    let mut c = config(&format!("mqtts://127.0.0.1:{port}"), client, dir)?;
    c.ca_file = Some(ca.to_path_buf());
    c.username = Some(USER.into());
    c.password = Some(Secret::new(password));
    Ok(c)
}

#[test]
fn tls_with_password_publishes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path(), "main");
    let (broker, sub) = secure_broker(&pki, false, "tls-sub");
    let c = tls_config(broker.tls_port(), "tls-pub", dir.path(), &pki.ca, PASSWORD)?;
    let (delivery, rx) = Delivery::start(c)?;
    for i in 0..20 {
        delivery.send(data(i))?;
    }
    assert_eq!(
        seqs(&sub.wait_for(20, Duration::from_secs(10))),
        (0..20).collect::<Vec<_>>()
    );
    Events::new(rx).expect("Connected", Duration::from_secs(1), is_connected)?;
    delivery.stop(Duration::from_secs(1));
    Ok(())
}

#[test]
fn wrong_password_is_auth_failed_and_keeps_messages() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path(), "main");
    let (broker, sub) = secure_broker(&pki, false, "auth-sub");
    let bad = tls_config(
        broker.tls_port(),
        "auth-pub",
        dir.path(),
        &pki.ca,
        "wrong-pass",
    )?;
    let (delivery, rx) = Delivery::start(bad)?;
    let mut events = Events::new(rx);
    for i in 0..5 {
        delivery.send(data(i))?;
    }
    let failed = events.expect("AuthFailed", Duration::from_secs(5), |e| {
        matches!(e, DeliveryEvent::AuthFailed(_))
    })?;
    let DeliveryEvent::AuthFailed(reason) = failed else {
        unreachable!()
    };
    assert!(
        reason.contains("not authorized") || reason.contains("bad user name or password"),
        "{reason}"
    );
    assert!(
        !reason.contains("wrong-pass"),
        "the password leaked: {reason}"
    );
    // It keeps trying (back-off) but reports the same failure once.
    std::thread::sleep(Duration::from_millis(1500));
    let all = events.all();
    assert_eq!(
        all.iter()
            .filter(|e| matches!(e, DeliveryEvent::AuthFailed(_)))
            .count(),
        1,
        "{all:?}"
    );
    assert!(!all.iter().any(is_connected), "{all:?}");
    let stats = delivery.stats();
    assert_eq!((stats.spool_depth, stats.acked), (5, 0), "{stats:?}");
    assert_eq!(sub.count(), 0);
    delivery.stop(Duration::from_millis(200));

    // Fixed: the spooled messages go out.
    let good = tls_config(broker.tls_port(), "auth-pub", dir.path(), &pki.ca, PASSWORD)?;
    let (delivery, _rx) = Delivery::start(good)?;
    assert_eq!(
        seqs(&sub.wait_for(5, Duration::from_secs(10))),
        [0, 1, 2, 3, 4]
    );
    delivery.stop(Duration::from_secs(1));
    Ok(())
}

#[test]
fn untrusted_server_certificate_is_tls_failed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path(), "main");
    let other = TestPki::generate(dir.path(), "other");
    let (broker, sub) = secure_broker(&pki, false, "ca-sub");
    let c = tls_config(
        broker.tls_port(),
        "ca-pub",
        &dir.path().join("a"),
        &other.ca,
        PASSWORD,
    )?;
    let (delivery, rx) = Delivery::start(c.clone())?;
    delivery.send(data(0))?;
    let failed = Events::new(rx).expect("TlsFailed", Duration::from_secs(5), |e| {
        matches!(e, DeliveryEvent::TlsFailed(_))
    })?;
    let DeliveryEvent::TlsFailed(reason) = failed else {
        unreachable!()
    };
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(delivery.stats().spool_depth, 1);
    delivery.stop(Duration::ZERO);
    assert_eq!(sub.count(), 0);

    // tls-insecure skips verification, and only then does the same CA work.
    let mut insecure = c;
    insecure.tls_insecure = true;
    let (delivery, _rx) = Delivery::start(insecure)?;
    assert_eq!(seqs(&sub.wait_for(1, Duration::from_secs(10))), [0]);
    delivery.stop(Duration::from_secs(1));
    Ok(())
}

#[test]
fn scheme_and_port_mismatch_fail_clearly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path(), "main");
    let (broker, sub) = secure_broker(&pki, false, "mismatch-sub");

    // mqtts:// to the plain listener: the TLS handshake fails.
    let c = tls_config(
        broker.port(),
        "tls-to-plain",
        &dir.path().join("a"),
        &pki.ca,
        PASSWORD,
    )?;
    let (delivery, rx) = Delivery::start(c)?;
    delivery.send(data(0))?;
    let e = Events::new(rx).expect("TlsFailed", Duration::from_secs(8), |e| {
        matches!(e, DeliveryEvent::TlsFailed(_))
    })?;
    eprintln!("mqtts:// to a plain port: {e:?}");
    let DeliveryEvent::TlsFailed(reason) = e else {
        unreachable!()
    };
    assert!(reason.contains("mqtt://"), "{reason}");
    delivery.stop(Duration::ZERO);

    // mqtt:// to the TLS listener: no MQTT answer, and a hint; never a delivery.
    let mut c = config(
        &format!("mqtt://127.0.0.1:{}", broker.tls_port()),
        "plain-to-tls",
        &dir.path().join("b"),
    )?;
    c.username = Some(USER.into());
    c.password = Some(Secret::new(PASSWORD));
    let (delivery, rx) = Delivery::start(c)?;
    delivery.send(data(1))?;
    let e = Events::new(rx).expect("Disconnected", Duration::from_secs(8), |e| {
        matches!(e, DeliveryEvent::Disconnected(_))
    })?;
    eprintln!("mqtt:// to a TLS port: {e:?}");
    let DeliveryEvent::Disconnected(reason) = e else {
        unreachable!()
    };
    assert!(reason.contains("mqtts://"), "{reason}");
    let stats = delivery.stats();
    assert_eq!((stats.acked, stats.connected), (0, false), "{stats:?}");
    delivery.stop(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sub.count(), 0, "nothing may be delivered");
    Ok(())
}

#[test]
fn mutual_tls_needs_the_client_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path(), "main");
    let (broker, sub) = secure_broker(&pki, true, "mtls-sub");

    let c = tls_config(
        broker.tls_port(),
        "mtls-pub",
        &dir.path().join("a"),
        &pki.ca,
        PASSWORD,
    )?;
    let (delivery, rx) = Delivery::start(c.clone())?;
    delivery.send(data(0))?;
    let e = Events::new(rx).expect("TlsFailed", Duration::from_secs(8), |e| {
        matches!(e, DeliveryEvent::TlsFailed(_))
    })?;
    eprintln!("no client certificate: {e:?}");
    delivery.stop(Duration::ZERO);
    assert_eq!(sub.count(), 0);

    let mut with_cert = c;
    with_cert.client_cert = Some(pki.client_cert.clone());
    with_cert.client_key = Some(pki.client_key.clone());
    let (delivery, _rx) = Delivery::start(with_cert)?;
    delivery.send(data(1))?;
    assert_eq!(seqs(&sub.wait_for(2, Duration::from_secs(10))), [0, 1]);
    delivery.stop(Duration::from_secs(1));
    Ok(())
}

fn setting_of(
    result: Result<(Delivery, UnboundedReceiver<DeliveryEvent>), DeliveryError>,
) -> (String, String) {
    match result {
        Err(DeliveryError::Settings { setting, reason }) => (setting.to_string(), reason),
        Err(e) => panic!("expected a settings error, got {e:?}"),
        Ok(_) => panic!("expected a settings error, it started"),
    }
}

#[test]
fn bad_settings_name_the_setting() -> anyhow::Result<()> {
    for uri in [
        "http://x",
        "mqtt://:99999",
        "mqtt://host:99999",
        "mqtts://",
        "broker:1883",
    ] {
        match uri.parse::<BrokerUri>() {
            Err(DeliveryError::Settings { setting, reason }) => {
                assert_eq!(setting, "broker", "{uri}: {reason}");
                assert!(
                    reason.contains(uri.trim_end_matches("//")) || reason.contains("port"),
                    "{uri}: {reason}"
                );
            }
            other => panic!("{uri}: {other:?}"),
        }
    }

    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(dir.path(), "main");
    let base = tls_config(8883, "bad", dir.path(), &pki.ca, PASSWORD)?;

    let missing = dir.path().join("missing-ca.pem");
    let mut c = base.clone();
    c.ca_file = Some(missing.clone());
    let (setting, reason) = setting_of(Delivery::start(c));
    assert_eq!(setting, "ca-file");
    assert!(reason.contains("missing-ca.pem"), "{reason}");

    // A directory cannot be read as a file (and root reads any file, whatever its mode).
    let mut c = base.clone();
    c.ca_file = Some(dir.path().to_path_buf());
    assert_eq!(setting_of(Delivery::start(c)).0, "ca-file");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate")?;
    let mut c = base.clone();
    c.ca_file = Some(garbage.clone());
    let (setting, reason) = setting_of(Delivery::start(c));
    assert_eq!(setting, "ca-file");
    assert!(reason.contains("no PEM certificate"), "{reason}");

    let mut c = base.clone();
    c.client_cert = Some(pki.client_cert.clone());
    assert_eq!(setting_of(Delivery::start(c)).0, "client-key");

    let mut c = base.clone();
    c.client_cert = Some(pki.client_cert.clone());
    c.client_key = Some(garbage);
    assert_eq!(setting_of(Delivery::start(c)).0, "client-key");

    let mut c = base.clone();
    c.client_cert = Some(pki.client_cert.clone());
    c.client_key = Some(pki.server_key.clone());
    let (setting, reason) = setting_of(Delivery::start(c));
    assert_eq!(
        setting, "client-key",
        "a key that is not the certificate's: {reason}"
    );

    let mut c = base.clone();
    c.broker = "mqtt://127.0.0.1".parse()?;
    let (setting, reason) = setting_of(Delivery::start(c));
    assert_eq!(setting, "broker", "CA file with a plain URI: {reason}");

    let mut c = base;
    c.spool_path = pki.ca.join("spool.db");
    match Delivery::start(c) {
        Err(DeliveryError::Spool(reason)) => assert!(reason.contains("spool.db"), "{reason}"),
        other => panic!("a spool under a file: {:?}", other.map(|_| ())),
    }
    Ok(())
}

#[test]
fn send_rejects_what_cannot_be_published() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (delivery, _rx) = Delivery::start(config(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        "reject-pub",
        dir.path(),
    )?)?;
    for topic in ["", "a/+/b", "a/#"] {
        assert!(
            matches!(
                delivery.send(Message::new(topic, "x")),
                Err(DeliveryError::Message(_))
            ),
            "'{topic}'"
        );
    }
    let huge = Message::new(
        DATA_TOPIC,
        vec![0u8; gstvision::delivery::MAX_MESSAGE_BYTES],
    );
    assert!(matches!(
        delivery.send(huge),
        Err(DeliveryError::Message(_))
    ));
    assert_eq!(delivery.stats().spooled, 0);
    delivery.stop(Duration::ZERO);
    Ok(())
}
