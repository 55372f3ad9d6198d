//! The request-path decision: session cache hit, cache miss (token opened), no session;
//! and a cache hit as a whole NOTIFY -> ACK through keyward-spoa's connection driver.
//!
//! `cargo bench -p keyward-gate`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_gate::{AccessRequest, AssertionConfig, Gate, GateConfig, GateMetrics, Keys};
use keyward_policy::Policy;
use keyward_session::keyring::KeyRing;
use keyward_session::{AuthMethod, Claims, seal};
use keyward_spoa::peer::{self, ACK, AGENT_HELLO};
use keyward_spoa::{CancellationToken, Limits, Metrics, TypedData, serve_connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

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
        max_lifetime: 12 * 3600,
        login_url: "https://auth.test/.keyward/login".into(),
        assertion: Some(AssertionConfig {
            issuer: "https://auth.test".into(),
            ttl_secs: 300,
        }),
        cache_capacity,
        revocations_max_age: None,
        tunnels: None,
    };
    let metrics = GateMetrics::register(&prometheus::Registry::new()).expect("metrics");
    Gate::new(cfg, policy, Keys::new(ring), metrics)
}

fn token(g: &Gate, i: usize, now: i64) -> String {
    let claims = Claims {
        sid: format!("session-{i:08}-abcdefghij"),
        sub: format!("user-{i}"),
        email: Some(format!("user{i}@example.test")),
        roles: vec!["dev".into(), "ops".into()],
        dev: Some(format!("device-{i}")),
        aaguid: None,
        amr: AuthMethod::Passkey,
        auth_time: now - 60,
        iat: now - 60,
        exp: now + 3600,
    };
    seal(&claims, &g.keys().ring).expect("seal")
}

fn request(token: &str) -> AccessRequest<'static> {
    AccessRequest {
        cookie: Some(format!("_ga=GA1.2.3; theme=dark; keyward_session={token}; lang=en").into()),
        host: "app.test".into(),
        host_header: "app.test".into(),
        path: "/dashboard/7".into(),
        method: "GET".into(),
        ..AccessRequest::default()
    }
}

fn bench(c: &mut Criterion) {
    let g = gate(100_000);
    let hit = request(&token(&g, 0, NOW));
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

    // The same hit with the cache full: as many other sessions as it holds were
    // decided before (and a fifth more, so inserts have evicted), as in a busy node.
    let full = gate(100_000);
    for i in 1..=120_000 {
        full.decide(&request(&token(&full, i, NOW)), NOW);
    }
    let hit_full = request(&token(&full, 0, NOW));
    for _ in 0..8 {
        full.decide(&hit_full, NOW);
    }
    c.bench_function("decide+actions/cache_hit_full_cache", |b| {
        b.iter(|| {
            let out = full.decide(black_box(&hit_full), NOW);
            black_box(full.actions(&hit_full, &out, NOW))
        })
    });

    // Misses: more distinct tokens than the cache holds, visited in turn.
    let small = gate(16);
    let misses: Vec<AccessRequest> = (0..4096).map(|i| request(&token(&small, i, NOW))).collect();
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

/// NOTIFYs sent back to back per measured round (the runtime's default `max_inflight`).
const BATCH: usize = 64;

/// Reads `n` agent frames from `stream`, returning the type of the last. Only the length
/// prefixes are walked, so the peer's share of the time stays small.
async fn frames(stream: &mut DuplexStream, buf: &mut Vec<u8>, mut n: usize) -> u8 {
    let mut last = 0;
    let mut at = 0;
    while n > 0 {
        if let Some(p) = buf.get(at..at + 4) {
            let end = at + 4 + u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
            if end <= buf.len() {
                last = buf[at + 4];
                at = end;
                n -= 1;
                continue;
            }
        }
        buf.drain(..at);
        at = 0;
        assert!(
            stream.read_buf(buf).await.expect("read") > 0,
            "agent closed"
        );
    }
    buf.drain(..at);
    last
}

/// The whole request path for a cache hit: NOTIFY decoded, `Gate` as the handler (on the
/// real clock), ACK with identity and assertion encoded, over an in-memory pipe on a
/// single-threaded runtime. `BATCH` NOTIFYs are pipelined per round.
fn serve(c: &mut Criterion) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let g = gate(100_000);
    let cookie = format!(
        "_ga=GA1.2.3; theme=dark; keyward_session={}; lang=en",
        token(&g, 0, now)
    );
    let round: Vec<u8> = (0..BATCH as u64)
        .flat_map(|i| {
            peer::notify(
                1_000 + i,
                1,
                keyward_gate::MESSAGE,
                &[
                    ("cookie", TypedData::String(cookie.clone())),
                    ("authorization", TypedData::Null),
                    ("host", TypedData::String("app.test".into())),
                    ("path", TypedData::String("/dashboard/7".into())),
                    ("query", TypedData::String("tab=members".into())),
                    ("method", TypedData::String("GET".into())),
                    ("src", TypedData::IPv4(Ipv4Addr::new(203, 0, 113, 7))),
                    ("tls", TypedData::Bool(true)),
                    ("origin", TypedData::Null),
                    ("sec_fetch_site", TypedData::String("same-origin".into())),
                ],
            )
        })
        .collect();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut stream, theirs) = tokio::io::duplex(256 * 1024);
    let mut buf = Vec::with_capacity(256 * 1024);
    rt.block_on(async {
        tokio::spawn(async move {
            let (rd, wr) = tokio::io::split(theirs);
            let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
            let shutdown = CancellationToken::new();
            serve_connection(rd, wr, &g, &Limits::default(), &metrics, &shutdown).await
        });
        let hello = peer::hello(16_380, "pipelining,async", false);
        stream.write_all(&hello).await.expect("send HELLO");
        assert_eq!(frames(&mut stream, &mut buf, 1).await, AGENT_HELLO);
        // Fill the session and assertion caches, and check the answer is a full allow.
        stream.write_all(&round).await.expect("send NOTIFYs");
        while peer::read(&buf).expect("agent frame").is_none() {
            stream.read_buf(&mut buf).await.expect("read");
        }
        let (ack, _, _) = peer::read(&buf).expect("agent frame").expect("ACK");
        assert_eq!(
            ack.var("decision"),
            Some(&TypedData::String("allow".into()))
        );
        assert!(ack.var("assertion").is_some(), "no assertion in {ack:?}");
        assert_eq!(frames(&mut stream, &mut buf, BATCH).await, ACK);
    });

    let mut group = c.benchmark_group("notify_to_ack");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("gate_cache_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    stream.write_all(&round).await.expect("send NOTIFYs");
                    assert_eq!(frames(&mut stream, &mut buf, BATCH).await, ACK);
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench, serve);
criterion_main!(benches);
