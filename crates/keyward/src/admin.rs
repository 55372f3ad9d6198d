//! Administrative commands: the key ring, minted tokens, revocations. Each is audited
//! (by key id, session id, device id or revocation id; never a user name or a token).

use std::time::Duration;

use anyhow::{Context, bail};
use keyward_config::Config;
use keyward_session::keyring::{KeyRing, file as ringfile};
use keyward_session::token;
use keyward_session::{AuthMethod, Claims};
use keyward_store::{Kind, Store};

use crate::serve::REFRESH_PATH;
use crate::state::{self, os_random, unix_now};

/// `keyward keys generate`: a new key ring; refuses to overwrite one.
pub fn keys_generate(cfg: &Config) -> anyhow::Result<()> {
    let path = &cfg.session.keyring;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _one_writer = ringfile::lock(path)?;
    if path.exists() {
        bail!(
            "{} already exists; use `keyward keys rotate` to change keys",
            path.display()
        );
    }
    let ring = KeyRing::generate(unix_now(), &mut os_random)?;
    ringfile::save(path, &ring)?;
    tracing::info!(target: "audit", event = "keys_generated", generation = ring.generation());
    println!("created {} (mode 0600)", path.display());
    print_keys(&ring);
    Ok(())
}

/// `keyward keys rotate`: a new active key; the old one verifies until the longest
/// session it may have sealed has expired. Also retires keys past that point.
pub fn keys_rotate(cfg: &Config, session: bool, assertion: bool) -> anyhow::Result<()> {
    let path = &cfg.session.keyring;
    let _one_writer = ringfile::lock(path)?;
    let mut ring = state::load_ring(path)?;
    let now = unix_now();
    let (session, assertion) = if !session && !assertion {
        (true, true)
    } else {
        (session, assertion)
    };
    if session {
        let id = ring.rotate_session(now, &mut os_random)?;
        tracing::info!(target: "audit", event = "key_rotated", kind = "session", key = %id);
    }
    if assertion {
        let id = ring.rotate_assertion(now, &mut os_random)?;
        tracing::info!(target: "audit", event = "key_rotated", kind = "assertion", key = %id);
    }
    retire_expired(cfg, &mut ring, now);
    ringfile::save(path, &ring)?;
    println!("rotated; running agents pick the change up within seconds");
    print_keys(&ring);
    Ok(())
}

fn retire_expired(cfg: &Config, ring: &mut KeyRing, now: i64) {
    for id in ring.retire_expired(
        now,
        cfg.session_horizon_secs(),
        cfg.assertion_horizon_secs(),
    ) {
        tracing::info!(target: "audit", event = "key_retired", key = %id, why = "expired");
    }
}

pub fn keys_list(cfg: &Config) -> anyhow::Result<()> {
    let ring = state::load_ring(&cfg.session.keyring)?;
    print_keys(&ring);
    Ok(())
}

/// `keyward keys retire ID`: stop verifying with a key now (e.g. after a leak).
pub fn keys_retire(cfg: &Config, id: &str) -> anyhow::Result<()> {
    let path = &cfg.session.keyring;
    let _one_writer = ringfile::lock(path)?;
    let mut ring = state::load_ring(path)?;
    ring.retire(id, unix_now())?;
    ringfile::save(path, &ring)?;
    tracing::info!(target: "audit", event = "key_retired", key = %id, why = "operator");
    println!("retired {id}; sessions it sealed are refused from now on");
    Ok(())
}

fn print_keys(ring: &KeyRing) {
    println!("{:<10} {:<10} {:<22} ID", "KIND", "STATE", "CREATED");
    for k in ring.list() {
        println!(
            "{:<10} {:<10} {:<22} {}",
            k.kind.to_string(),
            k.state.as_str(),
            when(k.created),
            k.id
        );
    }
}

pub fn when(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What `keyward token mint` needs.
#[derive(Debug)]
pub struct Mint {
    pub user: String,
    pub roles: Vec<String>,
    pub ttl: Duration,
    pub device: Option<String>,
    pub email: Option<String>,
}

/// `keyward token mint`: a break-glass or automation session token, printed on stdout.
pub fn token_mint(cfg: &Config, request: Mint) -> anyhow::Result<()> {
    println!("{}", mint(cfg, request)?);
    Ok(())
}

/// Seals a minted session token (audited).
pub fn mint(cfg: &Config, mint: Mint) -> anyhow::Result<String> {
    if mint.ttl > cfg.session.max_lifetime {
        bail!(
            "--ttl {} is longer than `session.max_lifetime` ({}); keys could retire before it expires",
            humantime::format_duration(mint.ttl),
            humantime::format_duration(cfg.session.max_lifetime)
        );
    }
    if mint.ttl.is_zero() {
        bail!("--ttl must be longer than zero, e.g. 15m");
    }
    let ring = state::load_ring(&cfg.session.keyring)?;
    let now = unix_now();
    let claims = Claims {
        sid: token::new_session_id(&mut os_random),
        sub: mint.user,
        email: mint.email,
        roles: mint.roles,
        dev: mint.device,
        aaguid: None,
        amr: AuthMethod::Minted,
        auth_time: now,
        iat: now,
        exp: now + mint.ttl.as_secs() as i64,
    };
    let sealed = token::seal(&claims, &ring)?;
    tracing::info!(
        target: "audit",
        event = "token_minted",
        session = %claims.sid,
        device = claims.dev.as_deref().unwrap_or("-"),
        ttl_secs = mint.ttl.as_secs(),
    );
    Ok(sealed)
}

/// `keyward sessions revoke`: records the revocation in the store, then asks the local
/// agent to apply it at once (other agents read it within `store.revocation_poll`, or
/// at once on a shared PostgreSQL store, which announces it).
pub async fn sessions_revoke(cfg: &Config, kind: Kind, subject: &str) -> anyhow::Result<()> {
    if subject.is_empty() {
        bail!("the {} to revoke is empty", kind.as_str());
    }
    let store = Store::open(&cfg.store.url).await?;
    if kind == Kind::User {
        // Portal sessions carry the user's id (`local:…`, `oidc:…`), not the name an
        // operator types; minted tokens carry whatever `--user` said. A name revokes
        // both the user it names and tokens minted with it.
        if let Some(user) = store.user_by_name(subject).await?
            && user.id != subject
        {
            revoke(cfg, &store, kind, &user.id).await?;
        } else if store.user(subject).await?.is_none() {
            println!(
                "no user named `{subject}` in the store (see `keyward users list`); revoking tokens minted with `--user {subject}`"
            );
        }
    }
    revoke(cfg, &store, kind, subject).await?;
    store.close().await;
    Ok(())
}

/// Records a revocation, audits it, and pushes it to the local agent.
pub async fn revoke(cfg: &Config, store: &Store, kind: Kind, subject: &str) -> anyhow::Result<()> {
    let now = unix_now();
    let until = now + cfg.session_horizon_secs();
    let r = store.revoke(kind, subject, now, until).await?;
    match kind {
        // A user id can be personal data: the audit names the revocation, not the user.
        Kind::User => {
            tracing::info!(target: "audit", event = "revoked", kind = "user", revocation = r.id)
        }
        Kind::Session => {
            tracing::info!(target: "audit", event = "revoked", kind = "session", revocation = r.id, session = subject)
        }
        Kind::Device => {
            tracing::info!(target: "audit", event = "revoked", kind = "device", revocation = r.id, device = subject)
        }
    }
    let others = match store {
        Store::Postgres(_) => "; other nodes are told by the store".to_owned(),
        Store::Sqlite(_) => String::new(),
    };
    match notify_agent(cfg).await {
        Ok(()) => println!(
            "revoked (#{}); in force on the local agent now{others}",
            r.id
        ),
        Err(err) => println!(
            "revoked (#{}); the local agent did not answer ({err:#}): agents apply it within {}",
            r.id,
            humantime::format_duration(cfg.store.revocation_poll)
        ),
    }
    Ok(())
}

/// POSTs to the agent's ops listener so it reads the store now.
async fn notify_agent(cfg: &Config) -> anyhow::Result<()> {
    match crate::httpc::request(cfg.ops.listen, "POST", REFRESH_PATH).await? {
        (200, _) => Ok(()),
        (status, body) => bail!("{status} {}", body.trim()),
    }
}
