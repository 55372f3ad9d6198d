//! The loop that ends due tunnels.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keyward_gate::Gate;
use keyward_gate::tunnels::{Due, StreamRef, Why};
use keyward_session::sys::unix_now;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, Cli};
use crate::sess;

/// How often tunnels that ended by themselves are forgotten (one `show sess`).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// The same, while the table or one session's share of it is full.
pub const RECONCILE_CROWDED: Duration = Duration::from_secs(5);

/// The reaper's metrics, under `keyward_tunnels_`.
#[derive(Debug, Clone)]
pub struct TunnelMetrics {
    closed: IntCounterVec,
    api_errors: IntCounter,
    /// 1 while the last check reached HAProxy's runtime API.
    api_up: IntGauge,
}

impl TunnelMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let closed = IntCounterVec::new(
            Opts::new(
                "tunnels_closed_total",
                "Tunnels ended because their session may no longer pass, by reason",
            )
            .namespace("keyward"),
            &["reason"],
        )?;
        registry.register(Box::new(closed.clone()))?;
        for why in Why::ALL {
            closed.with_label_values(&[why.as_str()]);
        }
        let api_errors = IntCounter::with_opts(
            Opts::new(
                "tunnels_api_errors_total",
                "Commands to HAProxy's runtime API that failed (tunnels due stay open until one succeeds)",
            )
            .namespace("keyward"),
        )?;
        registry.register(Box::new(api_errors.clone()))?;
        let api_up = IntGauge::with_opts(
            Opts::new(
                "tunnels_api_up",
                "1 while the last command to HAProxy's runtime API succeeded",
            )
            .namespace("keyward"),
        )?;
        registry.register(Box::new(api_up.clone()))?;
        Ok(Self {
            closed,
            api_errors,
            api_up,
        })
    }
}

/// Ends the tunnels of one agent's gate through one HAProxy's runtime API.
#[derive(Debug)]
pub struct Reaper {
    gate: Arc<Gate>,
    api: Api,
    every: Duration,
    metrics: TunnelMetrics,
    /// Whether the last pass reached the API (errors are logged when this changes).
    reachable: bool,
    reconciled: tokio::time::Instant,
}

impl Reaper {
    pub fn new(gate: Arc<Gate>, api: Api, every: Duration, metrics: TunnelMetrics) -> Self {
        Self {
            gate,
            api,
            every,
            metrics,
            reachable: true,
            // The first pass checks the API at once.
            reconciled: tokio::time::Instant::now()
                .checked_sub(RECONCILE_EVERY)
                .unwrap_or_else(tokio::time::Instant::now),
        }
    }

    /// Checks every `tunnels.check_interval` until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.pass(unix_now()) => {}
            }
        }
    }

    /// One check at `now` (unix seconds): ends what is due, and now and then forgets
    /// tunnels that ended by themselves.
    pub async fn pass(&mut self, now: i64) {
        let Some(tunnels) = self.gate.tunnels() else {
            return;
        };
        // Every 30 s; every 5 s while the table or a session's share of it is full (a
        // user who keeps a share full with refused upgrades costs HAProxy one `show
        // sess` per 5 s, no more); at every check while the API does not answer.
        let since = self.reconciled.elapsed();
        let reconcile = !self.reachable
            || since >= RECONCILE_EVERY
            || (since >= RECONCILE_CROWDED && tunnels.crowded());
        if tunnels.is_empty() {
            // Nothing to end: still check now and then that the API answers, so that a
            // wrong `haproxy_api` shows before the first revocation needs it.
            if reconcile {
                self.reconciled = tokio::time::Instant::now();
                let probe = async {
                    let mut cli = self.api.connect().await?;
                    cli.list_streams().await?;
                    cli.check_admin().await
                };
                let probe = probe.await;
                self.report(probe, 0);
            }
            return;
        }
        let keys = self.gate.keys();
        let due = tunnels.due(
            &self.gate.revocations(),
            &keys.ring,
            keys.generation(),
            self.gate.leeway(),
            now,
        );
        if due.is_empty() && !reconcile {
            return;
        }
        let known: HashSet<_> = tunnels.streams().into_iter().collect();
        let result = self.sweep(&due, reconcile, &known).await;
        self.report(result, due.len());
        self.gate.tunnels_changed();
    }

    /// Counts and logs (once per outage) whether the API answered.
    fn report(&mut self, result: Result<(), ApiError>, due: usize) {
        match result {
            Ok(()) => {
                if !self.reachable {
                    tracing::info!(api = %self.api.addr(), "HAProxy's runtime API answers again");
                }
                self.reachable = true;
                self.metrics.api_up.set(1);
            }
            Err(err) => {
                self.metrics.api_errors.inc();
                self.metrics.api_up.set(0);
                if self.reachable {
                    tracing::error!(%err, due, "tunnels cannot be ended until HAProxy's runtime API answers; retrying every check");
                }
                self.reachable = false;
            }
        }
    }

    /// Ends the `due` tunnels that are still open, on one connection to the API; with
    /// `reconcile`, forgets the `known` tunnels whose stream is gone.
    async fn sweep(
        &mut self,
        due: &[Due],
        reconcile: bool,
        known: &HashSet<StreamRef>,
    ) -> Result<(), ApiError> {
        let Some(tunnels) = self.gate.tunnels() else {
            return Ok(());
        };
        let mut cli = self.api.connect().await?;
        let list = cli.list_streams().await?;
        let mut by_client: HashMap<SocketAddr, Vec<&str>> = HashMap::new();
        for s in sess::parse_list(&list) {
            if let Some(client) = s.client {
                by_client.entry(client).or_default().push(s.ptr);
            }
        }
        let mut details = Details::default();
        for d in due {
            if details.spent() {
                // The rest waits for the next check.
                break;
            }
            let mut ended = false;
            for ptr in by_client.get(&d.stream.client).into_iter().flatten() {
                if details.get(&mut cli, ptr).await? != Some((d.stream.id, d.stream.client)) {
                    continue;
                }
                // On the same connection, right after the confirmation.
                ended = cli.shutdown(ptr).await?;
                break;
            }
            tunnels.forget(&d.stream);
            if ended {
                self.metrics
                    .closed
                    .with_label_values(&[d.why.as_str()])
                    .inc();
                let c = &d.session.claims;
                tracing::info!(
                    target: "audit",
                    event = "tunnel_closed",
                    reason = d.why.as_str(),
                    session = c.sid.as_str(),
                    device = c.dev.as_deref().unwrap_or("-"),
                );
            }
        }
        if reconcile {
            // The streams that are open, by id, among the clients of known tunnels. Only
            // what was known before the list was taken is judged: a tunnel remembered
            // since may be missing from it and still be open.
            let mut open = HashSet::new();
            let mut complete = true;
            let clients: HashSet<SocketAddr> = known.iter().map(|s| s.client).collect();
            'clients: for (client, ptrs) in &by_client {
                if !clients.contains(client) {
                    continue;
                }
                for ptr in ptrs {
                    if details.spent() {
                        complete = false;
                        break 'clients;
                    }
                    if let Some(stream) = details.get(&mut cli, ptr).await? {
                        open.insert(stream);
                    }
                }
            }
            tunnels.retain(|s| {
                !known.contains(s)
                    || if complete {
                        open.contains(&(s.id, s.client))
                    } else {
                        by_client.contains_key(&s.client)
                    }
            });
            self.reconciled = tokio::time::Instant::now();
        }
        Ok(())
    }
}

/// The most `show sess <ptr>` one pass asks for: each briefly stops HAProxy's threads.
pub const MAX_LOOKUPS: usize = 2000;

/// `show sess <ptr>` answers of one pass, each asked once.
#[derive(Default)]
struct Details {
    seen: HashMap<String, Option<(u32, SocketAddr)>>,
}

impl Details {
    fn spent(&self) -> bool {
        self.seen.len() >= MAX_LOOKUPS
    }

    async fn get(
        &mut self,
        cli: &mut Cli,
        ptr: &str,
    ) -> Result<Option<(u32, SocketAddr)>, ApiError> {
        if let Some(d) = self.seen.get(ptr) {
            return Ok(*d);
        }
        let d = sess::parse_detail(&cli.stream(ptr).await?);
        self.seen.insert(ptr.to_owned(), d);
        Ok(d)
    }
}
