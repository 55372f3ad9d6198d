//! Logging: text or JSON lines on stderr, filter reloadable at run time.

use anyhow::Context;
use keyward_config::{LogConfig, LogFormat};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

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

pub fn init(cfg: &LogConfig) -> anyhow::Result<LogHandle> {
    let (filter, handle) = reload::Layer::new(filter(&cfg.level)?);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    }
    .context("installing the log subscriber")?;
    Ok(LogHandle(handle))
}
