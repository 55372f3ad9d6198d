//! `keyward serve`: build the parts, bind, run until SIGTERM/SIGINT; reload on SIGHUP or
//! when the config, key-ring or policy file changes; keep revocations current.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::post;
use keyward_config::Config;
use keyward_gate::{Gate, GateMetrics, Keys};
use keyward_ops::Readiness;
use keyward_session::keyring::{KeyKind, KeyState};
use keyward_spoa::{CancellationToken, LimitsHandle, Listener, Metrics, Server};
use keyward_store::{Store, Wakeup};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::signal::unix::{SignalKind, signal};

use keyward_portal::{Portal, Revoker};

use crate::state;
use crate::telemetry::LogHandle;

/// How often watched files' modification times are checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// The path the CLI posts to after a revocation, so it applies at once.
pub const REFRESH_PATH: &str = "/admin/revocations/refresh";

pub async fn serve(path: PathBuf, cfg: Config, logs: LogHandle) -> anyhow::Result<()> {
    let registry = Registry::new();
    let spoa_metrics = Metrics::register(&registry).context("registering metrics")?;
    let gate_metrics = GateMetrics::register(&registry).context("registering metrics")?;
    let reloads = IntCounterVec::new(
        Opts::new(
            "config_reloads_total",
            "Reloads of the config, key ring or policy, by result",
        )
        .namespace("keyward"),
        &["result"],
    )?;
    registry.register(Box::new(reloads.clone()))?;
    let listening = IntGauge::with_opts(
        Opts::new(
            "revocations_listening",
            "1 while this agent listens to the shared store for revocations other nodes commit",
        )
        .namespace("keyward"),
    )?;
    registry.register(Box::new(listening.clone()))?;
    let relistens = IntCounter::with_opts(
        Opts::new(
            "revocations_listener_lost_total",
            "times the listening connection to the shared store was lost (or went silent)",
        )
        .namespace("keyward"),
    )?;
    registry.register(Box::new(relistens.clone()))?;

    let ring = state::load_ring(&cfg.session.keyring)?;
    let policy = state::load_policy(&cfg.policy.file)?;
    let store = Store::open(&cfg.store.url).await?;
    let gate = Arc::new(Gate::new(
        state::gate_config(&cfg),
        policy,
        Keys::new(ring),
        gate_metrics,
    ));
    let horizon = cfg.session_horizon_secs();
    let revoker = Arc::new(Revoker::new(store.clone(), gate.clone(), horizon));
    let loaded = revoker
        .refresh()
        .await
        .context("loading revocations from the store")?;
    tracing::info!(revocations = loaded, "revocations loaded");

    let mut listeners = Vec::new();
    for addr in cfg.spoa.listen_addrs() {
        let l = Listener::bind(&addr)
            .await
            .with_context(|| format!("`spoa.listen`: cannot listen on {addr}"))?;
        tracing::info!(addr = %l.local_addr()?, "SPOA listening");
        listeners.push(l);
    }

    let shutdown = CancellationToken::new();
    let ready = Readiness::default();
    let ops_app = keyward_ops::router(registry.clone(), ready.clone()).merge(
        Router::new()
            .route(REFRESH_PATH, post(refresh))
            .with_state((revoker.clone(), cfg.ops.listen.ip())),
    );
    let (ops_addr, ops) = keyward_ops::bind(cfg.ops.listen, ops_app, shutdown.clone())
        .await
        .with_context(|| format!("`ops.listen`: cannot listen on {}", cfg.ops.listen))?;
    tracing::info!(addr = %ops_addr, "ops listening (/metrics, /healthz, /readyz)");
    let portal = Portal::new(&cfg, gate.clone(), revoker.clone())
        .await
        .context("starting the portal")?;
    portal
        .metrics()
        .register(&registry)
        .context("registering metrics")?;
    let (portal_addr, portal) = keyward_ops::bind(
        cfg.portal.listen,
        keyward_portal::router(Arc::new(portal)),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("`portal.listen`: cannot listen on {}", cfg.portal.listen))?;
    tracing::info!(addr = %portal_addr, "portal listening");
    let ops = tokio::spawn(ops);
    let portal = tokio::spawn(portal);
    let poller = tokio::spawn(poll_revocations(
        revoker.clone(),
        cfg.store.revocation_poll,
        shutdown.clone(),
    ));
    let listener = tokio::spawn(listen_revocations(
        revoker.clone(),
        cfg.store.heartbeat,
        ListenGauges {
            listening,
            relistens,
        },
        shutdown.clone(),
    ));

    let reaper = if cfg.tunnels.enabled {
        let api = keyward_tunnels::Api::new(cfg.tunnels.api_addr()?);
        tracing::info!(api = %api.addr(), "ending the tunnels of revoked and expired sessions through HAProxy's runtime API");
        let metrics =
            keyward_tunnels::TunnelMetrics::register(&registry).context("registering metrics")?;
        let reaper =
            keyward_tunnels::Reaper::new(gate.clone(), api, cfg.tunnels.check_interval, metrics);
        Some(tokio::spawn(reaper.run(shutdown.clone())))
    } else {
        None
    };

    let server = Server::new(gate.clone(), cfg.spoa.limits(), spoa_metrics);
    let limits = server.limits();
    let spoa = tokio::spawn(server.run(listeners, shutdown.clone()));
    ready.set(true);

    let mut reloader = Reloader {
        path,
        current: cfg,
        limits,
        logs,
        reloads,
        gate,
    };
    wait_for_shutdown(&mut reloader).await?;

    tracing::info!("shutting down: draining SPOA connections");
    ready.set(false);
    shutdown.cancel();
    spoa.await.context("SPOA server task")?;
    poller.await.context("revocation poller")?;
    listener.await.context("revocation listener")?;
    if let Some(reaper) = reaper {
        reaper.await.context("tunnel reaper")?;
    }
    ops.await.context("ops task")??;
    portal.await.context("portal task")??;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `POST /admin/revocations/refresh`, what `keyward sessions revoke` calls on its own
/// host. The ops listener may face the network (probes, scrapes); this endpoint
/// answers only peers on this host: loopback, or the listener's own address (what a
/// connection to it from this host comes from).
async fn refresh(
    State((revoker, own)): State<(Arc<Revoker>, IpAddr)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> (axum::http::StatusCode, String) {
    if !from_this_host(peer.ip(), own) {
        return (
            axum::http::StatusCode::FORBIDDEN,
            "only from this host (keyward sessions revoke)\n".into(),
        );
    }
    match revoker.refresh().await {
        Ok(n) => (axum::http::StatusCode::OK, format!("applied {n}\n")),
        Err(err) => {
            tracing::error!(%err, "revocation refresh failed");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable\n".into(),
            )
        }
    }
}

async fn poll_revocations(revoker: Arc<Revoker>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purged_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // On failure the revocations already in memory stay; retry on the next tick.
        refresh_logged(&revoker).await;
        // Also the cache's housekeeping, and its size gauge.
        revoker.gate.cached_sessions();
        // Every ten minutes, whatever the poll interval.
        if purged_at.elapsed() >= PURGE_EVERY {
            purged_at = tokio::time::Instant::now();
            let now = state::unix_now();
            match revoker.store.purge_revocations(now).await {
                Ok(purged) if purged > 0 => tracing::info!(purged, "expired revocations purged"),
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "purging expired revocations failed"),
            }
            // Ceremonies begun and never finished (taking one deletes it).
            match revoker.store.purge_ceremonies(now).await {
                Ok(purged) if purged > 0 => tracing::info!(purged, "expired ceremonies purged"),
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "purging expired ceremonies failed"),
            }
        }
    }
}

fn from_this_host(ip: IpAddr, own: IpAddr) -> bool {
    if ip == own && !own.is_unspecified() {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// How often expired revocations and ceremonies are deleted from the store.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The wait before listening again after the store connection was lost: doubling
/// from one second to half a minute while the store stays away.
const RELISTEN_FIRST: Duration = Duration::from_secs(1);
const RELISTEN_MAX: Duration = Duration::from_secs(30);

/// On a shared store (PostgreSQL), reads the log the moment another node commits a
/// revocation, instead of at the next poll. Polling goes on regardless: a lost
/// connection only makes revocations as late as `store.revocation_poll`, and the log is
/// read again as soon as the listener is back (what was announced meanwhile is lost).
/// A connection can also die without a word (a firewall's idle timeout): every
/// `store.heartbeat` each agent announces a heartbeat to all, and an agent that has
/// heard nothing for three periods listens anew.
async fn listen_revocations(
    revoker: Arc<Revoker>,
    every: Duration,
    gauges: ListenGauges,
    shutdown: CancellationToken,
) {
    let mut backoff = RELISTEN_FIRST;
    loop {
        let wakeups = tokio::select! {
            () = shutdown.cancelled() => return,
            w = revoker.store.wakeups() => w,
        };
        let mut w = match wakeups {
            Ok(Some(w)) => w,
            // SQLite: one node, nothing to listen to.
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%err, retry_in = ?backoff, "cannot listen for revocations; polling until it can");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RELISTEN_MAX);
                continue;
            }
        };
        tracing::info!("listening for revocations committed by other nodes");
        gauges.listening.set(1);
        refresh_logged(&revoker).await;
        // The listener is read in a task of its own that awaits each read to its end
        // (a read abandoned half way could lose part of a message); the task, and the
        // listener with it, is dropped when this loop gives it up.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Wakeup, String>>(64);
        let reader = AbortOnDrop(tokio::spawn(async move {
            loop {
                let woke = w.next().await.map_err(|e| e.to_string());
                let failed = woke.is_err();
                if tx.send(woke).await.is_err() || failed {
                    return;
                }
            }
        }));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = tokio::time::Instant::now();
        let lost = loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if heard.elapsed() > every * 3 {
                        break "nothing heard, not even heartbeats".to_owned();
                    }
                    // Bounded by a period: on a store gone silent the loop must go on
                    // to notice that nothing is heard.
                    let beat = tokio::time::timeout(every, revoker.store.heartbeat());
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        beat = beat => match beat {
                            Ok(Ok(())) => {}
                            Ok(Err(err)) => tracing::warn!(%err, "announcing a heartbeat failed"),
                            Err(_) => tracing::warn!(within = ?every, "announcing a heartbeat did not finish"),
                        },
                    }
                }
                woke = rx.recv() => {
                    // Whatever arrived meanwhile too: a burst is read from the log once.
                    let mut revoked = false;
                    let mut next = woke;
                    let lost = loop {
                        match next {
                            // Anything heard proves the connection still delivers.
                            Some(Ok(wakeup)) => {
                                heard = tokio::time::Instant::now();
                                backoff = RELISTEN_FIRST;
                                revoked |= wakeup == Wakeup::Revocation;
                            }
                            Some(Err(err)) => break Some(err),
                            None => break Some("the listener stopped".to_owned()),
                        }
                        match rx.try_recv() {
                            Ok(more) => next = Some(more),
                            Err(_) => break None,
                        }
                    };
                    if revoked {
                        refresh_logged(&revoker).await;
                    }
                    if let Some(why) = lost {
                        break why;
                    }
                }
            }
        };
        drop(reader);
        gauges.listening.set(0);
        gauges.relistens.inc();
        tracing::warn!(why = %lost, retry_in = ?backoff, "revocation listener lost; listening again");
        // Not at once: a connection that dies right after LISTEN (a pooler that does
        // not keep sessions, say) must not be retried in a hot loop. The wait grows
        // until a listener hears something again.
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RELISTEN_MAX);
    }
}

/// Reads new revocations from the store; a failure is logged, and what is in memory
/// stays in force.
async fn refresh_logged(revoker: &Revoker) {
    if let Err(err) = revoker.refresh().await {
        tracing::error!(%err, "reading revocations from the store failed");
    }
}

/// A task stopped when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the revocation listener reports.
struct ListenGauges {
    listening: IntGauge,
    relistens: IntCounter,
}

async fn wait_for_shutdown(reloader: &mut Reloader) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let mut seen = reloader.stamps();
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration, key ring and policy");
                reloader.reload();
                seen = reloader.stamps();
            }
            _ = tick.tick() => {
                let now = reloader.stamps();
                if now != seen {
                    seen = now;
                    tracing::info!("a watched file changed: reloading");
                    reloader.reload();
                }
                // Keys whose verification window has passed stop verifying even when
                // nobody ran `keyward keys retire`.
                reloader.retire_expired_keys();
            }
        }
    }
}

/// What identifies a watched file's contents: its modification time and a hash of its
/// bytes (an edit within the file system's timestamp granularity still shows). The
/// files are small; reading them every two seconds is nothing.
fn fingerprint(path: &Path) -> Option<(SystemTime, blake3::Hash)> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    let bytes = std::fs::read(path).ok()?;
    Some((modified, blake3::hash(&bytes)))
}

struct Reloader {
    path: PathBuf,
    current: Config,
    limits: LimitsHandle,
    logs: LogHandle,
    reloads: IntCounterVec,
    gate: Arc<Gate>,
}

impl Reloader {
    fn stamps(&self) -> [Option<(SystemTime, blake3::Hash)>; 3] {
        [
            fingerprint(&self.path),
            fingerprint(&self.current.session.keyring),
            fingerprint(&self.current.policy.file),
        ]
    }

    fn result(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Applies what can change without dropping connections; keeps what is running
    /// when a new file is invalid. Counts one result per reload: `error` if any part was
    /// rejected (an `ok` must mean everything on disk is in force).
    fn reload(&mut self) {
        let mut ok = true;
        match Config::load(&self.path) {
            Ok(new) => {
                if new.spoa.listen != self.current.spoa.listen
                    || new.ops.listen != self.current.ops.listen
                    || new.store != self.current.store
                    || new.session != self.current.session
                    || new.assertion != self.current.assertion
                    || new.portal != self.current.portal
                    || new.tunnels != self.current.tunnels
                {
                    tracing::warn!(
                        "listen addresses, [session], [assertion], [portal], [store] and [tunnels] take effect on restart"
                    );
                }
                self.limits.store(new.spoa.limits());
                if let Err(err) = self.logs.set_level(&new.log.level) {
                    tracing::error!(%err, "log level not changed");
                }
                let policy_moved = new.policy.file != self.current.policy.file;
                self.current.spoa = new.spoa;
                self.current.log = new.log;
                self.current.policy = new.policy;
                if policy_moved {
                    tracing::info!(file = %self.current.policy.file.display(), "policy file changed");
                }
            }
            Err(err) => {
                ok = false;
                tracing::error!(%err, "new configuration rejected; keeping the running one");
            }
        }
        match state::load_policy(&self.current.policy.file) {
            Ok(policy) => {
                tracing::info!(rules = policy.len(), "policy loaded");
                self.gate.set_policy(policy);
            }
            Err(err) => {
                ok = false;
                tracing::error!(
                    err = format!("{err:#}"),
                    "new policy rejected; keeping the running one"
                );
            }
        }
        match state::load_ring(&self.current.session.keyring) {
            Ok(ring) => {
                let generation = ring.generation();
                self.gate.set_keys(Keys::new(ring));
                tracing::info!(generation, "key ring loaded");
                tracing::info!(target: "audit", event = "keyring_loaded", generation);
            }
            Err(err) => {
                ok = false;
                tracing::error!(
                    err = format!("{err:#}"),
                    "key ring rejected; keeping the running one"
                );
            }
        }
        self.result(ok);
    }

    /// Keys past their verification window stop verifying in this agent even when no
    /// one has run `keyward keys rotate` or `retire` since (the file is not written).
    fn retire_expired_keys(&self) {
        let now = state::unix_now();
        let lifetime = self.current.session_horizon_secs();
        let ttl = self.current.assertion_horizon_secs();
        let due = self.gate.keys().ring.list().iter().any(|k| match k.state {
            KeyState::Verify { since } => {
                let window = if k.kind == KeyKind::Session {
                    lifetime
                } else {
                    ttl
                };
                since + window < now
            }
            _ => false,
        });
        if !due {
            return;
        }
        match state::load_ring(&self.current.session.keyring) {
            Ok(mut ring) => {
                let retired = ring.retire_expired(now, lifetime, ttl);
                tracing::info!(target: "audit", event = "keys_retired", keys = retired.join(","));
                self.gate.set_keys(Keys::new(ring));
            }
            Err(err) => tracing::error!(
                err = format!("{err:#}"),
                "key ring unreadable; expired keys not retired"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_endpoint_answers_this_host_only() {
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.7", false),
            ("::ffff:10.0.0.7", false),
            ("fe80::1", false),
            ("0.0.0.0", false),
        ] {
            assert_eq!(
                from_this_host(ip.parse().unwrap(), "0.0.0.0".parse().unwrap()),
                ok,
                "{ip}"
            );
        }
        // Listening on a private address: a CLI on this host connects from it.
        let own = "10.0.0.5".parse().unwrap();
        assert!(from_this_host("10.0.0.5".parse().unwrap(), own));
        assert!(!from_this_host("10.0.0.6".parse().unwrap(), own));
    }
}
