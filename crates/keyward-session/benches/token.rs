//! Hot-path costs: opening a session token (every request without a cache hit),
//! sealing one (every login), signing an upstream assertion (per session and audience).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_session::{AssertionSigner, AuthMethod, Claims, KeyRing, Validity, open, seal};

const NOW: i64 = 1_767_225_600;
const VALIDITY: Validity = Validity {
    leeway: 30,
    max_lifetime: 12 * 3600,
};

/// Deterministic bytes are enough for a benchmark (never for real keys).
fn rand(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
}

fn ring() -> KeyRing {
    let mut ring = KeyRing::generate(NOW - 86_400, &mut rand).unwrap();
    // A realistic ring: the active key plus a verify-only predecessor.
    let mut n = 0u8;
    ring.rotate_session(NOW, &mut |buf: &mut [u8]| {
        n = n.wrapping_add(1);
        buf.fill(n.wrapping_add(40));
    })
    .unwrap();
    ring
}

fn claims() -> Claims {
    Claims {
        sid: "q7m2Yt0bS0W4xk1c9dZr8A".into(),
        sub: "00u1a2b3c4d5e6f7g8h9".into(),
        email: Some("ada.lovelace@example.com".into()),
        roles: vec!["admin".into(), "developers".into(), "oncall".into()],
        dev: Some("d-4c1e9b2f7a".into()),
        aaguid: None,
        amr: AuthMethod::Passkey,
        auth_time: NOW - 60,
        iat: NOW,
        exp: NOW + 8 * 3600,
    }
}

fn bench(c: &mut Criterion) {
    let ring = ring();
    let claims = claims();
    let token = seal(&claims, &ring).unwrap();
    let signer = AssertionSigner::new(&ring).unwrap();

    c.bench_function("token/open", |b| {
        b.iter(|| open(black_box(&token), &ring, NOW + 60, VALIDITY).unwrap())
    });
    c.bench_function("token/seal", |b| {
        b.iter(|| seal(black_box(&claims), &ring).unwrap())
    });
    c.bench_function("assertion/sign", |b| {
        b.iter(|| {
            signer
                .sign(
                    black_box(&claims),
                    "grafana.example.com",
                    "https://login.example.com",
                    300,
                    NOW,
                )
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
