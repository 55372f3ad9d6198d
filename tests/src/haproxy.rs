//! HAProxy started from the shipped configuration in `haproxy/`, on random loopback
//! ports, stopped when dropped, reloaded gracefully on demand.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::process::Proc;
use crate::{free_port, loopback, repo_root, wait_listening};

/// Where HAProxy sends what.
#[derive(Debug, Clone)]
pub struct Wiring {
    pub spoa: String,
    pub upstream: SocketAddr,
    /// keyward's portal listener, for `/.keyward/` and the JWKS.
    pub portal: Option<SocketAddr>,
    /// Text replacements applied to the rendered copies (tests tune timeouts this way).
    pub edits: Vec<(String, String)>,
}

/// The runtime API socket as haproxy.cfg names it: a test that must know the path
/// before HAProxy starts (keyward's `[tunnels] haproxy_api`) replaces this with it.
pub const API_SOCKET: &str = "\"${KEYWARD_HAPROXY_API-/run/haproxy/keyward-api.sock}\"";

#[derive(Debug)]
pub struct Haproxy {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    proc: Proc,
    /// The rendered haproxy.cfg and the environment it was started with (for reloads).
    cfg: PathBuf,
    env: Vec<(String, String)>,
}

impl Haproxy {
    /// Renders `haproxy/haproxy.cfg` and `haproxy/keyward-spoe.conf` into a temp dir and
    /// starts `haproxy` in the foreground on a free port.
    pub async fn start(wiring: &Wiring) -> Self {
        Self::start_on(wiring, free_port()).await
    }

    /// [`Haproxy::start`] on loopback port `port` (when others must know it first).
    pub async fn start_on(wiring: &Wiring, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let render = |name: &str| -> PathBuf {
            let mut text = std::fs::read_to_string(repo_root().join("haproxy").join(name))
                .unwrap_or_else(|e| panic!("reading haproxy/{name}: {e}"));
            for (from, to) in &wiring.edits {
                if text.contains(from.as_str()) {
                    text = text.replace(from.as_str(), to);
                }
            }
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write rendered config");
            path
        };
        let cfg = render("haproxy.cfg");
        let spoe = render("keyward-spoe.conf");
        let check = Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&cfg)
            .env("KEYWARD_SPOE_CONF", &spoe)
            .status()
            .expect("haproxy is installed (the README's test command installs it)");
        assert!(check.success(), "rendered haproxy.cfg is invalid");
        let mut env = vec![
            ("KEYWARD_HTTP_BIND".to_owned(), format!("127.0.0.1:{port}")),
            ("KEYWARD_SPOE_CONF".to_owned(), spoe.display().to_string()),
            ("KEYWARD_SPOA".to_owned(), wiring.spoa.clone()),
            ("KEYWARD_UPSTREAM".to_owned(), wiring.upstream.to_string()),
            // Each HAProxy its own runtime API socket (a test that needs it at a known
            // path edits the line: see `API_SOCKET`).
            (
                "KEYWARD_HAPROXY_API".to_owned(),
                dir.path().join("api.sock").display().to_string(),
            ),
        ];
        if let Some(portal) = wiring.portal {
            env.push(("KEYWARD_PORTAL".to_owned(), portal.to_string()));
        }
        let proc = Proc::spawn("haproxy", &mut command(&cfg, &env));
        let addr = loopback(port);
        wait_listening(addr, "HAProxy to listen").await;
        Self {
            addr,
            dir,
            proc,
            cfg,
            env,
        }
    }

    /// Graceful reload, the classic way (`-sf`, no master process): a new
    /// HAProxy on the same rendered configuration and environment, started with
    /// `-sf <old pid>`, binds the same port (SO_REUSEPORT) and tells the old one to stop
    /// listening and finish its connections. Waits up to `limit` for the old process to
    /// exit and returns its status (`None`: it did not exit in time and was killed).
    pub async fn reload(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut cmd = command(&self.cfg, &self.env);
        cmd.arg("-sf").arg(self.proc.pid().to_string());
        let mut old = std::mem::replace(&mut self.proc, Proc::spawn("haproxy", &mut cmd));
        old.wait_exit(limit).await
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// `haproxy -db -f <cfg>` (foreground) with `env`.
fn command(cfg: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f"]).arg(cfg).envs(env.iter().cloned());
    cmd
}
