//! Tunnels end with their session: WebSocket connections through HAProxy 2.6 (shipped
//! configuration, its runtime API on a Unix socket) and the real `keyward` binary,
//! which ends them with `shutdown session` when their session is revoked, expires, or
//! its key is retired, and leaves every other tunnel alone.

use std::path::Path;
use std::time::{Duration, Instant};

use keyward_tests::eventually;
use keyward_tests::haproxy::{API_SOCKET, Haproxy, Wiring};
use keyward_tests::http::read_response;
use keyward_tests::keyward::Keyward;
use keyward_tests::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POLICY: &str = r#"
[[rule]]
name = "public"
paths = ["/public"]
access = "public"

[[rule]]
name = "app"
hosts = ["app.test"]
access = "authenticated"
"#;

struct Stack {
    keyward: Keyward,
    haproxy: Haproxy,
    _upstream: Upstream,
    _api_dir: tempfile::TempDir,
}

async fn stack() -> Stack {
    stack_with(true).await
}

/// keyward and HAProxy; `reachable`: keyward's `haproxy_api` is HAProxy's socket, else
/// a path nobody listens on.
async fn stack_with(reachable: bool) -> Stack {
    stack_with_edits(reachable, Vec::new(), "").await
}

/// [`stack_with`], with more `edits` of haproxy.cfg and `tunnels` keys.
async fn stack_with_edits(
    reachable: bool,
    mut edits: Vec<(String, String)>,
    tunnels: &str,
) -> Stack {
    let api_dir = tempfile::tempdir().unwrap();
    let api = api_dir.path().join("haproxy-api.sock");
    let keyward_api = if reachable {
        api.clone()
    } else {
        api_dir.path().join("nobody.sock")
    };
    let keyward = Keyward::start(
        POLICY,
        &format!(
            "[tunnels]\nhaproxy_api = \"{}\"\ncheck_interval = \"200ms\"\n{tunnels}",
            keyward_api.display()
        ),
    )
    .await;
    let upstream = Upstream::start().await;
    let haproxy = Haproxy::start(&Wiring {
        spoa: keyward.spoa.to_string(),
        upstream: upstream.addr,
        portal: Some(keyward.portal),
        edits: {
            edits.push((API_SOCKET.into(), format!("\"{}\"", api.display())));
            edits
        },
    })
    .await;
    wait_for_socket(&api).await;
    Stack {
        keyward,
        haproxy,
        _upstream: upstream,
        _api_dir: api_dir,
    }
}

async fn wait_for_socket(path: &Path) {
    eventually(Duration::from_secs(10), "HAProxy's API socket", || async {
        path.exists().then_some(())
    })
    .await;
}

/// A WebSocket through HAProxy on a new connection: see [`upgrade`].
async fn open(s: &Stack, path: &str, token: Option<&str>) -> TcpStream {
    let mut ws = TcpStream::connect(s.haproxy.addr).await.unwrap();
    upgrade(&mut ws, path, token, "").await;
    ws
}

/// A WebSocket handshake on `ws` (with `token`'s session and the `extra` header lines),
/// answered 101, and an echo through the tunnel.
async fn upgrade(ws: &mut TcpStream, path: &str, token: Option<&str>, extra: &str) {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Cookie: keyward_session={t}\r\n"));
    }
    req.push_str("\r\n");
    ws.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = ws.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(echoes(ws).await, "the tunnel carries bytes");
}

/// Whether the tunnel still carries bytes both ways.
async fn echoes(ws: &mut TcpStream) -> bool {
    if ws.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(5), ws.read(&mut buf)).await {
        Ok(Ok(n)) => &buf[..n] == b"ping",
        _ => false,
    }
}

/// Waits for HAProxy to close `ws` (reads EOF or a reset), at most `limit`; returns
/// how long it took.
async fn closed_within(ws: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), ws.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the tunnel was still open after {limit:?}"),
        }
    }
}

fn closed_metric(reason: &str) -> String {
    format!("keyward_tunnels_closed_total{{reason=\"{reason}\"}}")
}

/// Waits (up to 5 s) until `n` tunnels were counted as closed for `reason`: the count
/// follows HAProxy's answer, which can reach keyward after the client saw the close.
async fn counted(s: &Stack, reason: &str, n: f64) {
    let what = format!("{n} tunnels counted {reason}");
    eventually(Duration::from_secs(5), &what, || async {
        (s.keyward.metric(&closed_metric(reason)).await == n).then_some(())
    })
    .await;
}

/// Revokes `user`'s sessions and waits for HAProxy to close `conn`, then for the count.
async fn revoke_and_see_closed(s: &Stack, user: &str, conn: &mut TcpStream) {
    s.keyward.cli_ok(&["sessions", "revoke", "--user", user]);
    closed_within(conn, Duration::from_secs(10)).await;
    counted(s, "revoked", 1.0).await;
}

#[tokio::test]
async fn revoking_a_session_ends_its_tunnel_and_no_other() {
    let s = stack().await;
    // The API is checked at start, before any tunnel needs it.
    eventually(Duration::from_secs(5), "the API reported up", || async {
        (s.keyward.metric("keyward_tunnels_api_up").await == 1.0).then_some(())
    })
    .await;
    let erin = s.keyward.mint("erin", "dev", "10m", Some("dev-e1"));
    let frank = s.keyward.mint("frank", "dev", "10m", Some("dev-f1"));
    let mut erin_ws = open(&s, "/ws", Some(&erin)).await;
    let mut erin_ws2 = open(&s, "/ws", Some(&erin)).await;
    let mut frank_ws = open(&s, "/ws", Some(&frank)).await;
    // Anonymous, on a public route: nothing to end it with, and nothing ends it.
    let mut public_ws = open(&s, "/public/ws", None).await;
    assert_eq!(s.keyward.metric("keyward_tunnels_tracked").await, 3.0);

    let revoked = Instant::now();
    s.keyward.cli_ok(&["sessions", "revoke", "--user", "erin"]);
    let took = closed_within(&mut erin_ws, Duration::from_secs(10)).await;
    closed_within(&mut erin_ws2, Duration::from_secs(10)).await;
    println!(
        "a revoked session's tunnel closed {:?} after the CLI returned ({:?} after it began)",
        took,
        revoked.elapsed()
    );
    assert!(echoes(&mut frank_ws).await, "another user's tunnel stays");
    assert!(echoes(&mut public_ws).await, "an anonymous tunnel stays");
    counted(&s, "revoked", 2.0).await;
    let audit = eventually(
        Duration::from_secs(5),
        "two tunnel_closed lines",
        || async {
            let audit = s.keyward.audit();
            (audit.matches("\"tunnel_closed\"").count() == 2).then_some(audit)
        },
    )
    .await;
    let lines: Vec<_> = audit
        .lines()
        .filter(|l| l.contains("\"tunnel_closed\""))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l.contains("dev-e1") && l.contains("revoked"))
    );
    assert!(!audit.contains(&erin), "no token in the audit log");

    // A device revoked: its tunnel ends too.
    s.keyward
        .cli_ok(&["sessions", "revoke", "--device", "dev-f1"]);
    closed_within(&mut frank_ws, Duration::from_secs(10)).await;
    assert!(echoes(&mut public_ws).await);
    eventually(Duration::from_secs(5), "tunnels forgotten", || async {
        (s.keyward.metric("keyward_tunnels_tracked").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_later_stream_on_the_same_connection_is_not_mistaken_for_a_revoked_one() {
    // On one keep-alive connection: Kim's request with an `Upgrade` header the
    // application does not take (200, the connection goes on), then Lee's WebSocket.
    // Both are remembered with the same client address. Revoking Kim must not end
    // Lee's tunnel: the stream ids differ.
    let s = stack().await;
    let kim = s.keyward.mint("kim", "dev", "10m", None);
    let lee = s.keyward.mint("lee", "dev", "10m", None);
    let mut c = TcpStream::connect(s.haproxy.addr).await.unwrap();
    c.write_all(
        format!(
            "GET /page HTTP/1.1\r\nHost: app.test\r\nUpgrade: example/1\r\nConnection: Upgrade\r\nCookie: keyward_session={kim}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let first = read_response(&mut c).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    upgrade(&mut c, "/ws", Some(&lee), "").await;
    assert_eq!(s.keyward.metric("keyward_tunnels_tracked").await, 2.0);

    s.keyward.cli_ok(&["sessions", "revoke", "--user", "kim"]);
    eventually(Duration::from_secs(10), "Kim's entry forgotten", || async {
        (s.keyward.metric("keyward_tunnels_tracked").await == 1.0).then_some(())
    })
    .await;
    assert!(echoes(&mut c).await, "Lee's tunnel stays");
    assert_eq!(s.keyward.metric(&closed_metric("revoked")).await, 0.0);
    s.keyward.cli_ok(&["sessions", "revoke", "--user", "lee"]);
    closed_within(&mut c, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_tunnel_ends_when_its_session_expires() {
    let s = stack().await;
    let short = s.keyward.mint("gina", "dev", "3s", None);
    let long = s.keyward.mint("hank", "dev", "10m", None);
    let mut short_ws = open(&s, "/ws", Some(&short)).await;
    let mut long_ws = open(&s, "/ws", Some(&long)).await;
    // Busy all along: HAProxy's `timeout tunnel` (idle) never ends it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = false;
    while Instant::now() < deadline {
        if !echoes(&mut short_ws).await {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the expired session's tunnel was still open");
    assert!(echoes(&mut long_ws).await, "the other tunnel stays");
    counted(&s, "expired", 1.0).await;
}

#[tokio::test]
async fn tunnels_that_close_by_themselves_are_forgotten() {
    let s = stack().await;
    let ivy = s.keyward.mint("ivy", "dev", "10m", None);
    // A tunnel the client closes: no `shutdown session` needed, nothing counted.
    let ws = open(&s, "/ws", Some(&ivy)).await;
    drop(ws);
    let mut kept = open(&s, "/ws", Some(&ivy)).await;
    assert_eq!(s.keyward.metric("keyward_tunnels_tracked").await, 2.0);
    s.keyward.cli_ok(&["sessions", "revoke", "--user", "ivy"]);
    closed_within(&mut kept, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(5), "both forgotten", || async {
        (s.keyward.metric("keyward_tunnels_tracked").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(
        s.keyward.metric(&closed_metric("revoked")).await,
        1.0,
        "only the open one was ended"
    );
    assert_eq!(s.keyward.metric("keyward_tunnels_api_up").await, 1.0);
}

#[tokio::test]
async fn an_unreachable_api_is_counted_and_retried() {
    // keyward pointed at a socket nobody listens on: the tunnel cannot be ended, the
    // failure is counted and retried, and the tunnel stays remembered.
    let s = stack_with(false).await;
    let jo = s.keyward.mint("jo", "dev", "10m", None);
    let mut ws = open(&s, "/ws", Some(&jo)).await;
    s.keyward.cli_ok(&["sessions", "revoke", "--user", "jo"]);
    eventually(Duration::from_secs(10), "API errors counted", || async {
        (s.keyward.metric("keyward_tunnels_api_errors_total").await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(s.keyward.metric("keyward_tunnels_api_up").await, 0.0);
    assert_eq!(s.keyward.metric("keyward_tunnels_tracked").await, 1.0);
    // The revoked session gets nothing new, whatever happens to the tunnel.
    let r = keyward_tests::http::get(
        s.haproxy.addr,
        "/",
        &[
            ("Host", "app.test"),
            ("Cookie", &format!("keyward_session={jo}")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    assert!(echoes(&mut ws).await, "HAProxy could not be told");
}

#[test]
fn the_upgrade_message_carries_every_argument_of_the_request_message() {
    let spoe =
        std::fs::read_to_string(keyward_tests::repo_root().join("haproxy/keyward-spoe.conf"))
            .unwrap();
    let args = |message: &str| -> Vec<String> {
        let at = spoe
            .find(&format!("spoe-message {message}\n"))
            .unwrap_or_else(|| panic!("no {message}"));
        let line = spoe[at..].lines().nth(1).unwrap().trim();
        line.strip_prefix("args ")
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let request = args("keyward-request");
    let mut upgrade = args("keyward-upgrade");
    let extra: Vec<_> = upgrade
        .iter()
        .filter(|a| !request.contains(a))
        .cloned()
        .collect();
    assert_eq!(
        extra,
        [
            "stream=var(txn.kw_stream)",
            "conn_src=fc_src",
            "conn_port=fc_src_port"
        ]
    );
    upgrade.retain(|a| request.contains(a));
    assert_eq!(upgrade, request);
}

/// HTTP/2 WebSockets (RFC 8441 extended CONNECT) share one client connection, so the
/// client address names the connection, not the tunnel: only the stream id tells them
/// apart. Revoking one session resets its stream and leaves the other, and the
/// connection, open.
#[tokio::test]
async fn http2_websockets_on_one_connection_end_one_by_one() {
    let s = stack_with_edits(true, h2_frontend(), "").await;
    let mia = s.keyward.mint("mia", "dev", "10m", None);
    let ned = s.keyward.mint("ned", "dev", "10m", None);
    let mut client = h2_client(&s).await;
    let (mut mia_send, mut mia_body) = h2_websocket(&mut client, &mia).await.unwrap();
    let (mut ned_send, mut ned_body) = h2_websocket(&mut client, &ned).await.unwrap();
    assert_eq!(s.keyward.metric("keyward_tunnels_tracked").await, 2.0);

    s.keyward.cli_ok(&["sessions", "revoke", "--user", "mia"]);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match mia_body.data().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "Mia's stream was still open after 10 s");
    let _ = mia_send.send_data(bytes::Bytes::from_static(b"x"), false);
    // Ned's stream, on the same connection, still echoes.
    ned_send
        .send_data(bytes::Bytes::from_static(b"pong"), false)
        .unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), ned_body.data())
        .await
        .expect("Ned's tunnel answers")
        .unwrap()
        .unwrap();
    assert_eq!(&echo[..], b"pong");
    counted(&s, "revoked", 1.0).await;
}

/// `http-request set-src` (a trusted proxy's header) changes `src` for the policy; the
/// runtime API still shows the connection's own address, which is what keyward matches.
#[tokio::test]
async fn a_rewritten_source_address_does_not_hide_the_tunnel() {
    let s = stack_with_edits(
        true,
        vec![(
            "    http-request del-header ^x[-_]keyward[-_] -m reg\n".into(),
            "    http-request set-src req.hdr(x-real-ip) if { req.hdr(x-real-ip) -m found }\n    http-request del-header ^x[-_]keyward[-_] -m reg\n".into(),
        )],
        "",
    )
    .await;
    let oli = s.keyward.mint("oli", "dev", "10m", None);
    let mut ws = TcpStream::connect(s.haproxy.addr).await.unwrap();
    upgrade(&mut ws, "/ws", Some(&oli), "X-Real-IP: 192.0.2.9\r\n").await;
    revoke_and_see_closed(&s, "oli", &mut ws).await;
}

/// A CONNECT the application answers with 2xx is a tunnel as well.
#[tokio::test]
async fn a_connect_tunnel_ends_with_its_session() {
    let s = stack().await;
    let pat = s.keyward.mint("pat", "dev", "10m", None);
    let mut c = TcpStream::connect(s.haproxy.addr).await.unwrap();
    c.write_all(
        format!(
            "CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\nCookie: keyward_session={pat}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(s.keyward.metric("keyward_tunnels_tracked").await, 1.0);
    revoke_and_see_closed(&s, "pat", &mut c).await;
}

/// WebSockets closed on an HTTP/2 connection that stays open leave entries behind (the
/// connection is still listed). Once the table is full, every check looks at stream ids
/// and forgets them, so a new WebSocket finds room.
#[tokio::test]
async fn closed_http2_websockets_make_room_once_the_table_is_full() {
    let s = stack_with_edits(true, h2_frontend(), "max_tracked = 2\n").await;
    let quinn = s.keyward.mint("quinn", "dev", "10m", None);
    let mut client = h2_client(&s).await;
    let first = h2_websocket(&mut client, &quinn).await.expect("first");
    drop(first);
    let _second = h2_websocket(&mut client, &quinn).await.expect("second");
    eventually(
        Duration::from_secs(10),
        "the closed one forgotten",
        || async { (s.keyward.metric("keyward_tunnels_tracked").await == 1.0).then_some(()) },
    )
    .await;
    let third = h2_websocket(&mut client, &quinn).await;
    assert!(third.is_ok(), "room for a new WebSocket: {third:?}");
    assert_eq!(s.keyward.metric("keyward_tunnels_refused_total").await, 0.0);
}

/// The frontend speaks HTTP/2 in clear text.
fn h2_frontend() -> Vec<(String, String)> {
    vec![(
        "    bind \"${KEYWARD_HTTP_BIND-127.0.0.1:8080}\"\n".into(),
        "    bind \"${KEYWARD_HTTP_BIND-127.0.0.1:8080}\" proto h2\n".into(),
    )]
}

type H2Client = h2::client::SendRequest<bytes::Bytes>;
type H2Tunnel = (h2::SendStream<bytes::Bytes>, h2::RecvStream);

/// An HTTP/2 connection to HAProxy, past its SETTINGS (RFC 8441 offered).
async fn h2_client(s: &Stack) -> H2Client {
    let tcp = TcpStream::connect(s.haproxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // One ordinary request first: its answer comes after HAProxy's SETTINGS.
    let get = http::Request::get("http://app.test/public")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(get, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    let client = client.ready().await.unwrap();
    assert!(
        client.is_extended_connect_protocol_enabled(),
        "HAProxy offers RFC 8441"
    );
    client
}

/// A WebSocket on `client` (extended CONNECT) with `token`'s session, checked with an
/// echo; `Err(status)` when HAProxy refuses it.
async fn h2_websocket(client: &mut H2Client, token: &str) -> Result<H2Tunnel, u16> {
    let req = http::Request::builder()
        .method("CONNECT")
        .uri("http://app.test/ws")
        .header("sec-websocket-version", "13")
        .header("cookie", format!("keyward_session={token}"))
        .extension(h2::ext::Protocol::from("websocket"))
        .body(())
        .unwrap();
    let ready = client.clone().ready().await.unwrap();
    *client = ready;
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    if resp.status() != 200 {
        return Err(resp.status().as_u16());
    }
    let mut body = resp.into_body();
    send.send_data(bytes::Bytes::from_static(b"ping"), false)
        .unwrap();
    let echo = body.data().await.unwrap().unwrap();
    assert_eq!(&echo[..], b"ping");
    Ok((send, body))
}
