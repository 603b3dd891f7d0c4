//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz) and of their replay test
//! (`tests/fuzz_replay.rs`, which runs every kept input through them in `scripts/test.sh`).
//! Each takes any bytes, must not panic, abort or allocate without bound, and asserts what
//! must hold for every input. Not an API: hidden from the documentation.

use std::str::FromStr;

use ort::value::TensorElementType;

use crate::contract::{self, Contract};
use crate::delivery::{BrokerUri, DeliveryConfig, Secret};
use crate::event::{self, Event, Placeholder, TopicTemplate};
use crate::meta;
use crate::model::{Description, MAX_CLASSES, MAX_IMAGE_VALUES, Overrides};

/// Splits `data` at NUL bytes into at most `n` pieces of text (invalid UTF-8 replaced).
fn pieces(data: &[u8], n: usize) -> Vec<String> {
    data.splitn(n, |&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// A dimension from one byte: small values as they are, the rest the sizes that break
/// arithmetic (dynamic, zero, negative, near and past `i32`/`usize` limits).
fn dim(b: u8) -> i64 {
    match b {
        0..=0xdf => i64::from(b),
        0xe0 => -1,
        0xe1 => -7,
        0xe2 => i64::MIN,
        0xe3 => i64::MAX,
        0xe4 => i64::from(i32::MAX),
        0xe5 => 1 << 31,
        0xe6 => 1 << 32,
        0xe7 => 1 << 40,
        0xe8 => 224,
        0xe9 => 1000,
        0xea => 1 << 20,
        0xeb => (1 << 20) + 1,
        0xec => 1 << 13,
        0xed => 46_341,        // its square passes i32::MAX
        0xee => 3_037_000_500, // its square passes i64::MAX
        _ => i64::from(b) - 0xf0,
    }
}

fn element_type(b: u8) -> TensorElementType {
    match b % 4 {
        0 => TensorElementType::Float32,
        1 => TensorElementType::Uint8,
        2 => TensorElementType::Int64,
        _ => TensorElementType::Float16,
    }
}

/// The model contract and what the element makes of it with any declared input and output
/// shapes. Layout: `[input type, input rank, dims..., output type, output rank, dims...,
/// output name]`, then the values of `vision.schema`, `vision.labels`, `vision.preprocess`,
/// `vision.output`, `vision.model` and a labels file, separated by NUL bytes (an empty value
/// is an absent key).
pub fn contract(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let in_type = element_type(next());
    let in_rank = usize::from(next() % 6);
    let in_dims: Vec<i64> = (0..in_rank).map(|_| dim(next())).collect();
    let out_type = element_type(next());
    let out_rank = usize::from(next() % 5);
    let out_dims: Vec<i64> = (0..out_rank).map(|_| dim(next())).collect();
    let out_name = if next() % 2 == 0 { "scores" } else { "logits" };
    let header = 4 + in_rank + out_rank;
    let text = pieces(data.get(header..).unwrap_or_default(), 6);
    let value = |i: usize| text.get(i).filter(|v| !v.is_empty()).cloned();
    let keys = contract::KEYS;
    let parsed = Contract::from_lookup(|key| keys.iter().position(|k| *k == key).and_then(&value));
    let contract = match parsed {
        Ok(c) => c,
        Err(e) => {
            assert!(e.to_string().contains(e.key), "{e}");
            return;
        }
    };
    // What the element accepts, it writes back the same (the trainer writes through it).
    let json = serde_json::to_string(&contract.preprocess).expect("preprocess serializes");
    let back: contract::PreprocessContract =
        serde_json::from_str(&json).expect("written preprocess parses");
    assert_eq!(back, contract.preprocess, "{json}");

    let labels_file = value(5).map(|t| contract::parse_labels(&t));
    let overrides = Overrides {
        labels: labels_file.and_then(Result::ok),
        ..Overrides::default()
    };
    let description = Description::from_shapes(
        "fuzz.onnx",
        contract,
        (in_type, in_dims),
        vec![(out_name.into(), out_type, out_dims)],
    );
    match description.spec(&overrides) {
        Ok(spec) => {
            assert!(spec.slot.len() <= MAX_IMAGE_VALUES && !spec.slot.is_empty());
            assert!(spec.num_classes > 0 && spec.num_classes <= MAX_CLASSES);
            assert_eq!(spec.labels.len(), spec.num_classes);
            spec.check_batch(spec.fixed_batch.unwrap_or(1))
                .expect("the model's own batch fits");
            let n = &spec.normalize;
            assert!(n.scale.is_finite() && n.scale != 0.0);
            assert!(n.mean.iter().chain(&n.std).all(|v| v.is_finite()));
            assert!(n.std.iter().all(|&v| v != 0.0));
        }
        Err(e) => assert!(e.to_string().contains("fuzz.onnx"), "{e}"),
    }
}

/// Labels files (the element's `labels-file`): what is accepted has a label per line.
pub fn labels(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(labels) = contract::parse_labels(&text) {
        assert!(!labels.is_empty());
        for l in &labels {
            assert!(!l.is_empty() && !l.contains('\n') && l.trim() == l, "{l:?}");
        }
        assert!(labels.len() <= text.lines().count());
    }
}

fn gst_init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| gst::init().expect("GStreamer initializes"));
}

/// A GStreamer value from a JSON value: what an upstream element could put in a structure.
/// Whole numbers are `guint` (`guint64` when `wide` or too large), other numbers `gdouble`.
fn to_gst(v: &serde_json::Value, wide: bool) -> Option<gst::glib::SendValue> {
    use gst::glib::value::ToSendValue;
    Some(match v {
        serde_json::Value::Bool(b) => b.to_send_value(),
        serde_json::Value::String(s) => s.to_send_value(),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => match u32::try_from(u) {
                Ok(small) if !wide => small.to_send_value(),
                _ => u.to_send_value(),
            },
            (None, Some(i)) => i.to_send_value(),
            _ => n.as_f64()?.to_send_value(),
        },
        serde_json::Value::Array(items) => {
            // A GStreamer array holds values of one type: the first item's.
            let values: Vec<_> = items.iter().filter_map(|i| to_gst(i, wide)).collect();
            let first = values.first().map(|v| v.type_());
            gst::Array::new(values.into_iter().filter(|v| Some(v.type_()) == first)).to_send_value()
        }
        serde_json::Value::Null | serde_json::Value::Object(_) => return None,
    })
}

/// Events as consumers read them (`event::Event` from JSON), the `tags` setting, and the
/// classification meta read from a structure another element could have written (the JSON
/// object's fields as structure fields). What reads back writes again and reads back equal.
pub fn event(data: &[u8]) {
    if let Ok(e) = serde_json::from_slice::<Event>(data) {
        let again: Result<Event, _> = serde_json::from_slice(&e.to_json());
        let again = again.expect("a read event writes JSON that reads back");
        assert_eq!(again.to_json(), e.to_json());
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(Some(tags)) = event::parse_tags(&text) {
        let json = serde_json::Value::Object(tags.clone()).to_string();
        assert_eq!(event::parse_tags(&json).ok().flatten(), Some(tags));
    }
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(data) else {
        return;
    };
    gst_init();
    let mut s = gst::Structure::new_empty(meta::META_NAME);
    for (name, value) in &fields {
        let wide = matches!(name.as_str(), "inference-time" | "frame");
        if name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && let Some(value) = to_gst(value, wide)
        {
            s.set_value(name.as_str(), value);
        }
    }
    if let Some(r) = meta::from_structure(&s) {
        let mut written = gst::Structure::new_empty(meta::META_NAME);
        meta::fill_structure(&mut written, &r);
        // `r` holds float32 confidences already: written as double, they read back exact.
        assert_eq!(meta::from_structure(&written).as_ref(), Some(&r));
    }
}

/// True when `text` could stand in a URI's user information: a '/', '?', '#', quote or white
/// space ends the authority (what follows is a path, not credentials), and so does `end`.
fn in_authority(text: &str, end: char) -> bool {
    !text.contains(['/', '?', '#', '"', '\'', end]) && !text.chars().any(char::is_whitespace)
}

/// Whether the broker URI error for `make(secret)` shows `secret` more often than the error for
/// the same URI with a placeholder in its place (the secret may also be a word of the message,
/// "roker" of "broker", or another part of the URI).
fn shows(make: impl Fn(&str) -> String, secret: &str) -> bool {
    let count = |uri: String| match BrokerUri::from_str(&uri) {
        Ok(_) => 0,
        Err(e) => e.to_string().matches(secret).count(),
    };
    let placeholder = "\u{1}".repeat(secret.chars().count());
    count(make(secret)) > count(make(&placeholder))
}

/// `visionpublish`'s MQTT settings: the broker URI, topic templates, sensor id and the
/// whole configuration check. A URI that parses prints as one that parses to the same; no
/// error message shows the password or the user information of a URI.
pub fn mqtt_settings(data: &[u8]) {
    let p = pieces(data, 5);
    let get = |i: usize| p.get(i).cloned().unwrap_or_default();
    let (uri, user, password, topic, client) = (get(0), get(1), get(2), get(3), get(4));
    match BrokerUri::from_str(&uri) {
        Ok(b) => {
            let printed = b.to_string();
            let again = BrokerUri::from_str(&printed)
                .unwrap_or_else(|e| panic!("{uri:?} printed as {printed:?}, which fails: {e}"));
            assert_eq!(again, b, "{uri:?} printed as {printed:?}");
        }
        Err(_) => {
            if let Some((scheme, rest)) = uri.split_once("://")
                && let Some((userinfo, host)) = rest.rsplit_once('@')
                && in_authority(userinfo, '\0')
                && userinfo.len() >= 4
            {
                let make = |secret: &str| format!("{scheme}://{secret}@{host}");
                assert!(
                    !shows(make, userinfo),
                    "{uri:?}: an error shows the user information"
                );
            }
        }
    }
    // A URI with credentials in it: they never show in the error.
    if password.len() >= 4 && in_authority(&password, '@') && in_authority(&user, '@') {
        let make = |secret: &str| format!("mqtt://{user}:{secret}@{uri}");
        assert!(
            !shows(make, &password),
            "{:?}: an error shows the password",
            make(&password)
        );
    }
    for allowed in [
        &[Placeholder::Sensor][..],
        &[Placeholder::Sensor, Placeholder::Model, Placeholder::Label],
    ] {
        if let Ok(t) = TopicTemplate::parse("topic", &topic, allowed) {
            let rendered = t.render(&event::TopicValues {
                sensor: "cam",
                model: "m/+#",
                label: Some("a/b"),
            });
            assert!(
                !rendered.contains(['+', '#', '\0']),
                "{topic:?} -> {rendered:?}"
            );
        }
    }
    let _ = event::check_sensor_id(&client);
    // The whole configuration's check: with the password and with a placeholder of its length
    // (the setting names in the messages may contain it: "pass" of "password").
    let count = |secret: &str| {
        let broker = BrokerUri::from_str("mqtt://localhost").expect("a plain URI parses");
        let mut config = DeliveryConfig::new(broker, client.clone(), "/nonexistent/s.db".into());
        config.username = Some(user.clone()).filter(|u| !u.is_empty());
        config.password = Some(Secret::new(secret)).filter(|_| !secret.is_empty());
        config.status_topic = topic.clone();
        config
            .check()
            .err()
            .map_or(0, |e| e.to_string().matches(password.as_str()).count())
    };
    if password.len() >= 4 {
        let placeholder = "\u{1}".repeat(password.chars().count());
        assert!(
            count(&password) <= count(&placeholder),
            "the configuration check shows the password"
        );
    }
}
