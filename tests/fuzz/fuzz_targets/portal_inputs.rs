//! What a browser (or anyone) posts to the portal: WebAuthn JSON, the attestation
//! object inside it, and return URLs. Nothing panics, and a return URL is always a
//! local path or an allowed host.
#![no_main]

use keyward_portal::ReturnHosts;
use keyward_portal::aaguid;
use libfuzzer_sys::fuzz_target;
use webauthn_rs_proto::{PublicKeyCredential, RegisterPublicKeyCredential};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<RegisterPublicKeyCredential>(data);
    let _ = serde_json::from_slice::<PublicKeyCredential>(data);
    if let Some(id) = aaguid::from_attestation_object(data) {
        assert_eq!(id.len(), 36);
    }
    let text = String::from_utf8_lossy(data);
    let hosts = ReturnHosts::new(["app.example.com".to_owned(), "*.corp.test".to_owned()]);
    let out = hosts.check(Some(&text));
    if out.starts_with('/') {
        assert!(!out.starts_with("//") && !out.contains('\\'), "{out}");
    } else {
        let url = url::Url::parse(&out).expect("an absolute URL");
        let host = url.host_str().unwrap_or("");
        assert!(host == "app.example.com" || host.ends_with(".corp.test"), "{out}");
    }
});
