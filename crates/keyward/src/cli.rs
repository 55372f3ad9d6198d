//! Command-line interface.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyward_config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about = "FIDO2 identity for HAProxy, enforced by an SPOE agent"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: SPOA listener(s) and the ops listener.
    Serve {
        /// keyward.toml (default: $KEYWARD_CONFIG or /etc/keyward/keyward.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and exit: 0 when it is usable.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve { config } => {
                let path = config.unwrap_or_else(keyward_config::default_path);
                let cfg = Config::load(&path)?;
                let logs = crate::telemetry::init(&cfg.log)?;
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?
                    .block_on(crate::serve::serve(path, cfg, logs))
            }
            Command::CheckConfig { config } => {
                let path = config.unwrap_or_else(keyward_config::default_path);
                Config::load(&path)?;
                println!("{}: ok", path.display());
                Ok(())
            }
        }
    }
}
