//! Test helpers: a deterministic random source and sample claims.

use sha2::{Digest, Sha256};

use crate::claims::{AuthMethod, Claims};
use crate::keyring::KeyRing;

/// A deterministic byte source (SHA-256 in counter mode over `seed`). Different seeds
/// give independent streams; the same seed gives the same keys.
pub fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut counter = 0u64;
    move |buf: &mut [u8]| {
        for chunk in buf.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(seed.to_be_bytes())
                .chain_update(counter.to_be_bytes())
                .finalize();
            counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

pub const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// Token checks with `leeway` and a lifetime limit no test token reaches.
pub fn within(leeway: i64) -> crate::token::Validity {
    crate::token::Validity {
        leeway,
        max_lifetime: 30 * 86_400,
    }
}

pub fn ring(seed: u64) -> KeyRing {
    KeyRing::generate(NOW, &mut rng(seed)).expect("generate")
}

pub fn claims() -> Claims {
    Claims {
        sid: "q7m2Yt0bS0W4xk1c9dZr8A".into(),
        sub: "user-7f3a".into(),
        email: Some("ada@example.com".into()),
        roles: vec!["admin".into(), "dev".into()],
        dev: Some("d-4c1e9b".into()),
        aaguid: None,
        amr: AuthMethod::Passkey,
        auth_time: NOW - 60,
        iat: NOW,
        exp: NOW + 8 * 3600,
    }
}
