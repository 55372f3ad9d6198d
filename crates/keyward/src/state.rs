//! Loading what the agent decides with (key ring, policy) and keeping it current:
//! revocations from the store, files reloaded when they change.

use std::path::Path;

use anyhow::Context;
use keyward_config::Config;
use keyward_gate::{AssertionConfig, GateConfig};
use keyward_policy::Policy;
use keyward_session::keyring::{KeyRing, file as ringfile};

pub use keyward_session::sys::{os_random, unix_now};

pub fn load_ring(path: &Path) -> anyhow::Result<KeyRing> {
    ringfile::load(path).with_context(|| {
        format!(
            "`session.keyring`: cannot use {} (create it with `keyward keys generate`)",
            path.display()
        )
    })
}

pub fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "`policy.file`: cannot read {} (see docs/policy.md)",
            path.display()
        )
    })?;
    Policy::from_toml(&text)
        .with_context(|| format!("`policy.file`: {} is invalid", path.display()))
}

pub fn gate_config(cfg: &Config) -> GateConfig {
    GateConfig {
        cookie_name: cfg.session.cookie_name.clone(),
        leeway: cfg.session.leeway.as_secs() as i64,
        max_lifetime: cfg.session.max_lifetime.as_secs() as i64,
        login_url: cfg.portal.login_url.clone(),
        assertion: cfg.assertion.enabled.then(|| AssertionConfig {
            issuer: cfg.assertion.issuer.clone(),
            ttl_secs: cfg.assertion.ttl.as_secs() as i64,
        }),
        cache_capacity: cfg.session.cache_capacity,
        revocations_max_age: cfg.store.revocations_max_age.map(|d| d.as_secs() as i64),
        tunnels: cfg.tunnels.enabled.then_some(cfg.tunnels.max_tracked),
    }
}
