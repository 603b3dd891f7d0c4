//! `visionpublish` against a real mosquitto on 127.0.0.1 (started by each test on a free
//! port): what arrives, in which order, in which shape (validated against the JSON Schemas in
//! `gst-plugin/schema/`), the publishing modes, status and health messages, bad settings, an
//! outage, and the video passing through untouched. The delivery layer's own outage, restart,
//! TLS and authentication tests are in `delivery.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst_check::Harness;
use gstvision::publish::{ModeChoice, QosChoice};
use serde_json::Value;
use support::mosquitto::{Mosquitto, MosquittoConfig, Received, Subscriber, SubscriberOptions};
use support::plugin::{data, init, ort_library};

fn classify() -> String {
    format!(
        "visionclassify model={} ort-library={}",
        data("color3.onnx"),
        ort_library()
    )
}

/// `visionpublish` with a quick reconnection, its own spool, and no health messages unless
/// `extra` asks for them.
fn publish(port: u16, sensor: &str, spool: &Path, extra: &str) -> String {
    format!(
        "visionpublish name=pub broker=mqtt://127.0.0.1:{port} sensor-id={sensor} spool-dir={} \
         backoff-min=100 backoff-max=1000 health-interval=0 {extra}",
        spool.display()
    )
}

const CAPS: &str = "video/x-raw,format=RGB,width=64,height=48,framerate=30/1";

struct Schemas {
    event: jsonschema::Validator,
    health: jsonschema::Validator,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let load = |name: &str| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("schema")
            .join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let schema: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("{} is not a valid schema: {e}", path.display()))
    };
    Schemas {
        event: load("event.schema.json"),
        health: load("health.schema.json"),
    }
});

fn validated(validator: &jsonschema::Validator, msg: &Received) -> Value {
    let v: Value = serde_json::from_slice(&msg.payload)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", msg.topic, msg.text()));
    let errors: Vec<String> = validator
        .iter_errors(&v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "message on {} does not follow the schema:\n{}\n{}",
        msg.topic,
        errors.join("\n"),
        msg.text()
    );
    v
}

/// Events on `topic`, parsed and validated against the event schema.
fn events(messages: &[Received], topic: &str) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m.topic == topic)
        .map(|m| validated(&SCHEMAS.event, m))
        .collect()
}

/// Waits until `n` messages arrived on `topic` (or `timeout` passed); returns every message.
fn wait_events(sub: &Subscriber, topic: &str, n: usize, timeout: Duration) -> Vec<Received> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = sub.messages();
        if got.iter().filter(|m| m.topic == topic).count() >= n || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn label(event: &Value) -> Option<&str> {
    event["objects"][0]["classification"]["label"].as_str()
}

fn seq(event: &Value) -> u64 {
    event["sequence"].as_u64().expect("sequence")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("visionpublish-test-")
        .tempdir()
        .expect("temp dir")
}

fn pipeline(desc: &str) -> gst::Pipeline {
    init();
    gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("{desc}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline")
}

/// Plays `p` until EOS; returns the warnings on the way. Panics on an error or a timeout.
fn run_to_eos(p: &gst::Pipeline, timeout: Duration) -> Vec<String> {
    p.set_state(gst::State::Playing).expect("playing");
    let bus = p.bus().expect("bus");
    let deadline = Instant::now() + timeout;
    let mut warnings = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no EOS within {timeout:?}");
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
        else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => return warnings,
            gst::MessageView::Error(e) => panic!("error: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            _ => {}
        }
    }
}

fn stop(p: &gst::Pipeline) {
    p.set_state(gst::State::Null).expect("null");
}

fn stats(p: &gst::Pipeline) -> gst::Structure {
    p.by_name("pub")
        .expect("visionpublish named pub")
        .property::<gst::Structure>("stats")
}

#[test]
fn every_frame_arrives_validates_and_is_numbered_without_gaps() {
    const N: u64 = 30;
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-all", "vision/#"));
    let spool = tempdir();
    let p = pipeline(&format!(
        "videotestsrc num-buffers={N} pattern=red ! {CAPS} ! {} ! {} ! fakesink",
        classify(),
        publish(broker.port(), "cam-all", spool.path(), "")
    ));
    p.by_name("pub")
        .expect("pub")
        .set_property("tags", r#"{"site":"lab","line":2}"#);
    let warnings = run_to_eos(&p, Duration::from_secs(30));
    assert!(warnings.is_empty(), "{warnings:?}");
    let topic = "vision/cam-all/classifications";
    let got = wait_events(&sub, topic, N as usize, Duration::from_secs(10));
    // Still running: the counters while connected, once the broker acknowledged everything.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = stats(&p);
    while s.get::<u64>("acked").unwrap_or(0) < N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        s = stats(&p);
    }
    stop(&p);
    assert_eq!(s.get::<u64>("events").ok(), Some(N));
    assert_eq!(s.get::<u64>("acked").ok(), Some(N), "{s}");
    assert_eq!(s.get::<u64>("spooled").ok(), Some(0), "{s}");
    assert_eq!(s.get::<u64>("dropped").ok(), Some(0), "{s}");
    assert_eq!(s.get::<bool>("connected").ok(), Some(true), "{s}");
    // After the stop, the events made are still readable.
    assert_eq!(stats(&p).get::<u64>("events").ok(), Some(N));

    let ev = events(&got, topic);
    assert_eq!(ev.len(), N as usize, "{got:?}");
    let run = ev[0]["run"].as_str().expect("run").to_string();
    for (i, e) in ev.iter().enumerate() {
        let i = i as u64;
        assert_eq!(seq(e), i, "in order, without gaps");
        assert_eq!(e["frame"], i);
        assert_eq!(label(e), Some("red"), "{e}");
        assert_eq!(e["objects"][0]["classification"]["label_id"], 0);
        assert!(e["objects"][0]["classification"]["confidence"].as_f64() > Some(0.9));
        assert_eq!(e["objects"][0]["classification"]["model"]["name"], "color3");
        assert_eq!(
            (e["objects"][0]["w"].as_u64(), e["objects"][0]["h"].as_u64()),
            (Some(64), Some(48))
        );
        assert_eq!(e["resolution"]["width"], 64);
        assert_eq!(e["resolution"]["height"], 48);
        // videotestsrc at 30/1: frame i starts at i/30 s of stream time.
        assert_eq!(e["timestamp"].as_u64(), Some(i * 1_000_000_000 / 30));
        assert_eq!(e["sensorId"], "cam-all");
        assert_eq!(e["model"], "color3");
        assert_eq!(e["mode"], "all");
        assert_eq!(e["run"], run.as_str());
        assert_eq!(
            e["version"].as_str().map(|v| v.starts_with("1.")),
            Some(true)
        );
        assert_eq!(e["tags"]["site"], "lab");
        assert_eq!(e["tags"]["line"], 2);
        assert!(
            e.get("source").is_none(),
            "videotestsrc has no location: {e}"
        );
        assert_eq!(e["objects"][0]["below_threshold"], false);
        assert_eq!(e["objects"][0]["reused"], false);
    }
    // The status went online (retained) before the events.
    let status: Vec<String> = got
        .iter()
        .filter(|m| m.topic == "vision/cam-all/status")
        .map(Received::text)
        .collect();
    assert_eq!(
        status.first().map(String::as_str),
        Some("online"),
        "{status:?}"
    );
}

fn rgb_frame(rgb: [u8; 3], i: u64, ms: u64) -> gst::Buffer {
    let data: Vec<u8> = rgb.iter().copied().cycle().take(64 * 48 * 3).collect();
    let mut b = gst::Buffer::from_mut_slice(data);
    {
        let b = b.get_mut().expect("new buffer");
        b.set_pts(gst::ClockTime::from_mseconds(ms * i));
        b.set_duration(gst::ClockTime::from_mseconds(ms));
        b.set_offset(i);
    }
    b
}

const RED: [u8; 3] = [220, 20, 30];
const GREEN: [u8; 3] = [10, 200, 40];
const BLUE: [u8; 3] = [30, 40, 210];

fn harness(port: u16, sensor: &str, spool: &Path, extra: &str) -> Harness {
    init();
    let mut h = Harness::new_parse(&format!(
        "{} ! {}",
        classify(),
        publish(port, sensor, spool, extra)
    ));
    h.set_src_caps_str(CAPS);
    h.play();
    h
}

#[test]
fn change_mode_publishes_only_label_changes_and_the_video_passes_untouched() {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-chg", "vision/#"));
    let spool = tempdir();
    let mut h = harness(broker.port(), "cam-chg", spool.path(), "mode=change");
    let colours = [RED, RED, RED, GREEN, GREEN, BLUE, BLUE, RED, RED];
    for (i, rgb) in colours.into_iter().enumerate() {
        let input = rgb_frame(rgb, i as u64, 33);
        let ptr = input.map_readable().expect("map").as_ptr();
        let kept = input.clone();
        h.push(input).expect("push");
        let out = h.pull().expect("pull");
        let map = out.map_readable().expect("map");
        assert_eq!(map.as_ptr(), ptr, "frame {i}: pixels must not be copied");
        assert_eq!(map.as_slice(), kept.map_readable().expect("map").as_slice());
        assert_eq!(out.pts(), kept.pts());
        assert_eq!(out.offset(), i as u64);
        assert!(
            gstvision::meta::read(&out).is_some(),
            "the meta stays on the buffer"
        );
    }
    h.push_event(gst::event::Eos::new());
    drop(h); // to NULL: stop() hands over what is queued

    let topic = "vision/cam-chg/classifications";
    let got = wait_events(&sub, topic, 4, Duration::from_secs(10));
    let ev = events(&got, topic);
    let summary: Vec<(u64, Option<&str>, Option<&str>, u64)> = ev
        .iter()
        .map(|e| {
            (
                seq(e),
                label(e),
                e["previous_label"].as_str(),
                e["frame"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, Some("red"), None, 0),
            (1, Some("green"), Some("red"), 3),
            (2, Some("blue"), Some("green"), 5),
            (3, Some("red"), Some("blue"), 7),
        ]
    );
    assert!(ev.iter().all(|e| e["mode"] == "change"));
}

#[test]
fn summary_mode_counts_labels_per_window_of_stream_time() {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-sum", "vision/#"));
    let spool = tempdir();
    let mut h = harness(
        broker.port(),
        "cam-sum",
        spool.path(),
        "mode=summary summary-interval=1 topic=vision/{sensor}/summary/{model}",
    );
    // 62 frames 40 ms apart (0 to 2.44 s): red for the first 30, then green.
    for i in 0..62u64 {
        h.push(rgb_frame(if i < 30 { RED } else { GREEN }, i, 40))
            .expect("push");
        h.pull().expect("pull");
    }
    h.push_event(gst::event::Eos::new());
    drop(h);

    let topic = "vision/cam-sum/summary/color3";
    let got = wait_events(&sub, topic, 3, Duration::from_secs(10));
    let ev = events(&got, topic);
    assert_eq!(
        ev.len(),
        3,
        "two full windows and the partial one at EOS: {got:?}"
    );
    let window = |e: &Value| {
        let s = &e["summary"];
        (
            s["start"].as_u64().unwrap_or(0) / 1_000_000,
            s["end"].as_u64().unwrap_or(0) / 1_000_000,
            s["frames"].as_u64().unwrap_or(0),
        )
    };
    let counts = |e: &Value| -> Vec<(String, u64)> {
        e["summary"]["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (
                    l["label"].as_str().unwrap_or("").to_string(),
                    l["count"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(window(&ev[0]), (0, 1000, 25));
    assert_eq!(counts(&ev[0]), vec![("red".to_string(), 25)]);
    assert_eq!(window(&ev[1]), (1000, 2000, 25));
    assert_eq!(
        counts(&ev[1]),
        vec![("green".to_string(), 20), ("red".to_string(), 5)]
    );
    assert_eq!(label(&ev[1]), Some("green"), "the most frequent label");
    assert_eq!(window(&ev[2]), (2000, 2480, 12), "ends with the last frame");
    assert_eq!(counts(&ev[2]), vec![("green".to_string(), 12)]);
    let mean = ev[0]["summary"]["labels"][0]["mean_confidence"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(mean > 0.9, "{mean}");
    assert_eq!(
        ev.iter().map(seq).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "summaries are numbered too"
    );
    assert_eq!(ev[1]["timestamp"].as_u64(), Some(1_000_000_000));
}

/// Waits for a message on `topic` whose text is `want`.
fn wait_text(sub: &Subscriber, topic: &str, want: &str, timeout: Duration) -> Option<Received> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(m) = sub
            .messages()
            .into_iter()
            .find(|m| m.topic == topic && m.text() == want)
        {
            return Some(m);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn status_is_retained_online_while_running_and_offline_after_stop() {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let spool = tempdir();
    let p = pipeline(&format!(
        "videotestsrc is-live=true ! {CAPS} ! {} ! fakesink",
        publish(broker.port(), "cam-st", spool.path(), "")
    ));
    p.set_state(gst::State::Playing).expect("playing");
    let topic = "vision/cam-st/status";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stats(&p).get::<bool>("connected").unwrap_or(false) {
        assert!(Instant::now() < deadline, "never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A subscriber that comes later gets the retained status.
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-st1", topic));
    let online = wait_text(&sub, topic, "online", Duration::from_secs(5))
        .expect("retained online status while running");
    assert!(online.retain, "the status is retained");
    stop(&p);
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-st2", topic));
    let offline = wait_text(&sub, topic, "offline", Duration::from_secs(5))
        .expect("retained offline status after stop");
    assert!(offline.retain);
}

/// Not a test by itself: the process that `last_will_says_offline_when_the_process_dies`
/// starts and kills.
#[test]
#[ignore = "helper process of last_will_says_offline_when_the_process_dies"]
fn last_will_child() {
    let (Ok(port), Ok(spool)) = (
        std::env::var("VISIONPUBLISH_TEST_PORT"),
        std::env::var("VISIONPUBLISH_TEST_SPOOL"),
    ) else {
        return;
    };
    let port: u16 = port.parse().expect("port");
    let p = pipeline(&format!(
        "videotestsrc is-live=true ! {CAPS} ! {} ! fakesink",
        publish(port, "cam-will", Path::new(&spool), "keep-alive=2")
    ));
    p.set_state(gst::State::Playing).expect("playing");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn last_will_says_offline_when_the_process_dies() {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let topic = "vision/cam-will/status";
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-will", topic));
    let spool = tempdir();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "last_will_child", "--nocapture"])
        .env("VISIONPUBLISH_TEST_PORT", broker.port().to_string())
        .env("VISIONPUBLISH_TEST_SPOOL", spool.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child process");
    let online = wait_text(&sub, topic, "online", Duration::from_secs(20));
    let _ = child.kill(); // SIGKILL: no DISCONNECT, no stop()
    let _ = child.wait();
    assert!(online.is_some(), "the child never went online");
    let offline = wait_text(&sub, topic, "offline", Duration::from_secs(10));
    assert!(
        offline.is_some(),
        "the broker did not publish the last will: {:?}",
        sub.messages()
    );
}

#[test]
fn health_message_arrives_and_validates() {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-h", "vision/#"));
    let spool = tempdir();
    // 2 s of live video: at least one health message a second.
    let p = pipeline(&format!(
        "videotestsrc is-live=true num-buffers=60 pattern=red ! {CAPS} ! {} ! {} ! fakesink",
        classify(),
        publish(
            broker.port(),
            "cam-h",
            spool.path(),
            "health-interval=1 health-topic=vision/{sensor}/health"
        )
    ));
    run_to_eos(&p, Duration::from_secs(30));
    stop(&p);
    let got = wait_events(&sub, "vision/cam-h/health", 1, Duration::from_secs(5));
    let health: Vec<Value> = got
        .iter()
        .filter(|m| m.topic == "vision/cam-h/health")
        .map(|m| validated(&SCHEMAS.health, m))
        .collect();
    assert!(!health.is_empty(), "no health message: {got:?}");
    let h = &health[0];
    assert_eq!(h["sensorId"], "cam-h");
    assert_eq!(h["model"], "color3");
    assert!(h["frames"].as_u64() > Some(10), "{h}");
    let fps = h["fps"].as_f64().unwrap_or(0.0);
    assert!((15.0..45.0).contains(&fps), "live 30 fps, got {fps}: {h}");
    assert!(h["inference"]["mean_ms"].as_f64() > Some(0.0), "{h}");
    assert_eq!(h["delivery"]["connected"], true);
    assert_eq!(h["delivery"]["dropped"], 0);
    let red = &h["confidence"]["red"];
    let count = red["count"].as_u64().unwrap_or(0);
    assert!(count > 10, "{h}");
    let hist: u64 = red["histogram"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(hist, count, "the histogram counts every frame once");
    assert!(
        red["min"].as_f64() > Some(0.9),
        "a red frame is surely red: {h}"
    );
    assert_eq!(red["histogram"][9].as_u64(), Some(count));
}

#[test]
fn bad_settings_fail_at_the_state_change_naming_the_setting() {
    init();
    let spool = tempdir();
    let missing = spool.path().join("missing");
    let m = missing.display();
    let cases = [
        ("broker=http://127.0.0.1:1883".to_string(), "broker"),
        ("broker=mqtt://127.0.0.1:99999".to_string(), "broker"),
        (
            format!("broker=mqtts://127.0.0.1:8883 ca-file={m}/ca.pem"),
            "ca-file",
        ),
        ("topic=vision/{camera}/events".to_string(), "topic"),
        ("topic=vision/+/events".to_string(), "topic"),
        ("status-topic=vision/{label}".to_string(), "status-topic"),
        (
            "health-interval=5 health-topic=vision/{model}/health".to_string(),
            "health-topic",
        ),
        (format!("username=u password-file={m}/pw"), "password-file"),
        (
            "username=u password-env=VISIONPUBLISH_TEST_NO_SUCH_VARIABLE".to_string(),
            "password-env",
        ),
        ("password=secret".to_string(), "password"),
        ("tags=[1,2]".to_string(), "tags"),
        ("sensor-id=cam+1".to_string(), "sensor-id"),
    ];
    for (props, setting) in cases {
        let p = pipeline(&format!(
            "fakesrc num-buffers=1 ! visionpublish name=pub spool-dir={} {props} ! fakesink",
            spool.path().display()
        ));
        assert!(
            p.set_state(gst::State::Paused).is_err(),
            "{props}: the state change must fail"
        );
        let bus = p.bus().expect("bus");
        let err = bus
            .iter_timed(gst::ClockTime::from_seconds(1))
            .find_map(|msg| match msg.view() {
                gst::MessageView::Error(e) => Some((
                    msg.src().map(|s| s.name().to_string()),
                    e.error().to_string(),
                )),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{props}: no error message"));
        stop(&p);
        assert_eq!(err.0.as_deref(), Some("pub"), "{props}");
        assert!(
            err.1.starts_with(setting) || err.1.contains(&format!("invalid {setting}")),
            "{props}: '{}' does not name {setting}",
            err.1
        );
        assert!(!err.1.contains("secret"), "the password is never shown");
    }
}

#[test]
fn wrong_password_is_a_warning_the_stream_goes_on_and_nothing_is_lost() {
    let broker = Mosquitto::start(MosquittoConfig {
        users: vec![("cam".into(), "s3cret".into())],
        ..Default::default()
    });
    let sub = Subscriber::start(
        SubscriberOptions::new(broker.port(), "sub-auth", "vision/#").credentials("cam", "s3cret"),
    );
    let spool = tempdir();
    let desc = |auth: &str| {
        format!(
            "videotestsrc num-buffers=10 pattern=red ! {CAPS} ! {} ! {} ! fakesink",
            classify(),
            publish(broker.port(), "cam-auth", spool.path(), auth)
        )
    };
    // Wrong password: the stream runs to its end; the events wait in the spool.
    let p = pipeline(&desc("username=cam password=wrong"));
    let mut warnings = run_to_eos(&p, Duration::from_secs(30));
    let bus = p.bus().expect("bus");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !warnings
        .iter()
        .any(|w| w.contains("refused the credentials"))
        && Instant::now() < deadline
    {
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
            &[gst::MessageType::Warning],
        ) && let gst::MessageView::Warning(w) = msg.view()
        {
            warnings.push(w.error().to_string());
        }
    }
    let s = stats(&p);
    stop(&p);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("refused the credentials")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("wrong")),
        "never the password"
    );
    assert_eq!(s.get::<u64>("events").ok(), Some(10), "{s}");
    assert_eq!(s.get::<u64>("acked").ok(), Some(0), "{s}");

    // Right password from a file: this run's events and the spooled ones arrive.
    let pw = spool.path().join("password");
    std::fs::write(&pw, "s3cret\n").expect("password file");
    let p = pipeline(&desc(&format!(
        "username=cam password-file={}",
        pw.display()
    )));
    run_to_eos(&p, Duration::from_secs(30));
    stop(&p);
    let topic = "vision/cam-auth/classifications";
    let got = wait_events(&sub, topic, 20, Duration::from_secs(10));
    let ev = events(&got, topic);
    let mut runs: Vec<&str> = ev.iter().filter_map(|e| e["run"].as_str()).collect();
    runs.dedup();
    assert_eq!(runs.len(), 2, "two runs, the spooled one first: {runs:?}");
    for run in runs {
        let seqs: Vec<u64> = ev.iter().filter(|e| e["run"] == run).map(seq).collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "run {run}");
    }
}

#[test]
fn source_is_found_upstream() {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-src", "vision/#"));
    let spool = tempdir();
    let file = spool.path().join("red.rgb");
    let frame: Vec<u8> = RED.iter().copied().cycle().take(64 * 48 * 3 * 3).collect();
    std::fs::write(&file, frame).expect("raw video file");
    let p = pipeline(&format!(
        "filesrc location={} ! rawvideoparse width=64 height=48 format=rgb framerate=30/1 ! \
         {} ! {} ! fakesink",
        file.display(),
        classify(),
        publish(broker.port(), "cam-src", spool.path(), "")
    ));
    run_to_eos(&p, Duration::from_secs(30));
    stop(&p);
    let topic = "vision/cam-src/classifications";
    let got = wait_events(&sub, topic, 3, Duration::from_secs(10));
    let ev = events(&got, topic);
    assert_eq!(ev.len(), 3);
    for e in &ev {
        assert_eq!(e["source"].as_str(), Some(file.to_string_lossy().as_ref()));
    }
}

/// Every line the GStreamer debug log gets from `visionpublish` (down to LOG) and from the
/// element messages it posts, while the returned guard lives. One capture at a time: the
/// thresholds are global.
struct LogCapture {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    function: Option<gst::log::DebugLogFunction>,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

impl LogCapture {
    fn start() -> Self {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let one_at_a_time = ONE.lock().unwrap_or_else(|e| e.into_inner());
        init();
        gst::log::set_threshold_for_name("visionpublish", gst::DebugLevel::Log);
        gst::log::set_threshold_for_name("GST_ERROR_SYSTEM", gst::DebugLevel::Warning);
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let function = gst::log::add_log_function(move |cat, level, _, _, _, _, msg| {
            if let Some(text) = msg.get() {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{level:?} {}: {text}", cat.name()));
            }
        });
        LogCapture {
            lines,
            function: Some(function),
            _one_at_a_time: one_at_a_time,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        if let Some(f) = self.function.take() {
            gst::log::remove_log_function(f);
        }
        // Back to quiet for the other tests (GST_DEBUG still applies at the next init).
        gst::log::unset_threshold_for_name("visionpublish");
        gst::log::unset_threshold_for_name("GST_ERROR_SYSTEM");
    }
}

/// Errors, warnings and infos on `p`'s bus (text and debug details) until EOS or an error.
fn bus_texts(p: &gst::Pipeline, timeout: Duration) -> Vec<String> {
    let bus = p.bus().expect("bus");
    let deadline = Instant::now() + timeout;
    let mut texts = Vec::new();
    while let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64,
    )) {
        let (text, debug) = match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                texts.push(format!("error: {} {:?}", e.error(), e.debug()));
                break;
            }
            gst::MessageView::Warning(w) => (w.error().to_string(), w.debug()),
            gst::MessageView::Info(i) => (i.error().to_string(), i.debug()),
            _ => continue,
        };
        texts.push(format!("{text} {debug:?}"));
    }
    texts
}

#[test]
fn credentials_never_reach_the_log_the_bus_or_the_events() {
    const PW: &str = "hunter2";
    let log = LogCapture::start();
    let broker = Mosquitto::start(MosquittoConfig {
        users: vec![("cam".into(), PW.into())],
        ..Default::default()
    });
    let sub = Subscriber::start(
        SubscriberOptions::new(broker.port(), "sub-cred", "vision/#").credentials("cam", PW),
    );
    let spool = tempdir();
    let mut bus = Vec::new();

    // A password in the broker URI: refused, and quoted without it.
    let p = pipeline(&format!(
        "fakesrc num-buffers=1 ! visionpublish broker=mqtt://cam:{PW}@127.0.0.1:{} \
         spool-dir={} ! fakesink",
        broker.port(),
        spool.path().display()
    ));
    assert!(p.set_state(gst::State::Paused).is_err());
    bus.extend(bus_texts(&p, Duration::from_secs(2)));
    stop(&p);
    assert!(
        bus.iter().any(|t| t.contains("mqtt://***@127.0.0.1")),
        "the error names the broker, redacted: {bus:?}"
    );

    // A source found upstream with credentials in it (as uridecodebin uri=rtsp://user:pass@..
    // would be): a file whose path holds such a URI. The password goes in as a property.
    let dir = spool.path().join(format!("rtsp:/cam:{PW}@camera"));
    std::fs::create_dir_all(&dir).expect("dir");
    let frame: Vec<u8> = RED.iter().copied().cycle().take(64 * 48 * 3 * 3).collect();
    std::fs::write(dir.join("red.rgb"), frame).expect("raw video file");
    let location = format!("{}/rtsp://cam:{PW}@camera/red.rgb", spool.path().display());
    let p = pipeline(&format!(
        "filesrc location=\"{location}\" ! rawvideoparse width=64 height=48 format=rgb \
         framerate=30/1 ! {} ! {} ! fakesink",
        classify(),
        publish(
            broker.port(),
            "cam-cred",
            spool.path(),
            &format!("username=cam password={PW}")
        )
    ));
    p.set_state(gst::State::Playing).expect("playing");
    bus.extend(bus_texts(&p, Duration::from_secs(30)));
    stop(&p);
    let topic = "vision/cam-cred/classifications";
    let got = wait_events(&sub, topic, 3, Duration::from_secs(10));
    let ev = events(&got, topic);
    assert_eq!(ev.len(), 3, "{bus:?}");
    let want = format!("{}/rtsp://***@camera/red.rgb", spool.path().display());
    for e in &ev {
        assert_eq!(e["source"].as_str(), Some(want.as_str()));
    }

    let lines = log.lines();
    drop(log);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("set broker") && l.contains("***@127.0.0.1")),
        "the debug log was captured and shows the broker redacted"
    );
    assert!(
        lines.iter().any(|l| l.contains("set password (not shown)")),
        "the password property was set and logged without its value"
    );
    assert!(
        lines.iter().any(|l| l.contains("rtsp://***@camera")),
        "the source is logged redacted"
    );
    for text in lines.iter().chain(&bus) {
        assert!(!text.contains(PW), "the password leaked: {text}");
    }
    for m in sub.messages() {
        assert!(
            !m.text().contains(PW),
            "the password was published: {}",
            m.text()
        );
    }
}

#[test]
fn tls_insecure_is_a_warning_on_the_bus_and_in_the_log() {
    let log = LogCapture::start();
    let spool = tempdir();
    // Nothing listens on port 1: the warning comes at the start, not from a connection.
    let p = pipeline(&format!(
        "fakesrc num-buffers=1 ! visionpublish name=insecure broker=mqtts://127.0.0.1:1 \
         tls-insecure=true backoff-min=100 spool-dir={} ! fakesink",
        spool.path().display()
    ));
    p.set_state(gst::State::Paused).expect("paused");
    let bus = p.bus().expect("bus");
    let warning = bus
        .iter_timed(gst::ClockTime::from_seconds(5))
        .find_map(|msg| match msg.view() {
            gst::MessageView::Warning(w) if w.error().to_string().contains("tls-insecure") => {
                Some((
                    msg.src().map(|s| s.name().to_string()),
                    w.error().to_string(),
                ))
            }
            _ => None,
        });
    stop(&p);
    let lines = log.lines();
    drop(log);
    let (src, text) = warning.expect("a warning about tls-insecure on the bus");
    assert_eq!(src.as_deref(), Some("insecure"));
    assert!(text.contains("NOT verified"), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Warning visionpublish") && l.contains("NOT verified")),
        "a WARN line in the debug log"
    );
}

#[test]
fn an_outage_mid_stream_loses_no_event() {
    // 6 s of live video; the broker is down from 1.5 s to 4.5 s.
    const N: u64 = 180;
    let mut broker = Mosquitto::start(MosquittoConfig {
        persistence: true,
        allow_anonymous: true,
        ..Default::default()
    });
    let sub = Subscriber::start(SubscriberOptions::new(
        broker.port(),
        "sub-out",
        "vision/+/classifications",
    ));
    let spool = tempdir();
    let p = pipeline(&format!(
        "videotestsrc is-live=true num-buffers={N} pattern=red ! {CAPS} ! {} ! {} ! fakesink",
        classify(),
        publish(broker.port(), "cam-out", spool.path(), "")
    ));
    p.set_state(gst::State::Playing).expect("playing");
    std::thread::sleep(Duration::from_millis(1500));
    broker.stop();
    let during = stats(&p);
    std::thread::sleep(Duration::from_secs(3));
    let spooled = stats(&p).get::<u64>("spooled").unwrap_or(0);
    broker.restart();
    let bus = p.bus().expect("bus");
    let eos = bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos]);
    assert!(eos.is_some(), "no EOS");
    stop(&p);

    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut firsts, mut dups);
    loop {
        let ev = events(&sub.messages(), "vision/cam-out/classifications");
        let mut seen = std::collections::BTreeSet::new();
        dups = 0;
        for e in &ev {
            if !seen.insert(seq(e)) {
                dups += 1;
            }
        }
        firsts = seen;
        if firsts.len() as u64 >= N || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing: Vec<u64> = (0..N).filter(|s| !firsts.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} events lost: {missing:?} (stats during the outage: {during})",
        missing.len()
    );
    assert!(spooled > 0, "the outage put events in the spool");
    eprintln!("outage: {N} events, 0 lost, {dups} duplicates, {spooled} spooled");
}

#[test]
fn gst_inspect_documents_every_property() {
    init();
    let factory = gst::ElementFactory::find("visionpublish").expect("registered");
    assert_eq!(
        factory.metadata(gst::ELEMENT_METADATA_KLASS),
        Some("Filter/Analyzer/Video/Network")
    );
    let e = factory.create().build().expect("element");
    for p in e.list_properties() {
        if p.owner_type() != e.type_() {
            continue;
        }
        let blurb = p.blurb().unwrap_or("");
        assert!(blurb.len() > 20, "{}: blurb '{blurb}'", p.name());
    }
    let pw = e.find_property("password").expect("password");
    assert!(
        !pw.flags().contains(glib::ParamFlags::READABLE),
        "write-only"
    );
    assert_eq!(e.property::<String>("broker"), "mqtt://127.0.0.1:1883");
    assert_eq!(
        e.property::<String>("topic"),
        "vision/{sensor}/classifications"
    );
    assert_eq!(
        e.property::<String>("status-topic"),
        "vision/{sensor}/status"
    );
    assert_eq!(e.property::<String>("sensor-id"), "camera-0");
    assert_eq!(e.property::<u32>("health-interval"), 10);
    assert!(e.property::<bool>("persistent-session"));
    let qos = || e.property_value("mqtt-qos").get::<QosChoice>().ok();
    assert_eq!(qos(), Some(QosChoice::AtLeastOnce));
    e.set_property_from_str("mqtt-qos", "2");
    assert_eq!(qos(), Some(QosChoice::ExactlyOnce));
    e.set_property_from_str("mode", "change");
    assert_eq!(
        e.property_value("mode").get::<ModeChoice>().ok(),
        Some(ModeChoice::Change)
    );
    // BaseTransform's own qos (QoS events) is untouched.
    assert!(!e.property::<bool>("qos"));
}

#[test]
fn readme_examples_follow_the_schemas() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(&path).expect("gst-plugin/README.md");
    let mut checked = (0, 0);
    for (marker, count) in [
        ("<!-- event -->", &mut checked.0),
        ("<!-- health -->", &mut checked.1),
    ] {
        for block in text.split(marker).skip(1) {
            let json = block
                .split_once("```json")
                .and_then(|(_, rest)| rest.split_once("```"))
                .map(|(json, _)| json)
                .expect("a json block after the marker");
            let msg = Received {
                topic: format!("README {marker}"),
                payload: json.as_bytes().to_vec(),
                retain: false,
                dup: false,
            };
            let schema = if marker.contains("health") {
                &SCHEMAS.health
            } else {
                &SCHEMAS.event
            };
            validated(schema, &msg);
            *count += 1;
        }
    }
    assert_eq!(checked, (3, 1), "examples found in the README");
}

#[test]
fn classified_regions_arrive_as_objects_with_boxes() {
    let broker = Mosquitto::start(MosquittoConfig::anonymous());
    let sub = Subscriber::start(SubscriberOptions::new(broker.port(), "sub-roi", "vision/#"));
    let spool = tempdir();
    init();
    let mut h = Harness::new_parse(&format!(
        "{} target=roi ! {}",
        classify(),
        publish(broker.port(), "cam-roi", spool.path(), "mode=change")
    ));
    h.set_src_caps_str(CAPS);
    h.play();
    // Left half red, right half green; object 7 on the left, then it moves right.
    let frame = |i: u64, boxes: &[(u32, Option<i32>)]| {
        let data: Vec<u8> = (0..64 * 48)
            .flat_map(|p| if p % 64 < 32 { RED } else { GREEN })
            .collect();
        let mut b = gst::Buffer::from_mut_slice(data);
        let bm = b.get_mut().expect("new buffer");
        bm.set_pts(gst::ClockTime::from_mseconds(33 * i));
        for (x, id) in boxes {
            let mut m = gst_video::VideoRegionOfInterestMeta::add(bm, "person", (*x, 8, 24, 32));
            if let Some(id) = id {
                m.add_param(
                    gst::Structure::builder("object_id")
                        .field("id", *id)
                        .build(),
                );
            }
        }
        b
    };
    let frames = [
        frame(0, &[(4, Some(7))]),                // new object: event
        frame(1, &[(4, Some(7))]),                // same label: none
        frame(2, &[]),                            // no region: none
        frame(3, &[(36, Some(7)), (4, Some(8))]), // 7 turned green, 8 new: event
        frame(4, &[(36, Some(7)), (4, Some(8))]), // none
    ];
    for b in frames {
        h.push(b).expect("push");
        let out = h.pull().expect("pull");
        assert!(gstvision::meta::read(&out).is_none());
    }
    h.push_event(gst::event::Eos::new());
    drop(h);
    let topic = "vision/cam-roi/classifications";
    let got = wait_events(&sub, topic, 2, Duration::from_secs(10));
    let ev = events(&got, topic);
    assert_eq!(ev.len(), 2, "{ev:?}");
    let objects = |e: &Value| -> Vec<(u64, String, f64)> {
        e["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| {
                (
                    o["id"].as_u64().expect("id"),
                    o["classification"]["label"]
                        .as_str()
                        .expect("label")
                        .to_owned(),
                    o["detection"]["bounding_box"]["x_min"]
                        .as_f64()
                        .expect("box"),
                )
            })
            .collect()
    };
    assert_eq!(objects(&ev[0]), [(7, "red".to_owned(), 4.0 / 64.0)]);
    assert_eq!(
        objects(&ev[1]),
        [
            (7, "green".to_owned(), 36.0 / 64.0),
            (8, "red".to_owned(), 4.0 / 64.0)
        ]
    );
    let o = &ev[0]["objects"][0];
    assert_eq!(
        (
            o["x"].as_u64(),
            o["y"].as_u64(),
            o["w"].as_u64(),
            o["h"].as_u64()
        ),
        (Some(4), Some(8), Some(24), Some(32))
    );
    assert_eq!(o["roi_type"], "person");
    assert_eq!(o["detection"]["label"], "person");
    assert_eq!(o["detection"]["bounding_box"]["y_max"], 40.0 / 48.0);
    assert_eq!(ev[1]["frame"], 3);
}
