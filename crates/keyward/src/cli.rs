//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use keyward_config::Config;
use keyward_store::Kind;

use crate::admin;
use crate::telemetry::AuditFallback;

#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about = "FIDO2 identity for HAProxy, enforced by an SPOE agent"
)]
pub struct Cli {
    /// keyward.toml (default: $KEYWARD_CONFIG or /etc/keyward/keyward.toml).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: SPOA, portal and ops listeners.
    Serve,
    /// Validate the configuration and exit: 0 when it is usable.
    CheckConfig,
    /// Manage the key ring (session and assertion keys).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Mint session tokens for automation and break-glass access.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Revoke sessions.
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// Local users and their one-time enrollment links.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Registered devices (passkeys and security keys).
    #[command(subcommand)]
    Devices(DevicesCmd),
    /// Run HAProxy + keyward + a demo app on loopback (Ctrl-C stops all of it).
    Demo {
        /// Where the demo keeps its config, keys and database.
        #[arg(long, default_value = "keyward-demo")]
        state_dir: PathBuf,
        /// The port HAProxy listens on.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create the key ring file (mode 0600).
    Generate,
    /// Make new active keys; old ones verify until the longest session expired.
    Rotate {
        /// Only the session key.
        #[arg(long)]
        session: bool,
        /// Only the assertion key.
        #[arg(long)]
        assertion: bool,
    },
    /// Show keys, their state and ids (never secrets).
    List,
    /// Stop verifying with a key now.
    Retire { id: String },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Print a new session token (audited).
    Mint {
        #[arg(long)]
        user: String,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Lifetime, e.g. 15m (at most session.max_lifetime).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
        ttl: Duration,
        /// Device id to attribute the session to.
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        email: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCmd {
    /// Create a user (if new) and print a one-time link that enrolls one device.
    Invite {
        name: String,
        /// Comma-separated roles for a new user.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        #[arg(long)]
        email: Option<String>,
    },
    /// Every user: source, status, device count, roles.
    List,
    /// Stop a user signing in or enrolling, and revoke their sessions.
    Disable { name: String },
    /// Undo `disable`.
    Enable { name: String },
    /// Replace a local user's roles (comma-separated; empty to clear).
    Roles {
        name: String,
        #[arg(value_delimiter = ',', default_value = "")]
        roles: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DevicesCmd {
    /// Registered devices, with owner, kind and last use.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Delete a device and revoke every session made with it.
    Revoke { device: String },
}

#[derive(Debug, Subcommand)]
enum SessionsCmd {
    /// Revoke one session, all sessions of a user, or all sessions made with a device.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct RevokeArgs {
    #[arg(long)]
    session: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    device: Option<String>,
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        if let Command::Demo { state_dir, port } = self.command {
            return crate::demo::demo(state_dir, port);
        }
        let path = self
            .config
            .clone()
            .unwrap_or_else(keyward_config::default_path);
        let cfg = Config::load(&path)?;
        if let Command::CheckConfig = self.command {
            println!("{}: ok", path.display());
            return Ok(());
        }
        let fallback = match self.command {
            Command::Serve => AuditFallback::Stdout,
            _ => AuditFallback::Stderr,
        };
        let logs = crate::telemetry::init(&cfg.log, &cfg.audit, fallback)?;
        match self.command {
            Command::Serve => {
                runtime_with(cfg.spoa.threads())?.block_on(crate::serve::serve(path, cfg, logs))
            }
            Command::CheckConfig | Command::Demo { .. } => Ok(()),
            Command::Keys(KeysCmd::Generate) => admin::keys_generate(&cfg),
            Command::Keys(KeysCmd::Rotate { session, assertion }) => {
                admin::keys_rotate(&cfg, session, assertion)
            }
            Command::Keys(KeysCmd::List) => admin::keys_list(&cfg),
            Command::Keys(KeysCmd::Retire { id }) => admin::keys_retire(&cfg, &id),
            Command::Token(TokenCmd::Mint {
                user,
                roles,
                ttl,
                device,
                email,
            }) => {
                let roles = clean_roles(roles);
                admin::token_mint(
                    &cfg,
                    admin::Mint {
                        user,
                        roles,
                        ttl,
                        device,
                        email,
                    },
                )
            }
            Command::Users(cmd) => runtime()?.block_on(users(&cfg, cmd)),
            Command::Devices(DevicesCmd::List { user }) => {
                runtime()?.block_on(crate::users::devices(&cfg, user.as_deref()))
            }
            Command::Devices(DevicesCmd::Revoke { device }) => {
                runtime()?.block_on(crate::users::revoke_device(&cfg, &device))
            }
            Command::Sessions(SessionsCmd::Revoke(args)) => {
                let (kind, subject) = match (args.session, args.user, args.device) {
                    (Some(s), _, _) => (Kind::Session, s),
                    (_, Some(u), _) => (Kind::User, u),
                    (_, _, Some(d)) => (Kind::Device, d),
                    _ => anyhow::bail!("give one of --session, --user or --device"),
                };
                runtime()?.block_on(admin::sessions_revoke(&cfg, kind, &subject))
            }
        }
    }
}

fn clean_roles(roles: Vec<String>) -> Vec<String> {
    roles
        .into_iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect()
}

async fn users(cfg: &Config, cmd: UsersCmd) -> anyhow::Result<()> {
    match cmd {
        UsersCmd::Invite { name, roles, email } => {
            let link =
                crate::users::invite(cfg, &name, &clean_roles(roles), email.as_deref()).await?;
            println!(
                "enrollment link for `{name}` (one device, valid {}):\n{link}",
                humantime::format_duration(cfg.portal.invite_ttl)
            );
            Ok(())
        }
        UsersCmd::List => crate::users::list(cfg).await,
        UsersCmd::Disable { name } => crate::users::set_disabled(cfg, &name, true).await,
        UsersCmd::Enable { name } => crate::users::set_disabled(cfg, &name, false).await,
        UsersCmd::Roles { name, roles } => {
            crate::users::set_roles(cfg, &name, &clean_roles(roles)).await
        }
    }
}

/// The runtime of short commands (CLI): tokio's default.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The runtime of `serve` and `demo`: `threads` workers (`[spoa] worker_threads`).
pub fn runtime_with(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")
}
