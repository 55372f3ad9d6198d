//! The request path end to end: HAProxy 2.6 from haproxy/, the real `keyward` binary
//! with a policy, tokens minted by its CLI, an echoing upstream.

use std::time::Duration;

use keyward_tests::eventually;
use keyward_tests::haproxy::{Haproxy, Wiring};
use keyward_tests::http::{Response, get, read_response, wait_for_ok};
use keyward_tests::keyward::{Keyward, decision};
use keyward_tests::upstream::Upstream;

const POLICY: &str = r#"
[[rule]]
name = "health"
paths = ["/healthz"]
access = "public"

[[rule]]
name = "admin"
hosts = ["app.test"]
paths = ["/admin"]
access = "roles"
roles = ["admin"]

[[rule]]
name = "step-up"
hosts = ["app.test"]
paths = ["/sensitive"]
access = "authenticated"
max_auth_age = "1s"

[[rule]]
name = "vault"
hosts = ["app.test"]
paths = ["/vault"]
access = "authenticated"
device = "attested"

[[rule]]
name = "api"
hosts = ["api.test"]
access = "authenticated"

[[rule]]
name = "app"
hosts = ["app.test", "*.app.test"]
access = "authenticated"
"#;

struct Stack {
    keyward: Keyward,
    haproxy: Haproxy,
    upstream: Upstream,
}

async fn stack() -> Stack {
    let keyward = Keyward::start(POLICY, "").await;
    let upstream = Upstream::start().await;
    let haproxy = Haproxy::start(&Wiring {
        spoa: keyward.spoa.to_string(),
        upstream: upstream.addr,
        portal: Some(keyward.portal),
        edits: vec![],
    })
    .await;
    Stack {
        keyward,
        haproxy,
        upstream,
    }
}

const BROWSER: (&str, &str) = ("Accept", "text/html,application/xhtml+xml");

fn cookie(token: &str) -> String {
    format!("theme=dark; keyward_session={token}; other=1")
}

impl Stack {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        get(self.haproxy.addr, path, headers).await.unwrap()
    }

    async fn as_user(&self, path: &str, token: &str) -> Response {
        self.get(path, &[("Cookie", &cookie(token)), BROWSER]).await
    }

    /// Asserts that `series` grew by one during `f`.
    async fn counts<F: std::future::Future<Output = Response>>(
        &self,
        series: &str,
        f: F,
    ) -> Response {
        let before = self.keyward.metric(series).await;
        let r = f.await;
        assert_eq!(
            self.keyward.metric(series).await,
            before + 1.0,
            "{series} after {r:?}"
        );
        r
    }
}

fn header_of(body: &str, name: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
}

#[tokio::test]
async fn decisions_reasons_and_identity_headers() {
    let s = stack().await;
    let alice = s
        .keyward
        .mint("alice", "dev,admin", "10m", Some("dev-alice-1"));
    let bob = s.keyward.mint("bob", "dev", "10m", None);

    // Public route: no session needed.
    let r = s
        .counts(&decision("allow", "ok"), s.get("/healthz", &[]))
        .await;
    assert_eq!(r.status, 200);
    // A public route gets no identity, so nothing the client forged may stand in for it.
    let r = s.as_user_spoofing("/healthz", "not-a-token").await;
    assert_eq!(r.status, 200);
    assert!(
        !r.body.contains("mallory"),
        "forged identity forwarded: {}",
        r.body
    );

    // No session: browsers are sent to sign in with the return URL, APIs get 401.
    let r = s
        .counts(
            &decision("login", "no_session"),
            s.get("/reports?q=1", &[BROWSER]),
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://auth.test/.keyward/login?rd=http%3A%2F%2Fapp%2Etest%2Freports%3Fq%3D1")
    );
    let r = s.get("/reports", &[("Accept", "application/json")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"keyward\"")
    );

    // A valid session: identity reaches the upstream, spoofed headers do not.
    let hits = s.upstream.hits();
    let r = s.as_user_spoofing("/reports", &alice).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        header_of(&r.body, "x-keyward-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        header_of(&r.body, "x-keyward-roles").as_deref(),
        Some("dev,admin")
    );
    assert_eq!(
        header_of(&r.body, "x-keyward-device").as_deref(),
        Some("dev-alice-1")
    );
    assert!(header_of(&r.body, "x-keyward-session").is_some_and(|v| v.len() >= 20));
    assert!(header_of(&r.body, "x-keyward-assertion").is_some_and(|v| v.split('.').count() == 3));
    assert!(
        !r.body.contains("mallory"),
        "spoofed identity reached the upstream: {}",
        r.body
    );
    // The session cookie is keyward's: the application gets the other cookies only.
    assert_eq!(
        header_of(&r.body, "cookie").as_deref(),
        Some("theme=dark; other=1"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains(&alice),
        "the session token reached the upstream"
    );
    assert_eq!(s.upstream.hits(), hits + 1);
    for (sent, forwarded) in [
        (format!("keyward_session={alice}"), None),
        (format!("keyward_session={alice}; a=1"), Some("a=1")),
        (format!("a=1; keyward_session={alice}"), Some("a=1")),
        (
            format!("not_keyward_session=1; keyward_session={alice}"),
            Some("not_keyward_session=1"),
        ),
    ] {
        let r = s.get("/reports", &[("Cookie", &sent), BROWSER]).await;
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(header_of(&r.body, "cookie").as_deref(), forwarded, "{sent}");
    }

    // Roles.
    let r = s
        .counts(
            &decision("deny", "forbidden"),
            s.as_user("/admin/users", &bob),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(s.as_user("/admin/users", &alice).await.status, 200);
    // Path tricks do not reach /admin through another rule... there is none that is
    // public here, but the normalized path is what the policy sees.
    assert_eq!(s.as_user("/public/../admin/users", &bob).await.status, 403);

    // Device class: a minted token is not an attested hardware key.
    let r = s
        .counts(
            &decision("deny", "device_not_allowed"),
            s.as_user("/vault", &alice),
        )
        .await;
    assert_eq!(r.status, 403);

    // Step-up: a login older than max_auth_age must sign in again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = s
        .counts(
            &decision("login", "stale_auth"),
            s.as_user("/sensitive", &alice),
        )
        .await;
    assert_eq!(r.status, 302);

    // Unknown host: no rule, denied.
    let r = s
        .counts(
            &decision("deny", "forbidden"),
            s.get("/", &[("Host", "other.test"), ("Cookie", &cookie(&alice))]),
        )
        .await;
    assert_eq!(r.status, 403);

    // Bearer tokens for APIs, same validation.
    let bearer = format!("Bearer {bob}");
    let r = s
        .get(
            "/v1/things",
            &[("Host", "api.test"), ("Authorization", &bearer)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(header_of(&r.body, "x-keyward-user").as_deref(), Some("bob"));
    assert_eq!(
        header_of(&r.body, "authorization"),
        None,
        "the bearer token reached the upstream"
    );
    assert_eq!(
        s.get("/v1/things", &[("Host", "api.test")]).await.status,
        401
    );

    // gRPC-shaped requests get gRPC statuses.
    let grpc = ("Content-Type", "application/grpc");
    let r = s.get("/pkg.Svc/Call", &[("Host", "api.test"), grpc]).await;
    assert_eq!((r.status, r.header("grpc-status")), (200, Some("16")));
    let r = s
        .get(
            "/pkg.Svc/Call",
            &[("Host", "other.test"), grpc, ("Authorization", &bearer)],
        )
        .await;
    assert_eq!((r.status, r.header("grpc-status")), (200, Some("7")));

    // The audit log has the denials, by session and device, never a name or token.
    let audit = s.keyward.audit();
    assert!(
        audit.contains("\"reason\":\"device_not_allowed\""),
        "{audit}"
    );
    assert!(audit.contains("\"device\":\"dev-alice-1\""), "{audit}");
    assert!(audit.contains("\"event\":\"token_minted\""), "{audit}");
    assert!(
        !audit.contains("alice\"") && !audit.contains(&alice),
        "audit leaks identity: {audit}"
    );
}

impl Stack {
    /// `token`'s request, plus identity headers the client forged.
    async fn as_user_spoofing(&self, path: &str, token: &str) -> Response {
        self.get(
            path,
            &[
                ("Cookie", &cookie(token)),
                BROWSER,
                ("X-Keyward-User", "mallory"),
                ("X-Keyward-Roles", "admin"),
                ("x-keyward-assertion", "mallory.forged.jwt"),
                // WSGI, CGI and PHP read `_` as `-`: these would be X-Keyward-* to them.
                ("X_Keyward_User", "mallory"),
                ("X-Keyward_Email", "mallory@example.test"),
                ("x_keyward-device", "mallory-device"),
            ],
        )
        .await
    }
}

#[tokio::test]
async fn hostile_tokens_get_login_with_the_right_reason() {
    let s = stack().await;
    let good = s.keyward.mint("carol", "dev", "10m", None);
    let hits = s.upstream.hits();

    let mut tampered = good.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases = [
        ("truncated", good[..good.len() - 10].to_owned()),
        ("tampered", tampered),
        ("garbage", "v4.local.bm90IGEgdG9rZW4".to_owned()),
        ("wrong purpose", good.replace("v4.local.", "v4.public.")),
    ];
    for (name, token) in cases {
        let r = s
            .counts(&decision("login", "invalid"), s.as_user("/", &token))
            .await;
        assert_eq!(r.status, 302, "{name}");
    }
    // Another deployment's key.
    let other = Keyward::start(POLICY, "").await;
    let foreign = other.mint("carol", "dev", "10m", None);
    let r = s
        .counts(&decision("login", "invalid"), s.as_user("/", &foreign))
        .await;
    assert_eq!(r.status, 302);
    // Expired (leeway is 0 in the test config).
    let short = s.keyward.mint("carol", "dev", "1s", None);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = s
        .counts(&decision("login", "expired"), s.as_user("/", &short))
        .await;
    assert_eq!(r.status, 302);
    // A long cookie: HAProxy or keyward refuse it; it never reaches the upstream.
    let long = "v4.local.".to_owned() + &"A".repeat(12_000);
    let r = s.as_user("/", &long).await;
    assert!(matches!(r.status, 302 | 400 | 431 | 503), "{}", r.status);
    assert_eq!(s.upstream.hits(), hits, "no hostile token was forwarded");
    assert_eq!(s.as_user("/", &good).await.status, 200);
}

#[tokio::test]
async fn websocket_upgrade_is_decided_like_any_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = stack().await;
    let token = s.keyward.mint("dave", "dev", "10m", None);
    let upgrade = |cookie: Option<String>| {
        let mut req = "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n".to_owned();
        if let Some(c) = cookie {
            req.push_str(&format!("Cookie: keyward_session={c}\r\n"));
        }
        req.push_str("\r\n");
        req
    };
    let mut ws = tokio::net::TcpStream::connect(s.haproxy.addr)
        .await
        .unwrap();
    ws.write_all(upgrade(Some(token)).as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = ws.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    ws.write_all(b"ping-frame").await.unwrap();
    let n = ws.read(&mut buf).await.unwrap();
    assert_eq!(
        &buf[..n],
        b"ping-frame",
        "the tunnel is open after the upgrade"
    );

    let hits = s.upstream.hits();
    let mut ws = tokio::net::TcpStream::connect(s.haproxy.addr)
        .await
        .unwrap();
    ws.write_all(upgrade(None).as_bytes()).await.unwrap();
    let n = ws.read(&mut buf).await.unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_eq!(s.upstream.hits(), hits);
}

#[tokio::test]
async fn other_readings_of_a_path_cannot_reach_a_stricter_rule() {
    let s = stack().await;
    let dave = s.keyward.mint("dave", "dev", "10m", None);
    let hits = s.upstream.hits();
    // Literally each falls under "app" or "health"; to Tomcat (parameters dropped),
    // nginx or WSGI (%2F decoded), IIS (%5C decoded, \ as /) or a case-insensitive
    // router (IIS, ASP.NET Core, Express) each is /admin/... HAProxy sends the path
    // to keyward as the client wrote it.
    for path in [
        "/admin;x/users",
        "/app/..;/admin/",
        "/app/..%2Fadmin",
        "/app%2F..%2Fadmin/users",
        "/app/..%5cadmin",
        // IIS keeps `;`: `..;` is a segment the next `..` removes.
        "/admin\\..;\\..\\users",
        "/ADMIN/users",
        "/Admin",
    ] {
        let r = s
            .counts(&decision("deny", "forbidden"), s.as_user(path, &dave))
            .await;
        assert_eq!(r.status, 403, "{path}");
    }
    for path in [
        "/healthz/..;/admin",
        "/healthz\\..\\admin",
        "/healthz/..%2fadmin",
        "/healthz/..%5Cadmin",
    ] {
        let r = s.get(path, &[("Host", "app.test")]).await;
        assert_eq!(r.status, 401, "{path}: {r:?}");
    }
    assert_eq!(s.upstream.hits(), hits, "none was forwarded");
    // Parameters that stay within the rule pass, as sent.
    let r = s.as_user("/reports;jsessionid=1", &dave).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.starts_with("GET /reports;jsessionid=1 "),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_h2c_upgrade_cannot_open_a_tunnel_past_the_policy() {
    use tokio::io::AsyncWriteExt;
    let s = stack().await;
    let hits = s.upstream.hits();
    // Upgrade on the public route, then a request for /admin on the same connection. Had
    // HAProxy forwarded the upgrade, the application's 101 would have made the connection
    // a tunnel, and /admin would have reached it without a decision.
    let mut c = tokio::net::TcpStream::connect(s.haproxy.addr)
        .await
        .unwrap();
    c.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: TLS/1.2, H2C\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    let first = read_response(&mut c).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    for name in ["upgrade", "http2-settings"] {
        assert_eq!(
            header_of(&first, name),
            None,
            "it reached the application: {first}"
        );
    }
    c.write_all(b"GET /admin HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut c).await;
    assert!(second.starts_with("HTTP/1.1 401"), "{second}");
    assert_eq!(s.upstream.hits(), hits + 1, "only /healthz was forwarded");

    // A browser-style WebSocket upgrade is untouched (see the test above); so is a plain
    // request that only names h2c in another header.
    let r = s.get("/healthz", &[("X-Note", "h2c")]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn revocation_applies_on_the_next_request_and_survives_restart() {
    let mut s = stack().await;
    let sess = s.keyward.mint("erin", "dev", "10m", Some("dev-e1"));
    let other = s.keyward.mint("erin", "dev", "10m", Some("dev-e2"));
    let frank = s.keyward.mint("frank", "dev", "10m", Some("dev-f1"));
    for t in [&sess, &other, &frank] {
        assert_eq!(s.as_user("/", t).await.status, 200);
    }
    let sid = header_of(&s.as_user("/", &sess).await.body, "x-keyward-session").unwrap();

    let out = s.keyward.cli_ok(&["sessions", "revoke", "--session", &sid]);
    assert!(out.contains("in force on the local agent now"), "{out}");
    // The agent says when it last read the store (an outage would show as its age).
    let read = s
        .keyward
        .metric("keyward_revocations_read_timestamp_seconds")
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - read).abs() < 30.0, "read at {read}, now {now}");
    let r = s
        .counts(&decision("login", "revoked"), s.as_user("/", &sess))
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        s.as_user("/", &other).await.status,
        200,
        "only that session"
    );

    s.keyward
        .cli_ok(&["sessions", "revoke", "--device", "dev-f1"]);
    assert_eq!(s.as_user("/", &frank).await.status, 302);
    s.keyward.cli_ok(&["sessions", "revoke", "--user", "erin"]);
    assert_eq!(s.as_user("/", &other).await.status, 302);
    // Signing in again after the revocation works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = s.keyward.mint("erin", "dev", "10m", Some("dev-e2"));
    assert_eq!(s.as_user("/", &fresh).await.status, 200);

    // A portal session names its user by id (`local:…`), the operator by name: the
    // name revokes the id's sessions.
    s.keyward.cli_ok(&["users", "invite", "grace"]);
    let list = s.keyward.cli_ok(&["users", "list"]);
    let grace_id = list
        .lines()
        .find(|l| l.starts_with("grace "))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("grace in {list}"))
        .to_owned();
    assert!(grace_id.starts_with("local:"), "{list}");
    let grace = s.keyward.mint(&grace_id, "dev", "10m", Some("dev-g1"));
    assert_eq!(s.as_user("/", &grace).await.status, 200);
    s.keyward.cli_ok(&["sessions", "revoke", "--user", "grace"]);
    assert_eq!(s.as_user("/", &grace).await.status, 302);
    // A name no user has still revokes the tokens minted with it, and says so.
    let out = s
        .keyward
        .cli_ok(&["sessions", "revoke", "--user", "nobody"]);
    assert!(out.contains("no user named `nobody`"), "{out}");

    // Kill -9 and restart: revocations come back from the store.
    s.keyward.kill();
    s.keyward.restart().await;
    wait_for_ok(
        s.haproxy.addr,
        "/healthz",
        Duration::from_secs(15),
        "agent back",
    )
    .await;
    for t in [&sess, &other, &frank, &grace] {
        assert_eq!(
            s.as_user("/", t).await.status,
            302,
            "revocation lost on restart"
        );
    }
    assert_eq!(s.as_user("/", &fresh).await.status, 200);
    let audit = s.keyward.audit();
    // session, device, erin; grace's id and name; nobody.
    assert_eq!(audit.matches("\"event\":\"revoked\"").count(), 6, "{audit}");
}

#[tokio::test]
async fn key_rotation_and_retirement_while_traffic_flows() {
    let s = stack().await;
    let old = s.keyward.mint("gina", "dev", "10m", None);
    let addr = s.haproxy.addr;

    // Steady traffic with the old token while keys rotate.
    let old2 = old.clone();
    let traffic = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..60 {
            let r = get(addr, "/", &[("Cookie", &cookie(&old2)), BROWSER])
                .await
                .unwrap();
            statuses.push(r.status);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        statuses
    });
    s.keyward.cli_ok(&["keys", "rotate"]);
    let statuses = traffic.await.unwrap();
    assert!(
        statuses.iter().all(|&c| c == 200),
        "old sessions stay valid through a rotation: {statuses:?}"
    );

    // New tokens are sealed with the new key once the agent has it.
    let new = s.keyward.mint("gina", "dev", "10m", None);
    eventually(Duration::from_secs(10), "new key in the agent", || async {
        (s.as_user("/", &new).await.status == 200).then_some(())
    })
    .await;
    // The agent kept the old session cached through the new ring: no miss.
    let misses = s.keyward.metric("keyward_session_cache_misses_total").await;
    assert_eq!(s.as_user("/", &old).await.status, 200);
    assert_eq!(
        s.keyward.metric("keyward_session_cache_misses_total").await,
        misses,
        "a rotation costs no cache misses"
    );

    // Retiring the old key ends the sessions it sealed; the new ones carry on.
    let list = s.keyward.cli_ok(&["keys", "list"]);
    let old_id = list
        .lines()
        .find(|l| l.starts_with("session") && l.contains("verify"))
        .and_then(|l| l.split_whitespace().last())
        .expect("a verify-only session key")
        .to_owned();
    s.keyward.cli_ok(&["keys", "retire", &old_id]);
    eventually(Duration::from_secs(10), "retired key refused", || async {
        (s.as_user("/", &old).await.status == 302).then_some(())
    })
    .await;
    assert_eq!(s.as_user("/", &new).await.status, 200);

    // The JWKS behind HAProxy lists the assertion keys; the upstream assertion verifies.
    let jwks = get(addr, "/.well-known/keyward/jwks.json", &[])
        .await
        .unwrap();
    assert_eq!(jwks.status, 200);
    let jwks: serde_json::Value = serde_json::from_str(&jwks.body).unwrap();
    let r = s.as_user("/reports", &new).await;
    let jwt = header_of(&r.body, "x-keyward-assertion").unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("kid in JWKS");
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        key["x"].as_str().unwrap(),
        key["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["app.test"]);
    v.set_issuer(&["https://auth.test"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &decoding, &v)
        .expect("assertion verifies against the JWKS");
    assert_eq!(claims.claims["sub"], "gina");
    let _ = &s.upstream;
}

/// A dashboard URL with a long query (Kibana's or Grafana's state in the query string).
fn long_query(bytes: usize) -> String {
    let unit = "_g=(filters:!(),refreshInterval:(pause:!t,value:0),time:(from:now-15m,to:now))&";
    unit.repeat(bytes / unit.len() + 1)[..bytes].to_owned()
}

#[tokio::test]
async fn long_urls_still_get_a_login_redirect() {
    let s = stack().await;
    // Fits: the whole URL comes back after sign-in.
    let q = long_query(2_000);
    let r = s
        .counts(
            &decision("login", "no_session"),
            s.get(&format!("/dash?{q}"), &[BROWSER]),
        )
        .await;
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap();
    assert!(
        location
            .starts_with("https://auth.test/.keyward/login?rd=http%3A%2F%2Fapp%2Etest%2Fdash%3F"),
        "{location}"
    );
    assert!(location.len() > 2_000, "the query is kept");
    // Too long to carry back whole (HAProxy accepts it, its percent-encoding would not fit
    // in one SPOP frame): still a login redirect, back to the path without the query.
    for n in [5_500, 9_000, 12_000] {
        let q = long_query(n);
        let r = s
            .counts(
                &decision("login", "no_session"),
                s.get(&format!("/dash/x?{q}"), &[BROWSER]),
            )
            .await;
        assert_eq!(r.status, 302, "query of {n} bytes");
        assert_eq!(
            r.header("location"),
            Some("https://auth.test/.keyward/login?rd=http%3A%2F%2Fapp%2Etest%2Fdash%2Fx"),
            "query of {n} bytes"
        );
    }
    // A path that long on its own: back to the host's root.
    let path = format!("/{}", "segment/".repeat(1_000));
    let r = s.get(&path, &[BROWSER]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://auth.test/.keyward/login?rd=http%3A%2F%2Fapp%2Etest%2F")
    );
}

#[tokio::test]
async fn ambiguous_requests_are_refused_and_the_apps_own_credentials_pass() {
    let s = stack().await;
    let alice = s.keyward.mint("alice", "dev", "10m", None);
    let hits = s.upstream.hits();
    // One Host header naming two hosts: HAProxy's routing and keyward's policy could each
    // read another one.
    for host in [
        "app.test,api.test",
        "app.test, api.test",
        "user@app.test",
        "app.test:8o",
    ] {
        let r = s
            .get("/", &[("Host", host), ("Cookie", &cookie(&alice))])
            .await;
        // 2.6 passes these on and keyward denies them; 3.x refuses some itself.
        assert!(matches!(r.status, 400 | 403), "{host}: {}", r.status);
    }
    // Two Cookie or two Authorization headers: keyward reads the last, so HAProxy refuses.
    let bearer = format!("Bearer {alice}");
    for headers in [
        [("Cookie", "keyward_session=x"), ("Cookie", &cookie(&alice))],
        [("Authorization", "Basic eDp5"), ("Authorization", &bearer)],
    ] {
        let r = s.get("/", &headers).await;
        assert_eq!(r.status, 400, "{headers:?}");
    }
    assert_eq!(s.upstream.hits(), hits, "nothing ambiguous was forwarded");

    // The application's own bearer token beside keyward's cookie: the cookie decides and
    // the application gets its header.
    let r = s
        .get(
            "/",
            &[
                ("Cookie", &cookie(&alice)),
                ("Authorization", "Bearer eyJ.app.jwt"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        header_of(&r.body, "x-keyward-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        header_of(&r.body, "authorization").as_deref(),
        Some("Bearer eyJ.app.jwt")
    );
    // keyward's token, the scheme in lower case: used, and not forwarded.
    let lower = format!("bearer {alice}");
    let r = s
        .get("/v1/x", &[("Host", "api.test"), ("Authorization", &lower)])
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(header_of(&r.body, "authorization"), None, "{}", r.body);
    assert!(!r.body.contains(&alice), "the token reached the upstream");
}
