//! `keyward serve`: bind, run until SIGTERM/SIGINT, reload on SIGHUP or config change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use keyward_config::Config;
use keyward_gate::Gate;
use keyward_ops::Readiness;
use keyward_spoa::{CancellationToken, LimitsHandle, Listener, Metrics, Server};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::signal::unix::{SignalKind, signal};

use crate::telemetry::LogHandle;

/// How often the config file's modification time is checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

pub async fn serve(path: PathBuf, cfg: Config, logs: LogHandle) -> anyhow::Result<()> {
    let registry = Registry::new();
    let spoa_metrics = Metrics::register(&registry).context("registering metrics")?;
    let reloads = IntCounterVec::new(
        Opts::new("config_reloads_total", "Configuration reloads, by result").namespace("keyward"),
        &["result"],
    )?;
    registry.register(Box::new(reloads.clone()))?;

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
    let (ops_addr, ops) = keyward_ops::bind(
        cfg.ops.listen,
        registry.clone(),
        ready.clone(),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("`ops.listen`: cannot listen on {}", cfg.ops.listen))?;
    tracing::info!(addr = %ops_addr, "ops listening (/metrics, /healthz, /readyz)");
    let ops = tokio::spawn(ops);

    let server = Server::new(Arc::new(Gate::new()), cfg.spoa.limits(), spoa_metrics);
    let limits = server.limits();
    let spoa = tokio::spawn(server.run(listeners, shutdown.clone()));
    ready.set(true);

    let mut reloader = Reloader {
        path,
        current: cfg,
        limits,
        logs,
        reloads,
    };
    wait_for_shutdown(&mut reloader).await?;

    tracing::info!("shutting down: draining SPOA connections");
    ready.set(false);
    shutdown.cancel();
    spoa.await.context("SPOA server task")?;
    ops.await.context("ops task")??;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_shutdown(reloader: &mut Reloader) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let mut seen = modified(&reloader.path);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                reloader.reload();
            }
            _ = tick.tick() => {
                let now = modified(&reloader.path);
                if now != seen {
                    seen = now;
                    tracing::info!("configuration file changed: reloading");
                    reloader.reload();
                }
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

struct Reloader {
    path: PathBuf,
    current: Config,
    limits: LimitsHandle,
    logs: LogHandle,
    reloads: IntCounterVec,
}

impl Reloader {
    /// Applies what can change without dropping connections; keeps the running config
    /// when the new one is invalid.
    fn reload(&mut self) {
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(err) => {
                self.reloads.with_label_values(&["error"]).inc();
                tracing::error!(%err, "new configuration rejected; keeping the running one");
                return;
            }
        };
        if new.spoa.listen != self.current.spoa.listen || new.ops.listen != self.current.ops.listen
        {
            tracing::warn!("listen addresses changed; they take effect on restart");
        }
        if new.log.format != self.current.log.format {
            tracing::warn!("log.format changed; it takes effect on restart");
        }
        self.limits.store(new.spoa.limits());
        if let Err(err) = self.logs.set_level(&new.log.level) {
            tracing::error!(%err, "log level not changed");
        }
        self.reloads.with_label_values(&["ok"]).inc();
        tracing::info!("configuration reloaded");
        self.current = new;
    }
}
