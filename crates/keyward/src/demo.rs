//! `keyward demo`: HAProxy (the shipped haproxy/ configuration), keyward and a small
//! demo application on this machine, all on loopback; Ctrl-C stops everything.
//!
//! The demo application shows the identity headers it received and verifies the
//! `X-Keyward-Assertion` JWT against the JWKS that keyward's portal publishes, the way
//! a real upstream would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{Html, Response};
use axum::routing::get;
use keyward_config::Config;

use crate::admin::{self, Mint};

const HAPROXY_CFG: &str = include_str!("../../../haproxy/haproxy.cfg");
const SPOE_CONF: &str = include_str!("../../../haproxy/keyward-spoe.conf");

const POLICY: &str = r#"# The demo's route policy (docs/policy.md). Edit it while the demo runs: keyward
# reloads it within two seconds.
version = 1

[[rule]]
name = "health"
paths = ["/healthz"]
access = "public"

[[rule]]
name = "admin area"
paths = ["/admin"]
access = "roles"
roles = ["admin"]

[[rule]]
name = "everything else"
access = "authenticated"
"#;

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Writes the demo's config and policy into `dir`, creating the key ring once.
fn prepare(dir: &Path, http: SocketAddr) -> anyhow::Result<(PathBuf, SocketAddr)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (spoa, ops, portal, upstream) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let config = dir.join("keyward.toml");
    std::fs::write(
        &config,
        format!(
            r#"# Written by `keyward demo`; see docs/configuration.md.
version = 1
[spoa]
listen = ["{spoa}"]
[ops]
listen = "{ops}"
[portal]
listen = "{portal}"
login_url = "http://localhost:{port}/.keyward/login"
rp_id = "localhost"
rp_name = "keyward demo"
origins = ["http://localhost:{port}"]
[session]
keyring = "{dir}/keyring.toml"
[assertion]
issuer = "http://localhost:{port}"
[policy]
file = "{dir}/policy.toml"
[store]
url = "sqlite://{dir}/keyward.db"
[audit]
file = "{dir}/audit.jsonl"
[tunnels]
haproxy_api = "{dir}/haproxy-api.sock"
"#,
            port = http.port(),
            dir = dir.display(),
        ),
    )?;
    let policy = dir.join("policy.toml");
    if !policy.exists() {
        std::fs::write(&policy, POLICY)?;
    }
    std::fs::write(dir.join("haproxy.cfg"), HAPROXY_CFG)?;
    std::fs::write(dir.join("keyward-spoe.conf"), SPOE_CONF)?;
    Ok((config, upstream))
}

pub fn demo(dir: PathBuf, port: u16) -> anyhow::Result<()> {
    if std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_err()
    {
        bail!(
            "haproxy is not installed: `bash .ci/bootstrap demo` installs it, or apt-get install haproxy"
        );
    }
    let dir = std::path::absolute(&dir)?;
    let http = SocketAddr::from(([127, 0, 0, 1], port));
    let (config_path, upstream) = prepare(&dir, http)?;
    let cfg = Config::load(&config_path)?;
    let logs = crate::telemetry::init(
        &cfg.log,
        &cfg.audit,
        crate::telemetry::AuditFallback::Stdout,
    )?;
    if !cfg.session.keyring.exists() {
        admin::keys_generate(&cfg)?;
    }
    let token = admin::mint(
        &cfg,
        Mint {
            user: "demo".into(),
            roles: vec!["admin".into(), "dev".into()],
            ttl: std::time::Duration::from_secs(3600),
            device: Some("demo-cli".into()),
            email: Some("demo@example.test".into()),
        },
    )?;
    let runtime = crate::cli::runtime_with(cfg.spoa.threads())?;
    let invite = runtime.block_on(crate::users::invite(
        &cfg,
        "demo",
        &["admin".into(), "dev".into()],
        Some("demo@example.test"),
    ));
    let invite = match invite {
        Ok(link) => link,
        // An earlier run made `demo` with other roles; a link for it still works.
        Err(_) => runtime.block_on(crate::users::invite(&cfg, "demo", &[], None))?,
    };
    runtime.block_on(async move {
        let portal = cfg.portal.listen;
        let issuer = cfg.assertion.issuer.clone();
        let app = Router::new()
            .route("/live", get(live))
            .fallback(get(move |headers: HeaderMap| page(headers, portal, issuer.clone())));
        let listener = tokio::net::TcpListener::bind(upstream).await?;
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut haproxy = tokio::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .env("KEYWARD_HTTP_BIND", http.to_string())
            .env("KEYWARD_SPOE_CONF", dir.join("keyward-spoe.conf"))
            .env("KEYWARD_SPOA", cfg.spoa.listen[0].clone())
            .env("KEYWARD_PORTAL", portal.to_string())
            .env("KEYWARD_UPSTREAM", upstream.to_string())
            .env("KEYWARD_HAPROXY_API", dir.join("haproxy-api.sock"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy")?;

        println!(
            "\nkeyward demo: HAProxy on http://localhost:{port} -> demo app, every request decided by keyward.\n\
             state: {dir}\n\n\
             1. Open this one-time link in a browser with a passkey or security key, and enroll a device\n   \
             for user `demo` (roles admin,dev):\n\n   {invite}\n\n\
             2. Then browse http://localhost:{port}/ : the demo app shows the identity HAProxy forwarded.\n   \
             http://localhost:{port}/.keyward/devices lists your devices; sign out from there.\n\n\
             Without a browser (a session token for `demo`, valid 1h):\n\n  \
             curl -i http://localhost:{port}/                # 401: no session\n  \
             curl -i http://localhost:{port}/healthz         # 200: public route\n  \
             curl -H 'Authorization: Bearer {token}' http://localhost:{port}/\n\n\
             Edit {dir}/policy.toml to change who may reach what. Ctrl-C stops everything.\n",
            dir = dir.display()
        );
        let served = crate::serve::serve(config_path, cfg, logs).await;
        let _ = haproxy.kill().await;
        served
    })
}

/// `/live`: a WebSocket that sends the time every second, for as long as it is let
/// live. keyward ends it when the session that opened it is revoked or expires.
async fn live(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            if socket
                .send(Message::Text(now.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// The demo application's page.
async fn page(headers: HeaderMap, portal: SocketAddr, issuer: String) -> Html<String> {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let host = h("host");
    let audience = host.split(':').next().unwrap_or("").to_owned();
    let verdict = match verify(&h("x-keyward-assertion"), portal, &audience, &issuer).await {
        Ok(claims) => format!("verified against the JWKS: <pre>{}</pre>", escape(&claims)),
        Err(err) => format!(
            "<strong>not verified</strong>: {}",
            escape(&format!("{err:#}"))
        ),
    };
    let rows: String = [
        "x-keyward-user",
        "x-keyward-email",
        "x-keyward-roles",
        "x-keyward-device",
        "x-keyward-session",
    ]
    .iter()
    .map(|n| {
        let id = n.trim_start_matches("x-keyward-");
        format!(
            "<tr><th>{n}</th><td id=\"kw-{id}\">{}</td></tr>",
            escape(&h(n))
        )
    })
    .collect();
    Html(format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>keyward demo app</title>\
         <body style=\"font-family:system-ui;max-width:48rem;margin:2rem auto\">\
         <h1>Hello from the demo app</h1><p>HAProxy forwarded this request because keyward allowed it.</p>\
         <table>{rows}</table><h2>Assertion</h2><p id=kw-assertion>{verdict}</p>\
         <h2>Live connection</h2><p id=kw-live>connecting…</p>\
         <p>A WebSocket to <code>/live</code>: sign out (here or in another tab) and keyward closes it.</p>\
         <script>const live = document.getElementById('kw-live');\
         const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/live');\
         ws.onmessage = (e) => {{ live.textContent = 'open; server time ' + e.data; }};\
         ws.onclose = () => {{ live.textContent = 'closed: the session it was opened with has ended'; }};</script>\
         <p><a href=\"/.keyward/devices\">My devices</a></p>\
         <form method=post action=\"/.keyward/logout\"><button id=app-signout>Sign out</button></form></body></html>"
    ))
}

async fn verify(
    jwt: &str,
    portal: SocketAddr,
    audience: &str,
    issuer: &str,
) -> anyhow::Result<String> {
    if jwt.is_empty() {
        bail!("no X-Keyward-Assertion header");
    }
    let (status, body) = crate::httpc::request(portal, "GET", keyward_portal::JWKS_PATH).await?;
    if status != 200 {
        bail!("JWKS answered {status}");
    }
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&body)?;
    let kid = jsonwebtoken::decode_header(jwt)?
        .kid
        .context("assertion has no kid")?;
    let jwk = jwks.find(&kid).context("kid not in the JWKS")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[issuer]);
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)?;
    Ok(serde_json::to_string_pretty(&data.claims)?)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
