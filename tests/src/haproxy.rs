//! HAProxy started from the shipped configuration in `haproxy/`, on random loopback
//! ports, stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

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

#[derive(Debug)]
pub struct Haproxy {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    proc: Proc,
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
        let mut cmd = Command::new("haproxy");
        cmd.args(["-db", "-f"])
            .arg(&cfg)
            .env("KEYWARD_HTTP_BIND", format!("127.0.0.1:{port}"))
            .env("KEYWARD_SPOE_CONF", &spoe)
            .env("KEYWARD_SPOA", &wiring.spoa)
            .env("KEYWARD_UPSTREAM", wiring.upstream.to_string());
        if let Some(portal) = wiring.portal {
            cmd.env("KEYWARD_PORTAL", portal.to_string());
        }
        let proc = Proc::spawn("haproxy", &mut cmd);
        let addr = loopback(port);
        wait_listening(addr, "HAProxy to listen").await;
        Self { addr, dir, proc }
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}
