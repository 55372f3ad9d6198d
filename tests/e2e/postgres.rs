//! Many nodes on one PostgreSQL store: a throwaway cluster (Debian's server, `initdb`
//! in a temp dir), the store's cases on it, and two nodes (each HAProxy 2.6 + the real
//! `keyward` binary) that share users and revocations.

use std::time::Duration;

use keyward_store::conformance::CASES;
use keyward_tests::eventually;
use keyward_tests::haproxy::{Haproxy, Wiring};
use keyward_tests::http::{Response, get};
use keyward_tests::keyward::Keyward;
use keyward_tests::postgres::Postgres;
use keyward_tests::upstream::Upstream;

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
    let store = format!("url = \"{url}\"\nrevocation_poll = \"5m\"");
    let a = Node::start(&store, None).await;
    let b = Node::start(&store, Some(&a)).await;
    b.listening(true).await;

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
