//! Logging: operational logs (text or JSON) on stderr with a filter reloadable at run
//! time, and audit events (target `audit`) as JSON lines on their own stream: a file
//! when `[audit] file` is set, otherwise standard output for `serve` and standard error
//! for the CLI commands (whose standard output is their result, e.g. a minted token).
//! Audit events are never filtered by the log level.

use std::fs::OpenOptions;
use std::sync::Mutex;

use anyhow::Context;
use keyward_config::{AuditConfig, LogConfig, LogFormat};
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The tracing target of audit events.
pub const AUDIT: &str = "audit";

/// Changes the log filter of the running process.
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    pub fn set_level(&self, level: &str) -> anyhow::Result<()> {
        let filter = filter(level)?;
        self.0.reload(filter).context("reloading the log filter")
    }
}

fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(env).context("RUST_LOG is not a valid filter")
        }
        _ => EnvFilter::try_new(level).with_context(|| {
            format!("`log.level`: `{level}` is not a valid filter (try \"info\")")
        }),
    }
}

/// Where audit events go when `[audit] file` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFallback {
    Stdout,
    Stderr,
}

pub fn init(
    cfg: &LogConfig,
    audit: &AuditConfig,
    fallback: AuditFallback,
) -> anyhow::Result<LogHandle> {
    let (level, handle) = reload::Layer::new(filter(&cfg.level)?);
    let not_audit = filter_fn(|m| m.target() != AUDIT);
    let ops = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let ops = match cfg.format {
        LogFormat::Json => ops.json().flatten_event(true).boxed(),
        LogFormat::Text => ops.boxed(),
    };
    let audit_layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false);
    let audit_layer = match &audit.file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("`audit.file`: cannot append to {}", path.display()))?;
            audit_layer.with_writer(Mutex::new(file)).boxed()
        }
        None if fallback == AuditFallback::Stdout => {
            audit_layer.with_writer(std::io::stdout).boxed()
        }
        None => audit_layer.with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry()
        .with(ops.with_filter(level.and(not_audit)))
        .with(audit_layer.with_filter(filter_fn(|m| m.target() == AUDIT)))
        .try_init()
        .context("installing the log subscriber")?;
    Ok(LogHandle(handle))
}
