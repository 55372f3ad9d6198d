//! Browser end to end: Debian's Chromium, driven by playwright-core with the DevTools
//! virtual authenticator, through real HAProxy and keyward. The flow itself is
//! `tests/node/browser-flow.mjs`: invite -> enroll -> protected page shows identity ->
//! a WebSocket open in another tab (the demo page's own, or one the flow opens) -> sign
//! out, which closes the WebSocket -> redirected to sign-in -> sign in again
//! (usernameless) -> revoke the device from "my devices" -> denied. Screenshots of each page are kept under
//! `target/test-artifacts/browser/<mode>/`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use keyward_tests::haproxy::{API_SOCKET, Haproxy, Wiring};
use keyward_tests::keyward::Keyward;
use keyward_tests::oidc::OidcProvider;
use keyward_tests::process::Proc;
use keyward_tests::upstream::Upstream;
use keyward_tests::{eventually, free_port, keyward_bin, repo_root};

fn node_dir() -> PathBuf {
    keyward_tests::oidc::require_node_modules();
    assert!(
        std::path::Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: apt-get install chromium (the README's test command does)"
    );
    keyward_tests::oidc::node_dir()
}

fn artifacts(mode: &str) -> PathBuf {
    let dir = repo_root().join("target/test-artifacts/browser").join(mode);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs the browser flow with `args` (JSON); panics with its output unless it passes.
pub fn run_flow(args: serde_json::Value) -> String {
    let out = Command::new("node")
        .arg("browser-flow.mjs")
        .arg(args.to_string())
        .current_dir(node_dir())
        .output()
        .expect("node is installed (the README's test command installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "browser flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The README's main job: `keyward demo` on a fresh state directory, its printed
/// invite link used by a person with a browser and a platform authenticator.
#[tokio::test(flavor = "multi_thread")]
async fn demo_invite_enroll_sign_in_sign_out_revoke_in_chromium() {
    let state = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let log_path = state.path().join("demo.out");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut demo = Proc::spawn(
        "keyward demo",
        Command::new(keyward_bin())
            .args(["demo", "--port", &port.to_string(), "--state-dir"])
            .arg(state.path().join("state"))
            .stdout(Stdio::from(log))
            .stderr(Stdio::null()),
    );
    let prefix = format!("http://localhost:{port}/.keyward/enroll?invite=");
    let invite = eventually(Duration::from_secs(30), "the demo's invite link", || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let found = text
            .split_whitespace()
            .find(|w| w.starts_with(&prefix))
            .map(str::to_owned);
        async move { found }
    })
    .await;
    keyward_tests::wait_listening(keyward_tests::loopback(port), "the demo's HAProxy").await;

    let out = run_flow(serde_json::json!({
        "base": format!("http://localhost:{port}"),
        "invite": invite,
        "mode": "invite",
        "assertion": true,
        "websocket": "page",
        "shots": artifacts("invite"),
    }));
    assert!(out.contains("\"name\":\"done\""), "{out}");
    assert!(out.contains("websocket closed at sign-out"), "{out}");

    let audit = std::fs::read_to_string(state.path().join("state/audit.jsonl")).unwrap_or_default();
    audit_has_events_but_no_names(
        &audit,
        &["enrolled", "login", "logout", "revoked", "tunnel_closed"],
        "demo@example.test",
    );

    // Ctrl-C (SIGINT) stops keyward, HAProxy and the demo app.
    demo.signal("INT");
    assert!(
        demo.wait_exit(Duration::from_secs(15)).await.is_some(),
        "the demo did not stop on SIGINT"
    );
    eventually(
        Duration::from_secs(10),
        "HAProxy to stop with the demo",
        || async move {
            tokio::net::TcpStream::connect(keyward_tests::loopback(port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

/// keyward (with `identity`), the provider (npm `oidc-provider`, account `alice` in
/// groups `admins` and `eng`), an echo upstream and HAProxy on `port`.
struct IdpStack {
    keyward: Keyward,
    _idp: OidcProvider,
    _app: Upstream,
    _haproxy: Haproxy,
    /// HAProxy's runtime API socket, through which keyward ends WebSockets.
    _api: tempfile::TempDir,
}

async fn idp_stack(port: u16, identity: &str) -> IdpStack {
    let base = format!("http://localhost:{port}");
    let redirect = format!("{base}/.keyward/oidc/callback");
    let clients = serde_json::json!([{
        "client_id": "keyward",
        "client_secret": "browser-test-secret",
        "redirect_uris": [redirect],
        "id_token_signed_response_alg": "ES256",
    }]);
    let idp = OidcProvider::start_with(&clients.to_string(), &[("OIDC_AUTO_LOGIN", "alice")]).await;
    let portal = format!(
        r#"login_url = "{base}/.keyward/login"
rp_id = "localhost"
origins = ["{base}"]
identity = "{identity}""#
    );
    let oidc = format!(
        r#"[oidc]
issuer = "{issuer}"
client_id = "keyward"
client_secret = "browser-test-secret"
redirect_url = "{redirect}"
scopes = ["openid", "email", "profile", "groups"]
role_map = {{ admins = ["admin"], eng = ["dev"] }}"#,
        issuer = idp.issuer
    );
    let api = tempfile::tempdir().expect("tempdir");
    let socket = api.path().join("haproxy-api.sock");
    let tunnels = format!(
        "[tunnels]\nhaproxy_api = \"{}\"\ncheck_interval = \"200ms\"",
        socket.display()
    );
    let policy = "version = 1\n[[rule]]\nname = \"all\"\naccess = \"authenticated\"\n";
    let keyward = Keyward::start_with(policy, &portal, &format!("{oidc}\n{tunnels}")).await;
    let app = Upstream::start().await;
    let haproxy = Haproxy::start_on(
        &Wiring {
            spoa: keyward.spoa.to_string(),
            upstream: app.addr,
            portal: Some(keyward.portal),
            edits: vec![(API_SOCKET.into(), format!("\"{}\"", socket.display()))],
        },
        port,
    )
    .await;
    IdpStack {
        keyward,
        _idp: idp,
        _app: app,
        _haproxy: haproxy,
        _api: api,
    }
}

/// The audit log has `events`, and names devices, never `person` or a token.
fn audit_has_events_but_no_names(audit: &str, events: &[&str], person: &str) {
    for event in events {
        assert!(
            audit.contains(&format!("\"{event}\"")),
            "audit lacks {event}:\n{audit}"
        );
    }
    assert!(!audit.contains(person), "{person} reached the audit log");
    assert!(
        !audit.contains("v4.local."),
        "a token reached the audit log"
    );
}

/// The IdP mode: the provider says who it is, then the passkey of the same person
/// proves it, at every sign-in. The IdP's groups become roles.
#[tokio::test(flavor = "multi_thread")]
async fn idp_then_passkey_enroll_sign_in_sign_out_revoke_in_chromium() {
    let port = free_port();
    let stack = idp_stack(port, "oidc").await;
    let out = run_flow(serde_json::json!({
        "base": format!("http://localhost:{port}"),
        "mode": "oidc",
        "roles": "admin,dev",
        "websocket": true,
        "shots": artifacts("oidc"),
    }));
    assert!(out.contains("\"name\":\"done\""), "{out}");
    assert!(out.contains("websocket closed at sign-out"), "{out}");
    assert!(out.contains("IdP alone refused a second key"), "{out}");
    audit_has_events_but_no_names(
        &stack.keyward.audit(),
        &[
            "idp_verified",
            "enrolled",
            "login",
            "revoked",
            "tunnel_closed",
        ],
        "alice",
    );
}

/// The IdP-enrolls mode: the IdP vouches for a person once, to enroll a device; sign-in
/// is the passkey alone.
#[tokio::test(flavor = "multi_thread")]
async fn idp_enrolls_then_passkey_only_in_chromium() {
    let port = free_port();
    let stack = idp_stack(port, "oidc-enroll").await;
    let out = run_flow(serde_json::json!({
        "base": format!("http://localhost:{port}"),
        "mode": "oidc-enroll",
        "roles": "admin,dev",
        "websocket": true,
        "shots": artifacts("oidc-enroll"),
    }));
    assert!(out.contains("revoked device refused"), "{out}");
    audit_has_events_but_no_names(
        &stack.keyward.audit(),
        &[
            "idp_verified",
            "enrolled",
            "login",
            "login_failed",
            "revoked",
            "tunnel_closed",
        ],
        "alice",
    );
}
