//! Cookie and Authorization parsing, host and path normalization, the return URL:
//! arbitrary header values never panic, normalization is idempotent, and a return URL is
//! never longer than `MAX_RETURN_URL`.
#![no_main]

use keyward_gate::credential;
use keyward_gate::request::normalize_host;
use keyward_gate::{AccessRequest, MAX_RETURN_URL};
use keyward_policy::{normalize_path, other_readings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mid = (0..=text.len() / 2).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let (a, b) = text.split_at(mid);
    let _ = credential::find(Some(a), Some(b), "keyward_session");
    // The cookie found is the first of its name, and "repeated" means another value
    // of that name follows: what the gate must not let the first decide alone.
    let values: Vec<&str> = credential::cookie_values(&text, "keyward_session").collect();
    assert_eq!(credential::cookie_value(&text, "keyward_session"), values.first().copied());
    match credential::find(Some(&text), None, "keyward_session") {
        Some(c) => {
            assert_eq!(Some(&c.token), values.first());
            assert_eq!(c.repeated, values.iter().any(|v| *v != c.token));
        }
        None => assert!(values.is_empty()),
    }
    let host = normalize_host(&text);
    assert_eq!(normalize_host(&host), host);
    let path = normalize_path(&text).into_owned();
    assert_eq!(normalize_path(&path), path.as_str());
    // Every other reading is normal, distinct, and not the literal one.
    let readings = other_readings(&text);
    assert!(readings.len() <= 10);
    for (i, reading) in readings.iter().enumerate() {
        assert_eq!(normalize_path(reading), reading.as_str());
        assert_ne!(*reading, path);
        assert!(!readings[..i].contains(reading));
    }
    let req = AccessRequest {
        host_header: a.into(),
        path: b.into(),
        query: Some(text.as_ref().into()),
        ..AccessRequest::default()
    };
    if let Some(url) = req.return_url() {
        assert!(url.len() <= MAX_RETURN_URL);
    }
});
