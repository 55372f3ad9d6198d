//! Hardening under load, through real HAProxy: policy and HAProxy reloads while requests
//! flow, stalled SPOP connections, and hostile HTTP at full rate. The invariants are
//! about correctness (what is allowed, who it is forwarded as, what is refused, that
//! memory stays bounded), never about speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keyward_spoa::peer::{self, AgentFrame};
use keyward_spoa::{StatusCode, TypedData};
use keyward_tests::eventually;
use keyward_tests::haproxy::{Haproxy, Wiring};
use keyward_tests::http::{Response, get};
use keyward_tests::keyward::Keyward;
use keyward_tests::load::{Ledger, Tally, finish, load, spawn_workers};
use keyward_tests::stack::Stack;
use keyward_tests::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::RwLock;

const BROWSER: (&str, &str) = ("Accept", "text/html,application/xhtml+xml");
const APP: &str = r#"
[[rule]]
name = "app"
hosts = ["app.test"]
access = "authenticated"
"#;
const RELOADS_OK: &str = "keyward_config_reloads_total{result=\"ok\"}";
const RELOADS_ERROR: &str = "keyward_config_reloads_total{result=\"error\"}";
const ACTIVE: &str = "keyward_spoa_connections_active";
const KIB_PER_MIB: u64 = 1024;

fn session(token: &str) -> String {
    format!("keyward_session={token}")
}

/// The 200 went to the upstream as `user` (the echo lists the headers it received).
fn forwarded_as(r: &Response, user: &str) -> bool {
    r.status == 200 && r.body.contains(&format!("x-keyward-user: {user}\n"))
}

/// keyward, HAProxy in front of it and the echoing application.
async fn front(keyward: &Keyward) -> (Haproxy, Upstream) {
    let upstream = Upstream::start().await;
    let haproxy = Haproxy::start(&Wiring {
        spoa: keyward.spoa.to_string(),
        upstream: upstream.addr,
        portal: Some(keyward.portal),
        edits: vec![],
    })
    .await;
    (haproxy, upstream)
}

// ---------------------------------------------------------------------------------
// 1. Policy reloads under load.

/// Authenticated users may use `allowed`; `denied` needs a role nobody has.
fn swap_policy(allowed: &str, denied: &str) -> String {
    format!(
        r#"
[[rule]]
name = "allowed"
paths = ["{allowed}"]
access = "authenticated"

[[rule]]
name = "denied"
paths = ["{denied}"]
access = "roles"
roles = ["nobody"]
"#
    )
}

/// Would open everything to everyone, but has an unknown key: must be rejected whole.
const INVALID_POLICY: &str = r#"
[[rule]]
name = "everything"
paths = ["/"]
access = "public"
rolez = ["typo"]
"#;

fn other(path: &str) -> &'static str {
    if path == "/open" { "/closed" } else { "/open" }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Via {
    /// keyward notices the new modification time (checked every 2 s).
    Mtime,
    Sighup,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_under_load_never_allows_what_the_policy_denies() {
    let mut k = Keyward::start(&swap_policy("/open", "/closed"), "").await;
    let (haproxy, upstream) = front(&k).await;
    let addr = haproxy.addr;
    let cookie = Arc::new(session(&k.mint("alice", "dev", "10m", None)));
    let ledger = Arc::new(Ledger::default());

    // The path allowed by the policy known to be in force; `None` while a new one is
    // being applied. Workers hold a read guard for the whole request, so a request that
    // saw `Some` was decided entirely under that policy.
    let phase: Arc<RwLock<Option<&'static str>>> = Arc::new(RwLock::new(Some("/open")));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = {
        let (phase, ledger, cookie) = (phase.clone(), ledger.clone(), cookie.clone());
        spawn_workers(4, stop.clone(), move |_, n| {
            let (phase, ledger, cookie) = (phase.clone(), ledger.clone(), cookie.clone());
            async move {
                let path = if n % 2 == 0 { "/open" } else { "/closed" };
                let in_force = phase.read().await;
                let r = get(addr, path, &[("Cookie", &cookie), BROWSER]).await;
                let allowed = *in_force;
                drop(in_force);
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        ledger.record(path, "error");
                        ledger.violation(format!("{path}: {e}"));
                        return;
                    }
                };
                ledger.record(path, r.status);
                match (r.status, allowed) {
                    (200, _) if !forwarded_as(&r, "alice") => {
                        ledger.violation(format!("{path}: 200 without alice: {}", r.body));
                    }
                    (200, Some(a)) if a != path => ledger.violation(format!(
                        "{path} allowed while the policy allowing {a} was in force"
                    )),
                    (403, Some(a)) if a == path => ledger.violation(format!(
                        "{path} denied while the policy allowing it was in force"
                    )),
                    (200 | 403, _) => {}
                    (s, _) => ledger.violation(format!("{path}: status {s}")),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok0, err0) = (k.metric(RELOADS_OK).await, k.metric(RELOADS_ERROR).await);

    // Probes check the same invariants as the workers, without knowing the phase.
    let probe = |path: &'static str| {
        let (cookie, ledger) = (cookie.clone(), ledger.clone());
        async move {
            let r = get(addr, path, &[("Cookie", &cookie), BROWSER]).await;
            let status = r.as_ref().map_or(0, |r| r.status);
            ledger.record("probe", status);
            match r {
                Ok(r) if r.status == 200 && !forwarded_as(&r, "alice") => {
                    ledger.violation(format!("probe {path}: 200 without alice"));
                }
                Ok(r) if matches!(r.status, 200 | 403) => {}
                r => ledger.violation(format!("probe {path}: {r:?}")),
            }
            status
        }
    };
    let swap = async |k: &mut Keyward, allowed: &'static str, via: Via| {
        *phase.write().await = None;
        k.write_policy(&swap_policy(allowed, other(allowed)));
        if via == Via::Sighup {
            k.proc().signal("HUP");
        }
        eventually(
            Duration::from_secs(10),
            "the new policy to apply",
            || async {
                let now = (probe(allowed).await, probe(other(allowed)).await);
                (now == (200, 403)).then_some(())
            },
        )
        .await;
        *phase.write().await = Some(allowed);
        // Load under the new policy, checked by the workers.
        tokio::time::sleep(Duration::from_millis(700)).await;
    };
    swap(&mut k, "/closed", Via::Mtime).await;
    swap(&mut k, "/open", Via::Sighup).await;
    swap(&mut k, "/closed", Via::Mtime).await;
    let ok1 = k.metric(RELOADS_OK).await;
    assert_eq!(
        k.metric(RELOADS_ERROR).await,
        err0,
        "a valid policy was rejected"
    );
    assert!(ok1 >= ok0 + 3.0, "reloads ok: {ok0} -> {ok1}");

    // An invalid policy while "/closed" is allowed: rejected (counted as an error, not
    // as ok), and the running policy stays in force the whole time (the phase stays
    // `Some`, so every worker checks).
    k.write_policy(INVALID_POLICY);
    eventually(
        Duration::from_secs(10),
        "the invalid policy to be rejected",
        || {
            let k = &k;
            async move { (k.metric(RELOADS_ERROR).await > err0).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.proc().signal("HUP");
    eventually(Duration::from_secs(10), "SIGHUP to reject it again", || {
        let k = &k;
        async move { (k.metric(RELOADS_ERROR).await >= err0 + 2.0).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!((probe("/closed").await, probe("/open").await), (200, 403));
    assert_eq!(
        k.metric(RELOADS_OK).await,
        ok1,
        "a reload that rejected the policy was counted as ok"
    );

    // And the reloader still works after a rejection.
    swap(&mut k, "/open", Via::Sighup).await;
    finish(&stop, workers).await;

    let ok2 = k.metric(RELOADS_OK).await;
    eprintln!(
        "policy reloads: ok {ok0} -> {ok2}, error {err0} -> {}; {}",
        k.metric(RELOADS_ERROR).await,
        ledger.summary()
    );
    assert_eq!(
        ledger.violations(),
        Vec::<String>::new(),
        "{}",
        ledger.summary()
    );
    assert!(ok2 >= ok0 + 4.0, "reloads ok: {ok0} -> {ok2}");
    for path in ["/open", "/closed"] {
        assert!(ledger.count(path, "200") > 0, "{}", ledger.summary());
        assert!(ledger.count(path, "403") > 0, "{}", ledger.summary());
    }
    assert_eq!(
        upstream.hits(),
        ledger.count("/open", "200")
            + ledger.count("/closed", "200")
            + ledger.count("probe", "200"),
        "only allowed requests reached the upstream"
    );
}

// ---------------------------------------------------------------------------------
// 2. HAProxy graceful reload under load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_reload_under_load_forwards_nothing_without_a_decision() {
    let mut s = Stack::start(400).await;
    let addr = s.haproxy.addr;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let mut workers = load(addr, 4, stop.clone(), tally.clone());
    // Requests the test agent does not allow: denied, login, no decision, failed.
    let ledger = Arc::new(Ledger::default());
    workers.extend({
        let ledger = ledger.clone();
        spawn_workers(2, stop.clone(), move |w, n| {
            let ledger = ledger.clone();
            async move {
                let path = ["/deny/x", "/login/x", "/nothing/x", "/error"][(n as usize + w) % 4];
                match get(addr, path, &[]).await {
                    Ok(r) => {
                        ledger.record(path, r.status);
                        if r.status == 200 {
                            ledger.violation(format!("{path} forwarded: {}", r.body));
                        }
                    }
                    // Connections caught in the listener handover.
                    Err(_) => ledger.record(path, "error"),
                }
            }
        })
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    for round in 1..=2 {
        let old = s.haproxy.proc().pid();
        let status = s
            .haproxy
            .reload(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("reload {round}: the old HAProxy did not exit"));
        assert!(status.success(), "reload {round}: old HAProxy {status:?}");
        assert_ne!(s.haproxy.proc().pid(), old);
        // The old process is gone: what is allowed now went through the new one.
        let before = tally.allowed.load(Ordering::SeqCst);
        let t = tally.clone();
        eventually(Duration::from_secs(10), "traffic after the reload", || {
            let t = t.clone();
            async move { (t.allowed.load(Ordering::SeqCst) > before + 20).then_some(()) }
        })
        .await;
    }
    finish(&stop, workers).await;

    let allowed = tally.allowed.load(Ordering::SeqCst);
    eprintln!(
        "allowed {allowed}, refused {}, others: {}",
        tally.refused.load(Ordering::SeqCst),
        ledger.summary()
    );
    assert_eq!(ledger.violations(), Vec::<String>::new());
    assert!(ledger.count("/deny/x", "403") > 0, "{}", ledger.summary());
    assert!(
        ledger.count("/nothing/x", "503") > 0,
        "{}",
        ledger.summary()
    );
    assert_eq!(
        tally.wrong.load(Ordering::SeqCst),
        0,
        "a forwarded request carried another request's identity"
    );
    assert_eq!(
        s.upstream.hits(),
        allowed,
        "only allowed requests reached the upstream"
    );
}

// ---------------------------------------------------------------------------------
// 3. Slowloris on the SPOA port.

/// Opens `n` connections to `addr` that send the first byte of a HELLO and stall.
async fn stall(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let first = peer::hello(16_384, "pipelining", false)[..1].to_vec();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).await.expect("connect to SPOA");
        // Refused connections may already be closed: that shows when reading.
        let _ = c.write_all(&first).await;
        conns.push(c);
    }
    conns
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// AGENT-DISCONNECT "timeout", then EOF: accepted, then dropped for no HELLO.
    HelloTimeout,
    /// Closed without a byte: refused at the connection cap.
    Refused,
    Other,
}

/// How each of `conns` ended (each within `limit`, else `Other`).
async fn endings(conns: Vec<TcpStream>, limit: Duration) -> Vec<Ending> {
    let reads = conns.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            match tokio::time::timeout(limit, c.read_to_end(&mut got)).await {
                Ok(Ok(_)) if got.is_empty() => Ending::Refused,
                // Closed with our byte unread: a reset.
                Ok(Err(e)) if got.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                    Ending::Refused
                }
                Ok(Ok(_)) => match peer::read(&got) {
                    Ok(Some((AgentFrame::Disconnect { status, .. }, _, used)))
                        if status == StatusCode::Timeout.to_u32() && used == got.len() =>
                    {
                        Ending::HelloTimeout
                    }
                    _ => Ending::Other,
                },
                _ => Ending::Other,
            }
        })
    });
    let mut out = Vec::new();
    for r in reads.collect::<Vec<_>>() {
        out.push(r.await.expect("reader"));
    }
    out
}

fn tally_of(endings: &[Ending], which: Ending) -> usize {
    endings.iter().filter(|e| **e == which).count()
}

fn summary(endings: &[Ending]) -> String {
    [Ending::HelloTimeout, Ending::Refused, Ending::Other]
        .map(|e| format!("{e:?}={}", tally_of(endings, e)))
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_spop_connections_do_not_starve_haproxy() {
    let k = Keyward::start_spoa(APP, "max_connections = 200\nhello_timeout = \"1s\"", "").await;
    let (haproxy, _upstream) = front(&k).await;
    let addr = haproxy.addr;
    let cookie = Arc::new(session(&k.mint("alice", "dev", "10m", None)));
    let valid = {
        let cookie = cookie.clone();
        move || {
            let cookie = cookie.clone();
            async move { get(addr, "/", &[("Cookie", &cookie), BROWSER]).await }
        }
    };
    eventually(Duration::from_secs(10), "a first decision", || {
        let valid = valid.clone();
        async move { valid().await.ok().filter(|r| forwarded_as(r, "alice")) }
    })
    .await;
    let rss0 = k.rss_kib();

    // Below the cap: HAProxy keeps getting every decision while waves of stalled
    // connections come and are dropped by the HELLO timeout.
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = {
        let (ledger, valid) = (ledger.clone(), valid.clone());
        spawn_workers(3, stop.clone(), move |_, _| {
            let (ledger, valid) = (ledger.clone(), valid.clone());
            async move {
                match valid().await {
                    Ok(r) if forwarded_as(&r, "alice") => ledger.record("valid", 200),
                    Ok(r) => {
                        ledger.record("valid", r.status);
                        ledger.violation(format!("status {} {}", r.status, r.body));
                    }
                    Err(e) => {
                        ledger.record("valid", "error");
                        ledger.violation(e);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let haproxy_level = k.metric(ACTIVE).await;
    let accepted0 = k.metric("keyward_spoa_connections_accepted_total").await;
    for wave in 1..=3 {
        let conns = stall(k.spoa, 150).await;
        let ends = endings(conns, Duration::from_secs(6)).await;
        assert_eq!(
            tally_of(&ends, Ending::HelloTimeout),
            150,
            "wave {wave}: every stalled connection is dropped by the HELLO timeout: {}",
            summary(&ends)
        );
    }
    let accepted = k.metric("keyward_spoa_connections_accepted_total").await - accepted0;
    assert!(accepted >= 450.0, "accepted {accepted}");
    finish(&stop, workers).await;
    assert_eq!(
        ledger.violations(),
        Vec::<String>::new(),
        "{}",
        ledger.summary()
    );
    assert!(ledger.count("valid", "200") > 0);

    // Beyond the cap: the extra connections are closed at once. While every slot is
    // taken HAProxy's health check may fail; requests then fail closed, never open.
    let rejected0 = k.metric("keyward_spoa_connections_rejected_total").await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = {
        let (ledger, valid) = (ledger.clone(), valid.clone());
        spawn_workers(2, stop.clone(), move |_, _| {
            let (ledger, valid) = (ledger.clone(), valid.clone());
            async move {
                match valid().await {
                    Ok(r) if r.status == 200 && !forwarded_as(&r, "alice") => {
                        ledger.violation(format!("200 without alice: {}", r.body));
                    }
                    Ok(r) if matches!(r.status, 200 | 503) => ledger.record("valid", r.status),
                    Ok(r) => ledger.violation(format!("status {}", r.status)),
                    Err(e) => ledger.violation(e),
                }
            }
        })
    };
    let conns = stall(k.spoa, 400).await;
    let peak = k.metric(ACTIVE).await;
    let ends = endings(conns, Duration::from_secs(6)).await;
    finish(&stop, workers).await;
    let (timed_out, refused) = (
        tally_of(&ends, Ending::HelloTimeout),
        tally_of(&ends, Ending::Refused),
    );
    let rejected = k.metric("keyward_spoa_connections_rejected_total").await - rejected0;
    eprintln!(
        "slowloris: HAProxy-only connections {haproxy_level}, peak {peak} with 400 stalled; \
         {timed_out} timed out, {refused} refused ({rejected} rejected in all); {}",
        ledger.summary()
    );
    assert_eq!(timed_out + refused, 400, "{}", summary(&ends));
    assert!(timed_out <= 200, "the cap holds: {timed_out} accepted");
    assert!(refused >= 200, "{refused} refused");
    assert!(rejected >= refused as f64, "rejected {rejected}");
    assert!(peak <= 200.0, "the gauge stays under the cap: {peak}");
    assert_eq!(ledger.violations(), Vec::<String>::new());

    // The stalled connections are all gone; HAProxy is served again.
    let level = eventually(
        Duration::from_secs(10),
        "connections back to HAProxy's",
        || {
            let k = &k;
            async move {
                let now = k.metric(ACTIVE).await;
                (now <= haproxy_level + 2.0).then_some(now)
            }
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "decisions after the slowloris",
        || {
            let valid = valid.clone();
            async move { valid().await.ok().filter(|r| forwarded_as(r, "alice")) }
        },
    )
    .await;
    let rss1 = k.rss_kib();
    eprintln!("slowloris: connections back to {level}; keyward RSS {rss0} KiB -> {rss1} KiB");
    assert!(
        rss1 < rss0 + 50 * KIB_PER_MIB,
        "keyward RSS grew from {rss0} KiB to {rss1} KiB"
    );
}

/// SPOP peers that handshake, then write NOTIFYs whose ACKs are as large (the app's own
/// cookies come back in `txn.keyward.cookie`) and never read one. Each could otherwise
/// make keyward buffer some 500 KiB; with `max_buffer_mib = 4` they share 4 MiB, each
/// keeps its own 32 KiB, and HAProxy's connections are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spop_peers_that_never_read_hold_only_the_buffer_pool() {
    const PEERS: usize = 100;
    const POOL_MIB: f64 = 4.0;
    let k = Keyward::start_spoa(APP, "max_buffer_mib = 4", "").await;
    let (haproxy, _upstream) = front(&k).await;
    let addr = haproxy.addr;
    let cookie = session(&k.mint("alice", "dev", "10m", None));
    let valid = || async { get(addr, "/", &[("Cookie", &cookie), BROWSER]).await };
    eventually(Duration::from_secs(10), "a first decision", || async {
        valid().await.ok().filter(|r| forwarded_as(r, "alice"))
    })
    .await;
    let rss0 = k.rss_kib();

    let own_cookies = format!("prefs={}; {cookie}", noise(7, 6_000));
    let notify = peer::notify(
        1,
        1,
        "keyward-request",
        &[
            ("cookie", TypedData::String(own_cookies.as_str().into())),
            ("host", TypedData::String("app.test".into())),
            ("path", TypedData::String("/".into())),
            ("method", TypedData::String("GET".into())),
        ],
    );
    let mut floods = Vec::new();
    for _ in 0..PEERS {
        let mut c = TcpStream::connect(k.spoa).await.expect("connect to SPOA");
        c.write_all(&peer::hello(16_384, "pipelining", false))
            .await
            .unwrap();
        let notify = notify.clone();
        floods.push(tokio::spawn(async move {
            let mut sent = 0usize;
            while let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_secs(2), c.write_all(&notify)).await
            {
                sent += 1;
            }
            (c, sent)
        }));
    }
    let mut conns = Vec::new();
    for flood in floods {
        conns.push(flood.await.unwrap());
    }
    let sent: usize = conns.iter().map(|(_, n)| n).sum();
    let buffered = k.metric("keyward_spoa_buffer_bytes").await;
    let rss1 = k.rss_kib();
    // While they hold the pool, HAProxy's own connections are served from their share.
    for _ in 0..20 {
        let r = valid().await.expect("request during the flood");
        assert!(forwarded_as(&r, "alice"), "{r:?}");
    }
    eprintln!(
        "{PEERS} SPOP peers that never read sent {sent} NOTIFYs; keyward buffers {:.1} MiB, \
         RSS {rss0} KiB -> {rss1} KiB",
        buffered / 1048576.0
    );
    // The pool, and per peer its own 32 KiB and the answers to one read past it.
    let bound_mib = POOL_MIB + PEERS as f64 * 64.0 / 1024.0;
    assert!(
        buffered / 1048576.0 <= bound_mib,
        "{buffered} bytes buffered; bound {bound_mib} MiB"
    );
    assert!(
        rss1 < rss0 + (bound_mib as u64 + 20) * KIB_PER_MIB,
        "keyward RSS grew from {rss0} KiB to {rss1} KiB"
    );
    drop(conns);
    eventually(Duration::from_secs(10), "buffers given back", || async {
        // HAProxy's own connections keep a few KiB each.
        let b = k.metric("keyward_spoa_buffer_bytes").await;
        (b < 1048576.0).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------
// 4. Hostile HTTP at full rate.

/// splitmix64: enough randomness for garbage, reproducible from the request number.
fn noise(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ALPHABET[((z ^ (z >> 31)) % 64) as usize] as char
        })
        .collect()
}

/// About 2,000 small cookies (12 KB), then `last`.
fn many_cookies(last: &str) -> String {
    let mut h: String = (0..2000)
        .map(|i| format!("{}{}=1; ", (b'a' + (i % 26) as u8) as char, i / 26 % 10))
        .collect();
    h.push_str(last);
    h
}

struct Hostile {
    addr: std::net::SocketAddr,
    valid: String,
    foreign: String,
    ledger: Ledger,
}

const KINDS: [&str; 9] = [
    "valid",
    "many-cookies-valid",
    "many-cookies-forged",
    "huge-cookie",
    "random",
    "random-v4",
    "truncated",
    "foreign",
    "bearer-forged",
];

impl Hostile {
    async fn step(&self, w: usize, n: u64) {
        let kind = KINDS[(n as usize + w) % KINDS.len()];
        let seed = ((w as u64) << 40) | n;
        let len = 16 + (seed.wrapping_mul(2_654_435_761) % 2000) as usize;
        let cookie = match kind {
            "valid" => format!("theme=dark; {}", session(&self.valid)),
            "many-cookies-valid" => many_cookies(&session(&self.valid)),
            "many-cookies-forged" => {
                many_cookies(&session(&format!("v4.local.{}", noise(seed, len))))
            }
            "huge-cookie" => session(&format!("v4.local.{}", noise(seed, 64 * 1024))),
            "random" => session(&noise(seed, len)),
            "random-v4" => session(&format!("v4.local.{}", noise(seed, len))),
            "truncated" => {
                let cut = 1 + (seed as usize % (self.valid.len() - 10));
                session(&self.valid[..self.valid.len() - cut])
            }
            "foreign" => session(&self.foreign),
            _ => String::new(),
        };
        let bearer = format!("Bearer v4.local.{}", noise(seed, len));
        let headers: Vec<(&str, &str)> = if kind == "bearer-forged" {
            vec![("Authorization", &bearer), ("Accept", "application/json")]
        } else {
            vec![("Cookie", &cookie), BROWSER]
        };
        let r = match get(self.addr, "/app", &headers).await {
            Ok(r) => r,
            // HAProxy may close on the oversized request before we read its 400.
            Err(_) if kind == "huge-cookie" => return self.ledger.record(kind, "error"),
            Err(e) => {
                self.ledger.record(kind, "error");
                return self.ledger.violation(format!("{kind}: {e}"));
            }
        };
        self.ledger.record(kind, r.status);
        let fine = match kind {
            "valid" | "many-cookies-valid" => forwarded_as(&r, "alice"),
            "huge-cookie" => matches!(r.status, 400 | 431),
            "bearer-forged" => r.status == 401,
            _ => {
                r.status == 302
                    && r.header("location")
                        .is_some_and(|l| l.starts_with("https://auth.test/.keyward/login?rd="))
            }
        };
        if !fine {
            self.ledger
                .violation(format!("{kind}: {} {:.200}", r.status, r.body));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_at_full_rate_keeps_decisions_correct_and_memory_bounded() {
    let k = Keyward::start(APP, "").await;
    let foreign = {
        // Another deployment: its own key ring.
        let other = Keyward::start(APP, "").await;
        other.mint("alice", "dev", "10m", None)
    };
    let (haproxy, upstream) = front(&k).await;
    let h = Arc::new(Hostile {
        addr: haproxy.addr,
        valid: k.mint("alice", "dev", "10m", None),
        foreign,
        ledger: Ledger::default(),
    });
    let warm = eventually(Duration::from_secs(10), "a first decision", || {
        let h = h.clone();
        async move {
            get(h.addr, "/", &[("Cookie", &session(&h.valid)), BROWSER])
                .await
                .ok()
                .filter(|r| forwarded_as(r, "alice"))
        }
    })
    .await;
    assert!(
        !warm.body.contains(&h.valid),
        "the token reached the upstream"
    );
    let hits0 = upstream.hits();
    let misses0 = k.metric("keyward_session_cache_misses_total").await;
    let rss0 = k.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let workers = {
        let h = h.clone();
        spawn_workers(4, stop.clone(), move |w, n| {
            let h = h.clone();
            async move { h.step(w, n).await }
        })
    };
    let mut rss_peak = rss0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_peak = rss_peak.max(k.rss_kib());
    }
    finish(&stop, workers).await;
    let rss1 = k.rss_kib();
    let misses = k.metric("keyward_session_cache_misses_total").await - misses0;
    let l = &h.ledger;
    eprintln!(
        "hostile: {}; cache misses {misses}; keyward RSS {rss0} KiB -> peak {rss_peak} KiB -> {rss1} KiB",
        l.summary()
    );
    assert_eq!(l.violations(), Vec::<String>::new(), "{}", l.summary());
    for kind in KINDS {
        assert!(
            l.total(kind) > 0,
            "no {kind} request was made: {}",
            l.summary()
        );
    }
    let ok = l.count("valid", "200") + l.count("many-cookies-valid", "200");
    assert_eq!(
        upstream.hits() - hits0,
        ok,
        "only the valid sessions reached the upstream"
    );
    // Every token that reached keyward and failed was opened, not answered from a cache.
    let forged: usize = KINDS[2..]
        .iter()
        .filter(|k| **k != "huge-cookie")
        .map(|k| l.total(k))
        .sum();
    assert!(misses >= forged as f64, "misses {misses} < forged {forged}");
    assert!(
        rss_peak < rss0 + 64 * KIB_PER_MIB,
        "keyward RSS grew from {rss0} KiB to {rss_peak} KiB"
    );

    // Failures are not cached: the same forged token, again and again, is opened every
    // time (and the cache still serves the valid one).
    let forged = session(&format!("v4.local.{}", noise(7, 300)));
    let (hits_a, misses_a) = (
        k.metric("keyward_session_cache_hits_total").await,
        k.metric("keyward_session_cache_misses_total").await,
    );
    for _ in 0..20 {
        let r = get(h.addr, "/", &[("Cookie", &forged), BROWSER])
            .await
            .unwrap();
        assert_eq!(r.status, 302);
    }
    assert_eq!(
        k.metric("keyward_session_cache_misses_total").await - misses_a,
        20.0
    );
    assert_eq!(k.metric("keyward_session_cache_hits_total").await, hits_a);
    let r = get(h.addr, "/", &[("Cookie", &session(&h.valid)), BROWSER])
        .await
        .unwrap();
    assert!(forwarded_as(&r, "alice"));
    assert_eq!(
        k.metric("keyward_session_cache_hits_total").await,
        hits_a + 1.0
    );
}
