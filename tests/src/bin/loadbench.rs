//! Load benchmark through real HAProxy with wrk, all setups in ONE run and interleaved
//! (round-robin, several rounds) so the ratios hold on a noisy machine:
//!
//! 1. plain HAProxy answering 200 itself;
//! 2. HAProxy + a no-op agent on keyward's runtime (ACKs allow at once);
//!    2b. the same, answering with constant identity variables of a cache hit's size
//!    (separates keyward's decision cost from HAProxy's variable and header work);
//! 3. keyward, valid session (cache hit);
//! 4. keyward, a distinct valid token per request (cache miss);
//!    3h / 4h. the same on a route whose rule says `assertion = false` (identity
//!    headers, no signed JWT);
//! 5. keyward, no session (login decision, 401);
//! 6. HAProxy + the naive agent written like the `spop` crate's examples.
//!
//! Every setup answers from HAProxy itself (no upstream server), so what differs is the
//! agent. Logging is off in HAProxy for all setups.
//!
//! `cargo build --release -p keyward -p keyward-tests && target/release/loadbench
//!  [--seconds 10] [--rounds 3] [--connections 50] [--close]`

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use keyward_session::keyring::file as ringfile;
use keyward_session::{AuthMethod, Claims};
use keyward_tests::haproxy::{Haproxy, Wiring};
use keyward_tests::keyward::Keyward;
use keyward_tests::process::{Proc, cpu_ticks};
use keyward_tests::{free_port, loopback, sibling_bin, wait_listening};

const LUA: &str = r#"
local mode = os.getenv("KW_MODE") or "plain"
local tokens, n, i, id = {}, 0, 0, 0
local threads = 0
setup = function(thread) thread:set("id", threads); threads = threads + 1 end
init = function(args)
  id = tonumber(wrk.thread:get("id")) or 0
  if mode == "miss" then
    for line in io.lines(os.getenv("KW_TOKENS")) do n = n + 1; tokens[n] = line end
  end
end
request = function()
  local headers = {}
  if os.getenv("KW_CLOSE") then headers["Connection"] = "close" end
  if mode == "hit" then
    headers["Cookie"] = "keyward_session=" .. os.getenv("KW_TOKEN")
  elseif mode == "miss" then
    i = i + 1
    headers["Cookie"] = "keyward_session=" .. tokens[((i * 2 + id) % n) + 1]
  end
  return wrk.format("GET", nil, headers)
end
done = function(summary, latency, requests)
  io.write(string.format("KW p50=%d p99=%d p999=%d errors=%d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"#;

struct Target {
    name: &'static str,
    port: u16,
    /// Request path (`/headers` is keyward's route without an assertion).
    path: &'static str,
    mode: &'static str,
    /// Expected status of every response.
    status: u16,
    /// The HAProxy and the agent serving this setup, for CPU time per request.
    haproxy: u32,
    agent: Option<u32>,
}

#[derive(Default, Clone)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    /// CPU time per request, in microseconds, of HAProxy and of the agent.
    haproxy_us: f64,
    agent_us: f64,
    /// Requests completed (wrk only).
    requests: u64,
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--h2`: every HAProxy speaks HTTP/2 cleartext on its frontend.
static H2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn h2_bind() -> &'static str {
    if H2.load(std::sync::atomic::Ordering::Relaxed) {
        " proto h2"
    } else {
        ""
    }
}

fn no_logs() -> Vec<(String, String)> {
    vec![
        (
            "    bind \"${KEYWARD_HTTP_BIND-127.0.0.1:8080}\"\n".into(),
            format!(
                "    bind \"${{KEYWARD_HTTP_BIND-127.0.0.1:8080}}\"{}\n",
                h2_bind()
            ),
        ),
        ("    option httplog\n".into(), String::new()),
        ("    log global\n".into(), "    no log\n".into()),
        (
            "    server app \"${KEYWARD_UPSTREAM-127.0.0.1:8000}\"".into(),
            "    http-request return status 200 content-type text/plain string \"ok\\n\"".into(),
        ),
    ]
}

async fn agent_haproxy(spoa: String) -> Haproxy {
    let mut edits = no_logs();
    // The SPOE engine's own log line per request, too.
    edits.push((
        "    log global\n    use-backend".into(),
        "    use-backend".into(),
    ));
    Haproxy::start(&Wiring {
        spoa,
        upstream: loopback(1),
        portal: None,
        edits,
    })
    .await
}

fn plain_haproxy(dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let cfg = dir.join("plain.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend plain\n    bind 127.0.0.1:{port}{h2}\n    default_backend app\n\
             backend app\n    http-request return status 200 content-type text/plain string \"ok\\n\"\n",
            h2 = h2_bind()
        ),
    )
    .expect("write plain config");
    (
        Proc::spawn(
            "haproxy",
            Command::new("haproxy").args(["-db", "-f"]).arg(&cfg),
        ),
        port,
    )
}

fn run_wrk(
    t: &Target,
    seconds: u64,
    connections: u64,
    close: bool,
    lua: &std::path::Path,
    env: &[(&str, String)],
) -> Sample {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "-s",
    ])
    .arg(lua)
    .arg(format!("http://127.0.0.1:{}{}", t.port, t.path))
    .env("KW_MODE", t.mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if close {
        cmd.env("KW_CLOSE", "1");
    }
    let out = cmd
        .output()
        .expect("wrk is installed (bash .ci/bootstrap installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "  123456 requests in 5.00s, 12.34MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .unwrap_or(0);
    let rps = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Requests/sec:")
                .map(|v| v.trim().parse().unwrap_or(0.0))
        })
        .unwrap_or(0.0);
    let non_ok = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Non-2xx or 3xx responses:")
                .map(|v| v.trim().parse::<u64>().unwrap_or(0))
        })
        .unwrap_or(0);
    if t.status == 200 {
        ERRORS.fetch_add(non_ok, std::sync::atomic::Ordering::Relaxed);
    }
    if (t.status == 200 && non_ok > 0) || (t.status != 200 && non_ok == 0) {
        eprintln!(
            "warning: {}: {non_ok} responses were not {}",
            t.name, t.status
        );
    }
    let kw = text
        .lines()
        .find(|l| l.starts_with("KW "))
        .unwrap_or_default();
    let field = |name: &str| -> f64 {
        kw.split_whitespace()
            .find_map(|f| f.strip_prefix(name).and_then(|v| v.parse::<f64>().ok()))
            .map_or(0.0, |us| us / 1000.0)
    };
    let socket_errors = kw
        .split_whitespace()
        .find_map(|f| f.strip_prefix("errors="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    ERRORS.fetch_add(socket_errors, std::sync::atomic::Ordering::Relaxed);
    if kw.contains("errors=") && !kw.contains("errors=0") {
        eprintln!("warning: {}: socket errors: {kw}", t.name);
    }
    Sample {
        rps,
        p50: field("p50="),
        p99: field("p99="),
        p999: field("p999="),
        requests,
        ..Sample::default()
    }
}

/// The same request over HTTP/2 (cleartext, prior knowledge) with h2load: `-m10`
/// streams per connection. h2load reports the mean latency, not percentiles; the mean
/// goes in the p50 column. One cookie for the whole run, so no cache-miss setup.
fn run_h2load(t: &Target, seconds: u64, connections: u64, token: &str) -> Sample {
    let mut cmd = Command::new("h2load");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        "-m10",
        &format!("-D{seconds}"),
    ]);
    if t.mode == "hit" {
        cmd.args(["-H", &format!("cookie: keyward_session={token}")]);
    }
    cmd.arg(format!("http://127.0.0.1:{}{}", t.port, t.path));
    let out = cmd
        .output()
        .expect("h2load is installed (bash .ci/bootstrap installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("finished in ")
                .and_then(|r| r.split(", ").nth(1))
                .and_then(|v| v.trim_end_matches(" req/s").parse().ok())
        })
        .unwrap_or(0.0);
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_default();
    // "status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx"
    let expected = format!("{}xx", t.status / 100);
    let unexpected = codes
        .trim_start_matches("status codes:")
        .split(',')
        .filter_map(|c| c.trim().split_once(' '))
        .any(|(n, kind)| kind != expected && n != "0");
    if unexpected {
        eprintln!("warning: {}: unexpected statuses: {codes}", t.name);
    }
    // "time for request:  min  max  mean  sd  +/- sd"
    let mean_ms = text
        .lines()
        .find(|l| l.trim_start().starts_with("time for request:"))
        .and_then(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .map_or(0.0, |v| duration_ms(&v));
    Sample {
        rps,
        p50: mean_ms,
        ..Sample::default()
    }
}

/// The soak: `target` for `seconds` in 30 s slices, printing a row per slice.
async fn run_soak(
    kw: &Keyward,
    hp: &Haproxy,
    target: &Target,
    seconds: u64,
    connections: u64,
    lua: &std::path::Path,
    env: &[(&str, String)],
) {
    let slice = 30.min(seconds);
    println!(
        "\nsoak: {} for {seconds} s, wrk -t2 -c{connections}, {slice} s slices\n",
        target.name
    );
    println!(
        "| t (s) | req/s | p99 ms | errors | keyward RSS MiB | HAProxy RSS MiB | cached sessions | SPOP buffers KiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut elapsed = 0;
    while elapsed < seconds {
        let (s, errors) = run_wrk_counting(target, slice, connections, lua, env);
        elapsed += slice;
        let cached = kw.metric("keyward_session_cache_entries").await;
        let buffers = kw.metric("keyward_spoa_buffer_bytes").await;
        println!(
            "| {elapsed} | {:.0} | {:.3} | {errors} | {:.1} | {:.1} | {cached} | {:.0} |",
            s.rps,
            s.p99,
            kw.rss_kib() as f64 / 1024.0,
            hp.proc().rss_kib().unwrap_or(0) as f64 / 1024.0,
            buffers / 1024.0,
        );
    }
}

/// [`run_wrk`], also returning the responses that were not the expected status plus
/// socket errors.
fn run_wrk_counting(
    t: &Target,
    seconds: u64,
    connections: u64,
    lua: &std::path::Path,
    env: &[(&str, String)],
) -> (Sample, u64) {
    let before = ERRORS.load(std::sync::atomic::Ordering::Relaxed);
    let s = run_wrk(t, seconds, connections, false, lua, env);
    (
        s,
        ERRORS.load(std::sync::atomic::Ordering::Relaxed) - before,
    )
}

/// `count` valid tokens of sessions `first..first + count`, one per line.
fn write_tokens(ring: &keyward_session::KeyRing, path: &std::path::Path, first: u64, count: u64) {
    let now = keyward_session::sys::unix_now();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("tokens file"));
    for i in first..first + count {
        let claims = Claims {
            sid: format!("bench-session-{i:09}"),
            sub: format!("user-{i}"),
            email: None,
            roles: vec!["dev".into()],
            dev: Some(format!("device-{i}")),
            aaguid: None,
            amr: AuthMethod::Passkey,
            auth_time: now,
            iat: now,
            exp: now + 3600,
        };
        writeln!(f, "{}", keyward_session::seal(&claims, ring).expect("seal"))
            .expect("write token");
    }
    f.flush().expect("write tokens");
}

/// CPU ticks used so far by the setup's HAProxy and agent (0 when there is none).
fn setup_cpu_ticks(t: &Target) -> (u64, u64) {
    let ticks = |pid| cpu_ticks(pid).unwrap_or(0);
    (ticks(t.haproxy), t.agent.map_or(0, ticks))
}

fn agent_cpu(t: &Target, us: f64) -> String {
    if t.agent.is_some() {
        format!("{us:.1}")
    } else {
        "–".into()
    }
}

/// Unexpected responses and socket errors seen by [`run_wrk`] so far.
static ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// "812us", "1.23ms", "2.1s" -> milliseconds.
fn duration_ms(v: &str) -> f64 {
    let num = |s: &str| s.parse::<f64>().unwrap_or(0.0);
    if let Some(us) = v.strip_suffix("us") {
        num(us) / 1000.0
    } else if let Some(ms) = v.strip_suffix("ms") {
        num(ms)
    } else if let Some(s) = v.strip_suffix('s') {
        num(s) * 1000.0
    } else {
        0.0
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = arg(&args, "--seconds", 10);
    let rounds = arg(&args, "--rounds", 3);
    let connections = arg(&args, "--connections", 50);
    let close = args.iter().any(|a| a == "--close");
    let h2 = args.iter().any(|a| a == "--h2");
    // `--only 2,3`: just the setups whose names start with these (1 and 2 always run:
    // the ratios need them).
    let mut only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    if !only.is_empty() {
        only.extend(["1 ".into(), "2 ".into()]);
    }
    H2.store(h2, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir().expect("tempdir");
    let lua = dir.path().join("bench.lua");
    std::fs::write(&lua, LUA).expect("write lua");

    // 1. plain
    let (plain, plain_port) = plain_haproxy(dir.path());
    wait_listening(loopback(plain_port), "plain HAProxy").await;
    // 2. no-op agent on keyward's runtime
    let noop_port = free_port();
    let noop = Proc::spawn(
        "test-agent",
        Command::new(sibling_bin("test-agent"))
            .arg(format!("127.0.0.1:{noop_port}"))
            .arg("400")
            .arg("noop"),
    );
    wait_listening(loopback(noop_port), "no-op agent").await;
    let noop_hp = agent_haproxy(format!("127.0.0.1:{noop_port}")).await;
    // 2b. no-op agent answering with identity variables of a real session's size
    let ident_port = free_port();
    let ident = Proc::spawn(
        "test-agent",
        Command::new(sibling_bin("test-agent"))
            .arg(format!("127.0.0.1:{ident_port}"))
            .arg("400")
            .arg("noop-identity"),
    );
    wait_listening(loopback(ident_port), "no-op identity agent").await;
    let ident_hp = agent_haproxy(format!("127.0.0.1:{ident_port}")).await;
    // 6. naive agent
    let naive_port = free_port();
    let naive = Proc::spawn(
        "naive-agent",
        Command::new(sibling_bin("naive-agent")).arg(format!("127.0.0.1:{naive_port}")),
    );
    wait_listening(loopback(naive_port), "naive agent").await;
    let naive_hp = agent_haproxy(format!("127.0.0.1:{naive_port}")).await;
    // 3-5. keyward
    let policy = "[[rule]]\nname = \"headers only\"\npaths = [\"/headers\"]\naccess = \"authenticated\"\n\
                  assertion = false\n\n[[rule]]\nname = \"all\"\naccess = \"authenticated\"\n";
    // KW_BENCH_KEYWARD_EXTRA: more keyward.toml (e.g. "[assertion]\nenabled = false").
    let extra = format!(
        "[log]\nlevel = \"warn\"\n{}",
        std::env::var("KW_BENCH_KEYWARD_EXTRA").unwrap_or_default()
    );
    let mut kw = Keyward::start(policy, &extra).await;
    let kw_hp = agent_haproxy(kw.spoa.to_string()).await;
    let kw_pid = kw.proc().pid();
    let token = kw.mint("bench-user", "dev,ops", "12h", Some("bench-device"));
    let tokens_path = dir.path().join("tokens.txt");
    let ring = ringfile::load(&kw.dir.path().join("keyring.toml")).expect("key ring");
    // Distinct sessions for each cache-miss run, written just before it (below).
    let tokens_per_run = (seconds * 60_000).max(300_000);
    let mut next_session = 0;

    let targets = [
        Target {
            name: "1 plain HAProxy",
            port: plain_port,
            path: "/",
            mode: "plain",
            status: 200,
            haproxy: plain.pid(),
            agent: None,
        },
        Target {
            name: "2 no-op agent (keyward runtime)",
            port: noop_hp.addr.port(),
            path: "/",
            mode: "plain",
            status: 200,
            haproxy: noop_hp.proc().pid(),
            agent: Some(noop.pid()),
        },
        Target {
            name: "2b no-op agent + identity vars",
            port: ident_hp.addr.port(),
            path: "/",
            mode: "plain",
            status: 200,
            haproxy: ident_hp.proc().pid(),
            agent: Some(ident.pid()),
        },
        Target {
            name: "2c no-op agent + identity vars, session cookie sent",
            port: ident_hp.addr.port(),
            path: "/",
            mode: "hit",
            status: 200,
            haproxy: ident_hp.proc().pid(),
            agent: Some(ident.pid()),
        },
        Target {
            name: "3 keyward, cache hit",
            port: kw_hp.addr.port(),
            path: "/",
            mode: "hit",
            status: 200,
            haproxy: kw_hp.proc().pid(),
            agent: Some(kw_pid),
        },
        Target {
            name: "4 keyward, cache miss",
            port: kw_hp.addr.port(),
            path: "/",
            mode: "miss",
            status: 200,
            haproxy: kw_hp.proc().pid(),
            agent: Some(kw_pid),
        },
        Target {
            name: "3h keyward, cache hit, no assertion",
            port: kw_hp.addr.port(),
            path: "/headers",
            mode: "hit",
            status: 200,
            haproxy: kw_hp.proc().pid(),
            agent: Some(kw_pid),
        },
        Target {
            name: "4h keyward, cache miss, no assertion",
            port: kw_hp.addr.port(),
            path: "/headers",
            mode: "miss",
            status: 200,
            haproxy: kw_hp.proc().pid(),
            agent: Some(kw_pid),
        },
        Target {
            name: "5 keyward, no session (401)",
            port: kw_hp.addr.port(),
            path: "/",
            mode: "plain",
            status: 401,
            haproxy: kw_hp.proc().pid(),
            agent: Some(kw_pid),
        },
        Target {
            name: "6 naive spop-example agent",
            port: naive_hp.addr.port(),
            path: "/",
            mode: "plain",
            status: 200,
            haproxy: naive_hp.proc().pid(),
            agent: Some(naive.pid()),
        },
    ];
    let env = [
        ("KW_TOKEN", token),
        ("KW_TOKENS", tokens_path.display().to_string()),
    ];
    // `--soak SECONDS`: only keyward, distinct sessions cycled (cache misses and hits,
    // the cache at its cap), in 30 s slices; errors and resident memory per slice.
    let soak = arg(&args, "--soak", 0);
    if soak > 0 {
        // 300,000 sessions cycled through the (100,000-entry) cache.
        write_tokens(&ring, &tokens_path, 0, 300_000);
        let miss = targets
            .iter()
            .find(|t| t.mode == "miss")
            .expect("the miss setup");
        run_soak(&kw, &kw_hp, miss, soak, connections, &lua, &env).await;
        kw.kill();
        return;
    }
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 1..=rounds {
        for t in &targets {
            if (h2 && t.mode == "miss")
                || !only.iter().all(|o| o.is_empty())
                    && !only.iter().any(|o| t.name.starts_with(o.as_str()))
            {
                continue;
            }
            // Sessions no run has used: moka admits a new entry into a full cache only
            // if it is seen more often than the one it would evict, so reused tokens
            // could still be cached and turn misses into hits.
            if t.mode == "miss" {
                write_tokens(&ring, &tokens_path, next_session, tokens_per_run);
                next_session += tokens_per_run;
            }
            let cpu_before = setup_cpu_ticks(t);
            let mut s = if h2 {
                run_h2load(t, seconds, connections, &env[0].1)
            } else {
                run_wrk(t, seconds, connections, close, &lua, &env)
            };
            let cpu_after = setup_cpu_ticks(t);
            // Ticks are 10 ms; requests ~ rate x duration.
            let per_request = |a: u64, b: u64| {
                (b.saturating_sub(a) as f64 * 10_000.0) / (s.rps * seconds as f64).max(1.0)
            };
            s.haproxy_us = per_request(cpu_before.0, cpu_after.0);
            s.agent_us = per_request(cpu_before.1, cpu_after.1);
            eprintln!(
                "round {round} {:<34} {:>10.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  cpu/req HAProxy {:.1} us agent {:.1} us",
                t.name, s.rps, s.p50, s.p99, s.p999, s.haproxy_us, s.agent_us
            );
            if t.mode == "miss" && s.requests > tokens_per_run {
                eprintln!(
                    "warning: {}: {} requests for {tokens_per_run} sessions: some were cache hits",
                    t.name, s.requests
                );
            }
            samples.entry(t.name).or_default().push(s);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let med = |name: &str, f: fn(&Sample) -> f64| median(samples[name].iter().map(f).collect());
    let base1 = med(targets[0].name, |s| s.rps);
    let base2 = med(targets[1].name, |s| s.rps);
    if h2 {
        println!(
            "\nh2load -t2 -c{connections} -m10 -D{seconds}, HTTP/2 cleartext, {rounds} interleaved rounds, median\n"
        );
        println!(
            "| setup | req/s | mean ms | x (1) | x (2) | HAProxy CPU µs/req | agent CPU µs/req |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
    } else {
        println!(
            "\nwrk -t2 -c{connections} -d{seconds}s, {rounds} interleaved rounds, median; keep-alive {}\n",
            if close { "off" } else { "on" }
        );
        println!(
            "| setup | req/s | p50 ms | p99 ms | p99.9 ms | x (1) | x (2) | HAProxy CPU µs/req | agent CPU µs/req |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    for t in targets.iter().filter(|t| samples.contains_key(t.name)) {
        if h2 {
            let rps = med(t.name, |s| s.rps);
            println!(
                "| {} | {:.0} | {:.3} | {:.2} | {:.2} | {:.1} | {} |",
                t.name,
                rps,
                med(t.name, |s| s.p50),
                rps / base1,
                rps / base2,
                med(t.name, |s| s.haproxy_us),
                agent_cpu(t, med(t.name, |s| s.agent_us)),
            );
            continue;
        }
        let rps = med(t.name, |s| s.rps);
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.1} | {} |",
            t.name,
            rps,
            med(t.name, |s| s.p50),
            med(t.name, |s| s.p99),
            med(t.name, |s| s.p999),
            rps / base1,
            rps / base2,
            med(t.name, |s| s.haproxy_us),
            agent_cpu(t, med(t.name, |s| s.agent_us)),
        );
    }
    let hits = kw.metric("keyward_session_cache_hits_total").await;
    let misses = kw.metric("keyward_session_cache_misses_total").await;
    println!("\nkeyward session cache over the whole run: {hits} hits, {misses} misses");
    kw.kill();
}
