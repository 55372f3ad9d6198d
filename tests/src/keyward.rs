//! The real `keyward` binary, configured in a temp dir: key ring, policy, SQLite store
//! and audit log all inside it, listeners on free loopback ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::http::{get, wait_for_ok};
use crate::process::Proc;
use crate::{free_port, keyward_bin, loopback, wait_listening};

#[derive(Debug)]
pub struct Keyward {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub policy: PathBuf,
    pub spoa: SocketAddr,
    pub ops: SocketAddr,
    pub portal: SocketAddr,
    proc: Option<Proc>,
}

impl Keyward {
    /// Writes the config and `policy`, generates the key ring, starts `keyward serve`
    /// and waits until it is ready. `extra` is appended to keyward.toml.
    pub async fn start(policy: &str, extra: &str) -> Self {
        Self::start_with(policy, TEST_PORTAL, extra).await
    }

    /// [`Keyward::start`] with `portal` as the `[portal]` keys (besides `listen`).
    pub async fn start_with(policy: &str, portal_keys: &str, extra: &str) -> Self {
        Self::start_full(policy, portal_keys, "", None, extra).await
    }

    /// [`Keyward::start`] with `spoa_keys` added to `[spoa]` (besides `listen`), e.g.
    /// `max_connections = 200` (`extra` cannot: TOML allows a table only once).
    pub async fn start_spoa(policy: &str, spoa_keys: &str, extra: &str) -> Self {
        Self::start_full(policy, TEST_PORTAL, spoa_keys, None, extra).await
    }

    /// One node of many: `[store]` is `store_keys` (a shared `url` and more), and the
    /// key ring is `peer`'s (nodes share it, the way a mounted secret is shared), or a
    /// new one for the first node.
    pub async fn start_node(policy: &str, store_keys: &str, peer: Option<&Keyward>) -> Self {
        let keyring = peer.map(|p| p.dir.path().join("keyring.toml"));
        let shared = Shared {
            store_keys,
            keyring: keyring.as_deref(),
        };
        Self::start_full(policy, TEST_PORTAL, "", Some(shared), "").await
    }

    async fn start_full(
        policy: &str,
        portal_keys: &str,
        spoa_keys: &str,
        shared: Option<Shared<'_>>,
        extra: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (spoa, ops, portal) = (
            loopback(free_port()),
            loopback(free_port()),
            loopback(free_port()),
        );
        let config = d.join("keyward.toml");
        let policy_path = d.join("policy.toml");
        let own_keyring = d.join("keyring.toml");
        let keyring = shared
            .as_ref()
            .and_then(|s| s.keyring)
            .unwrap_or(&own_keyring);
        let store_keys = shared.as_ref().map_or_else(
            || format!("url = \"sqlite://{}/keyward.db\"", d.display()),
            |s| s.store_keys.to_owned(),
        );
        std::fs::write(&policy_path, policy).expect("write policy");
        let toml = format!(
            r#"version = 1
[spoa]
listen = ["{spoa}"]
{spoa_keys}
[ops]
listen = "{ops}"
[portal]
listen = "{portal}"
{portal_keys}
[session]
keyring = "{keyring}"
leeway = "0s"
[assertion]
issuer = "https://auth.test"
[policy]
file = "{policy}"
[store]
{store_keys}
[audit]
file = "{d}/audit.jsonl"
{extra}
"#,
            d = d.display(),
            policy = policy_path.display(),
            keyring = keyring.display(),
        );
        std::fs::write(&config, toml).expect("write config");
        let mut k = Self {
            dir,
            config,
            policy: policy_path,
            spoa,
            ops,
            portal,
            proc: None,
        };
        if !keyring.exists() {
            k.cli_ok(&["keys", "generate"]);
        }
        k.restart().await;
        k
    }

    /// Starts (again) `keyward serve` and waits for /readyz.
    pub async fn restart(&mut self) {
        self.proc = Some(Proc::spawn(
            "keyward",
            Command::new(keyward_bin())
                .arg("serve")
                .arg("--config")
                .arg(&self.config),
        ));
        wait_listening(self.spoa, "keyward SPOA").await;
        wait_for_ok(
            self.ops,
            "/readyz",
            Duration::from_secs(10),
            "keyward /readyz",
        )
        .await;
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("keyward is running")
    }

    /// Replaces the policy file the way an operator should: a new file renamed over
    /// the old one, so the agent never reads half of it.
    pub fn write_policy(&self, text: &str) {
        let tmp = self.policy.with_extension("toml.new");
        std::fs::write(&tmp, text).expect("write policy");
        std::fs::rename(&tmp, &self.policy).expect("rename policy");
    }

    /// The agent's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc
            .as_ref()
            .and_then(Proc::rss_kib)
            .expect("keyward is running")
    }

    /// Runs `keyward <args> --config <config>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(keyward_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run keyward")
    }

    /// [`Self::cli`] that must succeed; returns its standard output. A failure shows
    /// the command, its exit status and its standard error.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "keyward {}: {}\nstderr: {}\nstdout: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `keyward token mint`; returns the token.
    pub fn mint(&self, user: &str, roles: &str, ttl: &str, device: Option<&str>) -> String {
        let mut args = vec![
            "token", "mint", "--user", user, "--roles", roles, "--ttl", ttl,
        ];
        if let Some(d) = device {
            args.extend(["--device", d]);
        }
        self.cli_ok(&args).trim().to_owned()
    }

    /// The value of one series in /metrics (0 when absent), e.g.
    /// `keyward_decisions_total{decision="login",reason="expired"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let body = get(self.ops, "/metrics", &[]).await.expect("metrics").body;
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// The audit log so far.
    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default()
    }
}

/// What the nodes of one deployment share.
struct Shared<'a> {
    store_keys: &'a str,
    keyring: Option<&'a Path>,
}

/// The `[portal]` of tests that do not sign in through the portal.
pub const TEST_PORTAL: &str = r#"login_url = "https://auth.test/.keyward/login"
rp_id = "auth.test"
origins = ["https://auth.test"]"#;

/// The counter of one decision/reason pair.
pub fn decision(decision: &str, reason: &str) -> String {
    format!("keyward_decisions_total{{decision=\"{decision}\",reason=\"{reason}\"}}")
}
