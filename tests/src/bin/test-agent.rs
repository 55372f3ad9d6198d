//! An SPOA built on keyward's runtime with a scripted decision, for end-to-end tests of
//! the runtime and the shipped HAProxy configuration. The request path picks the answer:
//!
//! - `/allow/<user>`: allow, with user, email and roles derived from `<user>`;
//!   `?delay=<ms>` answers after that long;
//! - `/deny`: deny / forbidden;
//! - `/login`: login / no_session with a login URL;
//! - `/slow/<ms>`: allow after `<ms>` milliseconds;
//! - `/error`: the handler fails (reason=error, no decision);
//! - `/panic`: the handler panics;
//! - anything else: an answer without a decision.
//!
//! Usage: `test-agent <listen> [handler-timeout-ms] [noop|noop-identity]`; with `noop`
//! every request is allowed at once without reading it (the benchmarks' baseline
//! agent); `noop-identity` also returns constant identity variables.

use std::sync::Arc;
use std::time::Duration;

use keyward_gate::{AccessRequest, Decision, Reason, vars};
use keyward_spoa::{
    Actions, CancellationToken, Failure, Handler, HandlerError, Limits, Listener, Metrics, Request,
    Server,
};

struct Scripted;

/// Allows everything at once: the cost of the runtime alone. With `identity`, the ACK
/// also carries constant identity variables of a real session's size, so HAProxy does
/// the same variable and header work as for a keyward cache hit.
struct Noop {
    identity: bool,
}

const FAKE_ASSERTION: &str = concat!(
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IkFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQSJ9.",
    "eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJhdWQiOiJhcHAuZXhhbXBsZS5jb20iLCJzdWIiOiJiZW5jaC11c2VyIiwi",
    "cm9sZXMiOlsiZGV2Iiwib3BzIl0sImRldiI6ImJlbmNoLWRldmljZSIsInNpZCI6IlM0aG43cHM1dEFaams1dFFUVjJtaHciLCJhbXIi",
    "OlsibWludGVkIl0sImF1dGhfdGltZSI6MTc5NTYxNzMzMiwiaWF0IjoxNzk1NjE3MzM2LCJleHAiOjE3OTU2MTc2MzZ9.",
    "MEUCIQDxAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
);

impl Handler for Noop {
    async fn handle(&self, _request: Request) -> Result<Actions, HandlerError> {
        let mut a = Actions::new();
        vars::set_decision(&mut a, Decision::Allow, Reason::Ok);
        if self.identity {
            a.set_txn("user", "bench-user")
                .set_txn("roles", "dev,ops")
                .set_txn("session", "S4hn7ps5tAZjk5tQTV2mhw")
                .set_txn("device", "bench-device")
                .set_txn("assertion", FAKE_ASSERTION);
        }
        Ok(a)
    }

    fn on_failure(&self, _failure: Failure) -> Actions {
        vars::failure()
    }
}

impl Handler for Scripted {
    async fn handle(&self, request: Request) -> Result<Actions, HandlerError> {
        let req = AccessRequest::from_spoe(&request)?;
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let mut a = Actions::new();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["allow", user, ..] => {
                if let Some(ms) = query.strip_prefix("delay=").and_then(|v| v.parse().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                vars::set_decision(&mut a, Decision::Allow, Reason::Ok);
                a.set_txn("user", *user)
                    .set_txn("email", format!("{user}@example.test"))
                    .set_txn("roles", format!("role-{user},staff"));
            }
            ["deny", ..] => vars::set_decision(&mut a, Decision::Deny, Reason::Forbidden),
            ["login", ..] => {
                vars::set_decision(&mut a, Decision::Login, Reason::NoSession);
                a.set_txn(
                    "login_url",
                    format!("http://auth.test/login?rd={}", req.path),
                );
            }
            ["slow", ms, ..] => {
                tokio::time::sleep(Duration::from_millis(ms.parse()?)).await;
                vars::set_decision(&mut a, Decision::Allow, Reason::Ok);
            }
            ["error", ..] => return Err("scripted failure".into()),
            ["panic", ..] => panic!("scripted panic"),
            _ => {
                a.set_txn("reason", "ok");
            }
        }
        Ok(a)
    }

    fn on_failure(&self, _failure: Failure) -> Actions {
        vars::failure()
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .expect("usage: test-agent <listen> [handler-timeout-ms] [noop|noop-identity]");
    let timeout = args.next().and_then(|v| v.parse().ok()).unwrap_or(400);
    let mode = args.next();
    let noop = matches!(mode.as_deref(), Some("noop" | "noop-identity"));
    let identity = mode.as_deref() == Some("noop-identity");
    // TEST_AGENT_PIPELINING=auto|on|off, like keyward's `spoa.pipelining`.
    let pipelining = std::env::var("TEST_AGENT_PIPELINING")
        .map(|v| v.parse().expect("TEST_AGENT_PIPELINING"))
        .unwrap_or_default();
    let limits = Limits {
        handler_timeout: Duration::from_millis(timeout),
        pipelining,
        ..Limits::default()
    };
    let listener = Listener::bind(&listen.parse().expect("listen address"))
        .await
        .expect("bind");
    let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        term.recv().await;
        stop.cancel();
    });
    if noop {
        Server::new(Arc::new(Noop { identity }), limits, metrics)
            .run(vec![listener], shutdown)
            .await;
    } else {
        Server::new(Arc::new(Scripted), limits, metrics)
            .run(vec![listener], shutdown)
            .await;
    }
}
