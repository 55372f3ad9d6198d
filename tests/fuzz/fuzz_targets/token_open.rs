//! Session token decoding: arbitrary strings never panic and never validate.
#![no_main]

use std::sync::OnceLock;

use keyward_session::keyring::KeyRing;
use libfuzzer_sys::fuzz_target;

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let mut n = 1u8;
        KeyRing::generate(1_800_000_000, &mut |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                n = n.wrapping_mul(31).wrapping_add(7);
                *b = n;
            }
        })
        .expect("ring")
    })
}

const VALIDITY: keyward_session::Validity = keyward_session::Validity {
    leeway: 60,
    max_lifetime: 12 * 3600,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // A forged token must never open.
    assert!(keyward_session::open(&text, ring(), 1_800_000_000, VALIDITY).is_err());
    let prefixed = format!("v4.local.{text}");
    assert!(keyward_session::open(&prefixed, ring(), 1_800_000_000, VALIDITY).is_err());
});
