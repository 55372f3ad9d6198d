//! OpenID Providers for tests. [`OidcProvider`] runs the real npm `oidc-provider`
//! (`tests/node/oidc-provider.mjs`) on a random loopback port; [`sign_in`] walks an
//! authorization URL through it the way a browser would (cookies, redirects, automatic
//! login by `login_hint`) and returns what arrives at the redirect URL. [`crafted`] is
//! a deliberately dishonest provider for the negative cases a compliant one cannot
//! produce (wrong audience, expired or badly signed ID tokens).

pub mod crafted;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::Proc;
use crate::repo_root;

/// The real `oidc-provider`, killed when dropped. Accounts: `alice` (groups `eng`,
/// `admins`), `bob` (`eng`, email not verified), `carol` (`"ops"` as a single string),
/// `dave` (no groups claim); see the script's header for the environment it reads.
#[derive(Debug)]
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`.
    pub issuer: String,
    proc: Proc,
    stderr: tempfile::NamedTempFile,
    _stdout: tempfile::NamedTempFile,
}

/// The `tests/node` directory (package.json, lockfile, scripts).
pub fn node_dir() -> PathBuf {
    repo_root().join("tests/node")
}

/// Panics with what to run when `npm ci` has not been run in `tests/node`.
pub fn require_node_modules() {
    let dir = node_dir().join("node_modules/oidc-provider");
    assert!(
        dir.is_dir(),
        "{} is missing: run `npm ci --prefix tests/node` (or `bash .ci/bootstrap test`) first",
        dir.display()
    );
}

impl OidcProvider {
    /// Starts the provider with `clients_json`: a JSON array of client metadata
    /// (`client_id`, `client_secret`, `redirect_uris`, `id_token_signed_response_alg`,
    /// `token_endpoint_auth_method`, ...).
    pub async fn start(clients_json: &str) -> Self {
        Self::start_with(clients_json, &[]).await
    }

    /// As [`start`](Self::start), with extra environment (`OIDC_CLAIMS_IN_ID_TOKEN`,
    /// `OIDC_USERINFO`, `OIDC_ACCOUNTS`, `OIDC_AUTO_LOGIN`).
    pub async fn start_with(clients_json: &str, env: &[(&str, &str)]) -> Self {
        require_node_modules();
        let stdout = tempfile::NamedTempFile::new().expect("temp file");
        let stderr = tempfile::NamedTempFile::new().expect("temp file");
        let mut cmd = Command::new("node");
        cmd.arg(node_dir().join("oidc-provider.mjs"))
            .current_dir(node_dir())
            .env("OIDC_CLIENTS", clients_json)
            .env("PORT", "0")
            .env_remove("OIDC_ACCOUNTS")
            .env_remove("OIDC_AUTO_LOGIN")
            .envs(env.iter().copied())
            .stdout(Stdio::from(stdout.reopen().expect("reopen")))
            .stderr(Stdio::from(stderr.reopen().expect("reopen")));
        let mut proc = Proc::spawn("node oidc-provider.mjs (is nodejs installed?)", &mut cmd);

        let start = Instant::now();
        let issuer = loop {
            let out = std::fs::read_to_string(stdout.path()).unwrap_or_default();
            if let Some(url) = out.lines().find_map(|l| l.strip_prefix("listening ")) {
                break url.trim().to_owned();
            }
            if let Some(status) = proc.wait_exit(Duration::from_millis(25)).await {
                panic!(
                    "oidc-provider.mjs exited ({status}) before listening:\n{}",
                    read(&stderr)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "oidc-provider.mjs did not print `listening` within 30 s:\n{}",
                read(&stderr)
            );
        };
        Self {
            issuer,
            proc,
            stderr,
            _stdout: stdout,
        }
    }

    /// What the provider wrote to stderr so far (warnings, protocol errors).
    pub fn log(&self) -> String {
        read(&self.stderr)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- oidc-provider log ---\n{}", self.log());
        }
    }
}

fn read(file: &tempfile::NamedTempFile) -> String {
    let mut s = String::new();
    let _ = std::fs::File::open(file.path()).and_then(|mut f| f.read_to_string(&mut s));
    s
}

/// What arrived at the redirect URL: its query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub iss: Option<String>,
}

/// Walks `auth_url` (plus `login_hint=<account>`) like a browser with a fresh cookie
/// jar: follows the provider's redirects until one points under `redirect_url`, then
/// returns that URL's query without requesting it. Panics when a page answers with
/// something other than a redirect.
pub async fn sign_in(auth_url: &url::Url, login_hint: &str, redirect_url: &str) -> Callback {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let mut url = auth_url.clone();
    url.query_pairs_mut().append_pair("login_hint", login_hint);
    for _ in 0..10 {
        let resp = http
            .get(url.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        let Some(location) = resp.headers().get(reqwest::header::LOCATION) else {
            let body = resp.text().await.unwrap_or_default();
            panic!("GET {url} answered {status} without a redirect: {body}");
        };
        let location = location.to_str().expect("ASCII Location");
        let next = url.join(location).expect("Location is a URL");
        if next.as_str().starts_with(redirect_url) {
            let mut cb = Callback::default();
            for (k, v) in next.query_pairs() {
                let v = Some(v.into_owned());
                match k.as_ref() {
                    "code" => cb.code = v,
                    "state" => cb.state = v,
                    "error" => cb.error = v,
                    "iss" => cb.iss = v,
                    _ => {}
                }
            }
            return cb;
        }
        url = next;
    }
    panic!("more than 10 redirects from {auth_url}");
}
