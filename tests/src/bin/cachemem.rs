//! Resident memory of keyward's session cache: fills a real `Gate` with N distinct
//! valid sessions (each decided once, as on a first request) and reports the process's
//! resident set size before and after, from /proc/self/status.
//!
//! `cargo build --release -p keyward-tests && target/release/cachemem 100000 1000000 1000000:100000`
//! (each argument: SESSIONS or SESSIONS:CAPACITY).

use keyward_gate::{AccessRequest, AssertionConfig, Gate, GateConfig, GateMetrics, Keys};
use keyward_policy::Policy;
use keyward_session::keyring::KeyRing;
use keyward_session::{AuthMethod, Claims, seal};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            })
        })
        .unwrap_or(0)
}

fn ring(now: i64) -> KeyRing {
    let mut n = 3u64;
    KeyRing::generate(now - 10, &mut |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (n >> 33) as u8;
        }
    })
    .expect("ring")
}

fn main() {
    // Each argument: SESSIONS or SESSIONS:CAPACITY.
    let runs: Vec<(u64, u64)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (n, cap) = a.split_once(':').unwrap_or((&a, &a));
            Some((n.parse().ok()?, cap.parse().ok()?))
        })
        .collect();
    let runs = if runs.is_empty() {
        vec![
            (100_000, 100_000),
            (1_000_000, 1_000_000),
            (1_000_000, 100_000),
        ]
    } else {
        runs
    };
    let now = 1_800_000_000;
    println!("| sessions | cache capacity | cached | RSS before | RSS after | per session |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (count, capacity) in runs {
        let cfg = GateConfig {
            cookie_name: "keyward_session".into(),
            leeway: 60,
            max_lifetime: 12 * 3600,
            login_url: "https://auth.test/.keyward/login".into(),
            // Assertions are signed per session on allow (decide() alone does not sign).
            assertion: Some(AssertionConfig {
                issuer: "https://auth.test".into(),
                ttl_secs: 300,
            }),
            cache_capacity: capacity,
            revocations_max_age: None,
            tunnels: None,
        };
        let metrics = GateMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let policy = Policy::from_toml("[[rule]]\nname = \"all\"\naccess = \"authenticated\"\n")
            .expect("policy");
        let keys = Keys::new(ring(now));
        let gate = Gate::new(cfg, policy, keys, metrics);
        let before = rss_kib();
        let mut req = AccessRequest {
            host: "app.test".into(),
            path: "/".into(),
            method: "GET".into(),
            ..AccessRequest::default()
        };
        for i in 0..count {
            let claims = Claims {
                sid: format!("{i:022}"),
                sub: format!("user-{i:08}@corp"),
                email: Some(format!("user{i}@example.com")),
                roles: vec!["engineering".into(), "oncall".into()],
                dev: Some(format!("d-{i:016x}")),
                aaguid: None,
                amr: AuthMethod::Passkey,
                auth_time: now,
                iat: now,
                exp: now + 3600,
            };
            let token = seal(&claims, &gate.keys().ring).expect("seal");
            req.cookie = Some(format!("keyward_session={token}").into());
            let _ = gate.decide(&req, now);
        }
        let cached = gate.cached_sessions();
        let after = rss_kib();
        println!(
            "| {count} | {capacity} | {cached} | {} MiB | {} MiB | {} B |",
            before / 1024,
            after / 1024,
            (after.saturating_sub(before) * 1024) / cached.max(1)
        );
        drop(gate);
    }
}
