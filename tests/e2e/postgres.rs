//! Many nodes on one PostgreSQL store: a throwaway cluster (Debian's server, `initdb`
//! in a temp dir), the store's cases on it, and two nodes (each HAProxy 2.6 + the real
//! `keyward` binary) that share users and revocations.

use std::net::SocketAddr;
use std::time::Duration;

use keyward_store::conformance::CASES;
use keyward_tests::eventually;
use keyward_tests::haproxy::{Haproxy, Wiring};
use keyward_tests::http::{Response, get};
use keyward_tests::keyward::Keyward;
use keyward_tests::postgres::{Postgres, ROLE};
use keyward_tests::relay::Relay;
use keyward_tests::upstream::Upstream;
use serde_json::{Value, json};
use webauthn_authenticator_rs::prelude::{Url, WebauthnAuthenticator};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const POLICY: &str = r#"
[[rule]]
name = "health"
paths = ["/healthz"]
access = "public"

[[rule]]
name = "app"
hosts = ["app.test"]
access = "authenticated"
"#;

const LOST: &str = "keyward_revocations_listener_lost_total";

#[tokio::test]
async fn the_store_behaves_the_same_on_postgresql() {
    let pg = Postgres::start().await;
    for (name, case) in CASES {
        let url = pg.create_database(name);
        case(url).await;
    }
}

/// One HAProxy and one agent.
struct Node {
    keyward: Keyward,
    haproxy: Haproxy,
    _upstream: Upstream,
}

impl Node {
    async fn start(store_keys: &str, peer: Option<&Node>) -> Self {
        let keyward = Keyward::start_node(POLICY, store_keys, peer.map(|p| &p.keyward)).await;
        let upstream = Upstream::start().await;
        let haproxy = Haproxy::start(&Wiring {
            spoa: keyward.spoa.to_string(),
            upstream: upstream.addr,
            portal: Some(keyward.portal),
            edits: vec![],
        })
        .await;
        Self {
            keyward,
            haproxy,
            _upstream: upstream,
        }
    }

    /// Waits until `keyward_revocations_listening` says `on`.
    async fn listening(&self, on: bool) {
        let want = if on { 1.0 } else { 0.0 };
        eventually(Duration::from_secs(10), "the listener gauge", || async {
            (self.keyward.metric("keyward_revocations_listening").await == want).then_some(())
        })
        .await;
    }

    async fn as_user(&self, token: &str) -> Response {
        let cookie = format!("keyward_session={token}");
        get(
            self.haproxy.addr,
            "/",
            &[("Cookie", &cookie), ("Accept", "text/html")],
        )
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn a_revocation_reaches_every_node_at_once_and_after_an_outage() {
    let mut pg = Postgres::start().await;
    let url = pg.create_database("keyward");
    // Polling every five minutes: only the store's notification can explain a node
    // applying a revocation made elsewhere within seconds.
    // Heartbeats every 200 ms: a listener that stopped hearing them would be replaced
    // (and counted) within the second this test waits below.
    let store = format!("url = \"{url}\"\nrevocation_poll = \"5m\"\nheartbeat = \"200ms\"");
    let a = Node::start(&store, None).await;
    let b = Node::start(&store, Some(&a)).await;
    b.listening(true).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.keyward.metric(LOST).await, 0.0, "heartbeats went unheard");
    assert_eq!(b.keyward.metric("keyward_revocations_listening").await, 1.0);

    // One set of users for every node.
    a.keyward.cli_ok(&["users", "invite", "hana"]);
    let list = b.keyward.cli_ok(&["users", "list"]);
    assert!(list.lines().any(|l| l.starts_with("hana ")), "{list}");

    let sess = a.keyward.mint("ivan", "dev", "10m", Some("dev-i1"));
    let other = a.keyward.mint("ivan", "dev", "10m", Some("dev-i2"));
    for node in [&a, &b] {
        for t in [&sess, &other] {
            assert_eq!(node.as_user(t).await.status, 200);
        }
    }
    let echoed = a.as_user(&sess).await.body;
    let sid = echoed
        .lines()
        .find_map(|l| l.strip_prefix("x-keyward-session: "))
        .unwrap_or_else(|| panic!("no session id in {echoed}"))
        .to_owned();

    // Revoked through node A's CLI (which tells A itself); B hears it from the store.
    let out = a.keyward.cli_ok(&["sessions", "revoke", "--session", &sid]);
    assert!(out.contains("other nodes are told by the store"), "{out}");
    let revoked = std::time::Instant::now();
    eventually(
        Duration::from_secs(3),
        "node B applies A's revocation",
        || async { (b.as_user(&sess).await.status == 302).then_some(()) },
    )
    .await;
    // Reported, not asserted on (`cargo test --test postgres -- --nocapture`).
    eprintln!(
        "node B refused the session {:?} after node A's CLI returned",
        revoked.elapsed()
    );
    assert_eq!(a.as_user(&sess).await.status, 302);
    assert_eq!(b.as_user(&other).await.status, 200, "only that session");

    // The store goes away: the nodes keep deciding with what they hold.
    pg.kill();
    b.listening(false).await;
    assert!(b.keyward.metric(LOST).await >= 1.0);
    assert_eq!(b.as_user(&sess).await.status, 302);
    assert_eq!(b.as_user(&other).await.status, 200);
    pg.restart().await;
    // B listens again and reads the log it may have missed; a revocation made now
    // reaches it without waiting for the poll.
    a.keyward
        .cli_ok(&["sessions", "revoke", "--device", "dev-i2"]);
    eventually(
        Duration::from_secs(20),
        "node B applies a revocation made after the store came back",
        || async { (b.as_user(&other).await.status == 302).then_some(()) },
    )
    .await;

    // A node started later reads the whole log.
    let c = Node::start(&store, Some(&a)).await;
    for t in [&sess, &other] {
        assert_eq!(c.as_user(t).await.status, 302, "{}", pg.log());
    }
    let fresh = a.keyward.mint("ivan", "dev", "10m", Some("dev-i3"));
    assert_eq!(c.as_user(&fresh).await.status, 200);
}

/// The portal origin of the test config (`TEST_PORTAL`).
const ORIGIN: &str = "https://auth.test";

/// A JSON POST to a portal, with the origin check's header and `cookies`; the status,
/// the body, and the `name=value` of every cookie set.
async fn portal_post(
    portal: SocketAddr,
    path: &str,
    body: &Value,
    cookies: &[String],
) -> (u16, Value, Vec<String>) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{portal}{path}"))
        .header("Origin", ORIGIN)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if !cookies.is_empty() {
        req = req.header("Cookie", cookies.join("; "));
    }
    let res = req.send().await.expect("portal answers");
    let status = res.status().as_u16();
    let set: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    let text = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        set,
    )
}

fn cookie<'a>(set: &'a [String], name: &str) -> &'a String {
    set.iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {set:?}"))
}

/// Begins the sign-in of `user` (by name) on a portal.
async fn begin_sign_in(portal: SocketAddr, user: &str) -> (u16, Value, Vec<String>) {
    let body = json!({ "username": user });
    portal_post(portal, "/.keyward/login/begin", &body, &[]).await
}

/// A relay to `pg`, and the URL of the database `keyward` through it.
async fn relayed(pg: &Postgres) -> (Relay, String) {
    let relay = Relay::start(keyward_tests::loopback(pg.port)).await;
    let url = format!("postgres://{ROLE}@{}/keyward", relay.addr);
    (relay, url)
}

/// Holds an exclusive lock on `table` for `seconds`, from a session named `holder`
/// (`pg_terminate_backend` ends it sooner); returns once the lock is granted.
async fn hold_lock(
    pg: &Postgres,
    table: &str,
    seconds: u32,
) -> std::thread::JoinHandle<std::io::Result<std::process::Output>> {
    let sql = format!(
        "SET application_name = 'holder'; BEGIN; \
         LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;"
    );
    let mut cmd = pg.psql_command("keyward", &sql);
    let holder = std::thread::spawn(move || cmd.output());
    let granted = format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
    );
    eventually(Duration::from_secs(10), "the lock is held", || async {
        (pg.psql("keyward", &granted).ok()? == "1").then_some(())
    })
    .await;
    holder
}

/// Enrollment begun on one node and finished on another, sign-in the other way round,
/// and the same answer replayed on both: what lets a browser reach any node.
#[tokio::test]
async fn a_sign_in_begun_on_one_node_finishes_on_another() {
    let pg = Postgres::start().await;
    let store = format!("url = \"{}\"", pg.create_database("keyward"));
    let a = Node::start(&store, None).await;
    let b = Node::start(&store, Some(&a)).await;
    let origin = Url::parse(ORIGIN).unwrap();
    let mut key = SoftPasskey::new(true);

    let link = a.keyward.cli_ok(&["users", "invite", "judy"]);
    let invite = link
        .split("invite=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no invite link in {link}"));
    let (status, options, set) = portal_post(
        a.keyward.portal,
        "/.keyward/enroll/begin",
        &json!({ "invite": invite, "name": "laptop", "kind": "passkey" }),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{options}");
    let ceremony = cookie(&set, "keyward_ceremony").clone();
    let credential = key
        .do_registration(origin.clone(), serde_json::from_value(options).unwrap())
        .unwrap();
    let (status, body, _) = portal_post(
        b.keyward.portal,
        "/.keyward/enroll/finish",
        &serde_json::to_value(&credential).unwrap(),
        std::slice::from_ref(&ceremony),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, options, set) = begin_sign_in(b.keyward.portal, "judy").await;
    assert_eq!(status, 200, "{options}");
    let ceremony = cookie(&set, "keyward_ceremony").clone();
    let answer = serde_json::to_value(
        key.do_authentication(origin, serde_json::from_value(options).unwrap())
            .unwrap(),
    )
    .unwrap();
    let (status, body, set) = portal_post(
        a.keyward.portal,
        "/.keyward/login/finish",
        &answer,
        std::slice::from_ref(&ceremony),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let session = cookie(&set, "keyward_session")
        .trim_start_matches("keyward_session=")
        .to_owned();
    // Sealed on A, honoured by B (one key ring).
    assert_eq!(b.as_user(&session).await.status, 200);

    for node in [&a, &b] {
        let (status, body, _) = portal_post(
            node.keyward.portal,
            "/.keyward/login/finish",
            &answer,
            std::slice::from_ref(&ceremony),
        )
        .await;
        assert_eq!(status, 400, "a replayed answer: {body}");
    }
}

/// A store that stops answering (here: a session holding the revocation log's lock)
/// makes the agent's reads fail within their timeout instead of hanging it, and the
/// request path, which never waits for the store, keeps deciding.
#[tokio::test]
async fn a_stalled_store_neither_hangs_the_agent_nor_changes_its_decisions() {
    let pg = Postgres::start().await;
    let url = pg.create_database("keyward");
    let a = Node::start(&format!("url = \"{url}\"\nrevocation_poll = \"5m\""), None).await;
    let token = a.keyward.mint("kim", "dev", "10m", Some("dev-k1"));
    assert_eq!(a.as_user(&token).await.status, 200);

    let holder = hold_lock(&pg, "revocations", 13).await;

    let refresh = format!("http://{}/admin/revocations/refresh", a.keyward.ops);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let stalled = client.post(&refresh).send();
    // Meanwhile requests are decided as before, without waiting for the store.
    let during = a.as_user(&token).await;
    assert_eq!(during.status, 200);
    let stalled = stalled.await.expect("an answer, not a hang");
    assert_eq!(stalled.status().as_u16(), 503);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(12),
        "answered after {waited:?}"
    );
    eprintln!("a refresh against the stalled store failed after {waited:?}");

    assert!(holder.join().unwrap().unwrap().status.success());
    let after = client.post(&refresh).send().await.unwrap();
    assert_eq!(after.status().as_u16(), 200);
    assert_eq!(a.as_user(&token).await.status, 200);
}

/// A firewall that drops a connection's state, or a failover that moves the database,
/// leaves the connections that were open going nowhere, and neither end is told (the
/// kernel would give up on them after some fifteen minutes). Here every connection node
/// B has open is silenced at once: its revocation listener, and the pool its heartbeats,
/// reads and portal use. B must notice, listen again on a new connection, read what it
/// missed, and keep its portal answering, in seconds.
#[tokio::test]
async fn store_connections_that_go_silent_are_given_up_in_seconds() {
    let pg = Postgres::start().await;
    let url = pg.create_database("keyward");
    let (relay, via) = relayed(&pg).await;
    let keys = "revocation_poll = \"5m\"\nheartbeat = \"200ms\"";
    let a = Node::start(&format!("url = \"{url}\"\n{keys}"), None).await;
    let b = Node::start(&format!("url = \"{via}\"\n{keys}"), Some(&a)).await;
    b.listening(true).await;
    a.keyward.cli_ok(&["users", "invite", "lena"]);
    let sess = a.keyward.mint("lena", "dev", "10m", Some("dev-l1"));
    assert_eq!(b.as_user(&sess).await.status, 200);
    let sign_in = || begin_sign_in(b.keyward.portal, "lena");
    assert_eq!(sign_in().await.0, 200);

    let silenced = relay.silence_open();
    assert!(silenced >= 2, "the listener and the pool: {silenced}");
    let started = std::time::Instant::now();
    a.keyward
        .cli_ok(&["sessions", "revoke", "--device", "dev-l1"]);
    // Three heartbeat periods unheard, one second's wait, a new listener, the log read.
    eventually(
        Duration::from_secs(15),
        "node B applies a revocation announced on its silenced connection",
        || async { (b.as_user(&sess).await.status == 302).then_some(()) },
    )
    .await;
    eprintln!(
        "node B refused the revoked session {:?} after its connections went silent",
        started.elapsed()
    );
    assert!(b.keyward.metric(LOST).await >= 1.0);
    b.listening(true).await;
    assert!(relay.accepted() > silenced, "B connected anew");

    // The portal's reads and writes go to new connections, not to silenced ones.
    let started = std::time::Instant::now();
    let (status, body, _) = sign_in().await;
    assert_eq!(status, 200, "{body}");
    eprintln!("a sign-in on node B began {:?} after", started.elapsed());
    let refresh = format!("http://{}/admin/revocations/refresh", b.keyward.ops);
    let refreshed = reqwest::Client::new().post(&refresh).send().await.unwrap();
    assert_eq!(refreshed.status().as_u16(), 200);
}

/// Connections that go silent while queries are on them: the answers never come (here
/// the queries wait on a lock, and whatever the server answers once it is released is
/// lost on the way). Each operation
/// fails within the store's bound instead of hanging its sign-in, the silent
/// connections give their places in the pool back, and the next sign-in runs on a new
/// connection.
#[tokio::test]
async fn queries_on_connections_that_go_silent_fail_within_the_bound() {
    /// The store's pool size: every connection B may open is caught.
    const POOL: usize = 8;
    let pg = Postgres::start().await;
    let url = pg.create_database("keyward");
    let (relay, via) = relayed(&pg).await;
    let a = Node::start(&format!("url = \"{url}\""), None).await;
    let b = Node::start(
        &format!("url = \"{via}\"\nrevocation_poll = \"5m\""),
        Some(&a),
    )
    .await;
    a.keyward.cli_ok(&["users", "invite", "mira"]);
    // Nine sign-ins in all, within the portal's ten per user and client a minute.
    let sign_in = || begin_sign_in(b.keyward.portal, "mira");

    // Sign-ins whose reads of the user wait on a lock; their connections go silent. The
    // lock is held until the test ends it, after the silence.
    let holder = hold_lock(&pg, "users", 60).await;
    let started = std::time::Instant::now();
    let portal = b.keyward.portal;
    let stuck: Vec<_> = (0..POOL)
        .map(|_| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_secs(40),
                begin_sign_in(portal, "mira"),
            ))
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "the sign-ins wait on the lock",
        || async {
            let waiting = pg
                .psql(
                    "keyward",
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'keyward' AND wait_event_type = 'Lock'",
                )
                .ok()?;
            (waiting == POOL.to_string()).then_some(())
        },
    )
    .await;
    relay.silence_open();
    pg.psql(
        "keyward",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder'",
    )
    .unwrap();
    holder.join().unwrap().unwrap();

    for task in stuck {
        let (status, body, _) = task
            .await
            .unwrap()
            .expect("the sign-in answered instead of hanging");
        assert_eq!(status, 503, "{body}");
    }
    let waited = started.elapsed();
    eprintln!("sign-ins whose connections went silent failed after {waited:?}");
    // The store's bound (15 s) and a margin; not the kernel's fifteen minutes.
    assert!(
        waited < Duration::from_secs(25),
        "answered after {waited:?}"
    );
    let failed = r#"keyward_portal_requests_total{result="error",route="/.keyward/login/begin"}"#;
    assert_eq!(b.keyward.metric(failed).await, POOL as f64);

    // Had the silent connections kept their places, this would wait for one in vain.
    let (status, body, _) = sign_in().await;
    assert_eq!(status, 200, "{body}");
}

/// `store.revocations_max_age`: a node that cannot read the revocation log for longer
/// than that refuses sessions (403) instead of honouring ones that may have been
/// revoked elsewhere; public routes stay up; once it reads the log again, sessions
/// pass again.
#[tokio::test]
async fn a_node_cut_off_from_the_log_for_too_long_refuses_sessions() {
    let mut pg = Postgres::start().await;
    let url = pg.create_database("keyward");
    let a = Node::start(
        &format!("url = \"{url}\"\nrevocation_poll = \"500ms\"\nrevocations_max_age = \"2s\""),
        None,
    )
    .await;
    let token = a.keyward.mint("nina", "dev", "10m", Some("dev-n1"));
    assert_eq!(a.as_user(&token).await.status, 200);

    pg.kill();
    let cut = std::time::Instant::now();
    eventually(Duration::from_secs(10), "sessions refused", || async {
        (a.as_user(&token).await.status == 403).then_some(())
    })
    .await;
    eprintln!(
        "sessions refused {:?} after the store went away",
        cut.elapsed()
    );
    let health = get(a.haproxy.addr, "/healthz", &[("Host", "app.test")])
        .await
        .unwrap();
    assert_eq!(health.status, 200, "a public route stays public");
    let denied = r#"keyward_decisions_total{decision="deny",reason="error"}"#;
    assert!(a.keyward.metric(denied).await >= 1.0);

    pg.restart().await;
    eventually(Duration::from_secs(20), "sessions pass again", || async {
        (a.as_user(&token).await.status == 200).then_some(())
    })
    .await;
}

/// Idle connections of the pool that went silent: the next operation gives up on each
/// within the bounded ping and opens a new one, instead of spending its whole acquire
/// timeout on the first (and failing).
#[tokio::test]
async fn idle_connections_that_went_silent_are_replaced_when_next_needed() {
    let pg = Postgres::start().await;
    let url = pg.create_database("keyward");
    let (relay, via) = relayed(&pg).await;
    let a = Node::start(&format!("url = \"{url}\""), None).await;
    // No heartbeat or poll in the test's time: nothing but the sign-in uses the pool.
    let quiet = "revocation_poll = \"5m\"\nheartbeat = \"5m\"";
    let b = Node::start(&format!("url = \"{via}\"\n{quiet}"), Some(&a)).await;
    a.keyward.cli_ok(&["users", "invite", "omar"]);
    let sign_in = || begin_sign_in(b.keyward.portal, "omar");
    assert_eq!(sign_in().await.0, 200);

    let silenced = relay.silence_open();
    let started = std::time::Instant::now();
    let (status, body, _) = sign_in().await;
    assert_eq!(status, 200, "{body}");
    eprintln!(
        "a sign-in over silent idle connections succeeded after {:?}",
        started.elapsed()
    );
    assert!(relay.accepted() > silenced, "on a new connection");
}

/// The server ends the listening connections (an administrator's
/// `pg_terminate_backend`, a restart of a pooler in front): each agent is told, listens
/// again on a new connection, and reads what it missed, long before its next poll.
#[tokio::test]
async fn listeners_ended_by_the_server_listen_again_and_catch_up() {
    let pg = Postgres::start().await;
    let url = pg.create_database("keyward");
    let store = format!("url = \"{url}\"\nrevocation_poll = \"5m\"");
    let a = Node::start(&store, None).await;
    let b = Node::start(&store, Some(&a)).await;
    b.listening(true).await;
    let token = a.keyward.mint("pia", "dev", "10m", Some("dev-p1"));
    assert_eq!(b.as_user(&token).await.status, 200);

    let ended = pg
        .psql(
            "keyward",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'keyward' AND query ILIKE 'LISTEN%'",
        )
        .unwrap();
    assert_eq!(ended, "2", "one listener per node");
    // Revoked while B is between listeners: the announcement is lost, the log is not.
    a.keyward
        .cli_ok(&["sessions", "revoke", "--device", "dev-p1"]);
    eventually(
        Duration::from_secs(10),
        "node B catches up once it listens again",
        || async { (b.as_user(&token).await.status == 302).then_some(()) },
    )
    .await;
    assert!(b.keyward.metric(LOST).await >= 1.0);
    b.listening(true).await;
}
