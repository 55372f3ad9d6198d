//! The request-path decision: session cache hit, cache miss (token opened), no session.
//!
//! `cargo bench -p keyward-gate`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_gate::{AccessRequest, AssertionConfig, Gate, GateConfig, GateMetrics, Keys};
use keyward_policy::Policy;
use keyward_session::keyring::KeyRing;
use keyward_session::{AuthMethod, Claims, seal};

const NOW: i64 = 1_800_000_000;

fn gate(cache_capacity: u64) -> Gate {
    let mut n = 7u64;
    let mut rng = move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (n >> 33) as u8;
        }
    };
    let ring = KeyRing::generate(NOW - 10, &mut rng).expect("ring");
    let policy = Policy::from_toml(
        "[[rule]]\nname = \"app\"\nhosts = [\"app.test\"]\naccess = \"roles\"\nroles = [\"dev\"]\n",
    )
    .expect("policy");
    let cfg = GateConfig {
        cookie_name: "keyward_session".into(),
        leeway: 30,
        login_url: "https://auth.test/.keyward/login".into(),
        assertion: Some(AssertionConfig {
            issuer: "https://auth.test".into(),
            ttl_secs: 300,
        }),
        cache_capacity,
    };
    let metrics = GateMetrics::register(&prometheus::Registry::new()).expect("metrics");
    Gate::new(cfg, policy, Keys::new(ring), metrics)
}

fn token(g: &Gate, i: usize) -> String {
    let claims = Claims {
        sid: format!("session-{i:08}-abcdefghij"),
        sub: format!("user-{i}"),
        email: Some(format!("user{i}@example.test")),
        roles: vec!["dev".into(), "ops".into()],
        dev: Some(format!("device-{i}")),
        aaguid: None,
        amr: AuthMethod::Passkey,
        auth_time: NOW - 60,
        iat: NOW - 60,
        exp: NOW + 3600,
    };
    seal(&claims, &g.keys().ring).expect("seal")
}

fn request(token: &str) -> AccessRequest {
    AccessRequest {
        cookie: Some(format!(
            "_ga=GA1.2.3; theme=dark; keyward_session={token}; lang=en"
        )),
        host: "app.test".into(),
        host_header: "app.test".into(),
        path: "/dashboard/7".into(),
        method: "GET".into(),
        ..AccessRequest::default()
    }
}

fn bench(c: &mut Criterion) {
    let g = gate(100_000);
    let hit = request(&token(&g, 0));
    g.decide(&hit, NOW);
    c.bench_function("decide/cache_hit", |b| {
        b.iter(|| black_box(g.decide(black_box(&hit), NOW)))
    });
    c.bench_function("decide+actions/cache_hit", |b| {
        b.iter(|| {
            let out = g.decide(black_box(&hit), NOW);
            black_box(g.actions(&hit, &out, NOW))
        })
    });

    // Misses: more distinct tokens than the cache holds, visited in turn.
    let small = gate(16);
    let misses: Vec<AccessRequest> = (0..4096).map(|i| request(&token(&small, i))).collect();
    let mut i = 0;
    c.bench_function("decide/cache_miss", |b| {
        b.iter(|| {
            i = (i + 1) % misses.len();
            black_box(small.decide(&misses[i], NOW))
        })
    });

    let none = request("");
    c.bench_function("decide/no_session", |b| {
        b.iter(|| black_box(g.decide(black_box(&none), NOW)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
