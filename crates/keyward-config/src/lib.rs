//! keyward's configuration: one typed tree, loaded once from a TOML file with
//! `KEYWARD_*` environment overrides, validated before anything starts.
//!
//! Every section rejects unknown keys, durations are written as text (`"15m"`), and
//! every validation error names the key and says what to write instead. Each part of
//! keyward receives only its own section.
//!
//! Environment overrides use `__` between levels: `KEYWARD_SPOA__HANDLER_TIMEOUT=500ms`
//! sets `[spoa] handler_timeout`, `KEYWARD_OPS__LISTEN=0.0.0.0:9181` sets `[ops] listen`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use keyward_spoa::{Limits, ListenAddr, Pipelining};
use serde::{Deserialize, Deserializer};

/// The only config version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config format version; must be 1.
    pub version: u32,
    #[serde(default)]
    pub spoa: SpoaConfig,
    #[serde(default)]
    pub ops: OpsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub assertion: AssertionConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub portal: PortalConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub tunnels: TunnelsConfig,
    /// `[oidc]`: the identity provider (optional; see `portal.identity`).
    #[serde(default)]
    pub oidc: Option<keyward_oidc::OidcConfig>,
}

/// `[session]`: session tokens and their cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// The key-ring file (mode 0600), made by `keyward keys generate`.
    pub keyring: PathBuf,
    /// Name of the session cookie.
    pub cookie_name: String,
    /// The longest a session may last; verify-only keys retire after this.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Clock skew tolerated on expiry and issue times.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Validated sessions kept in memory.
    pub cache_capacity: u64,
    /// How long a session made by the portal lasts; unset: `max_lifetime`.
    #[serde(with = "humantime_serde")]
    pub lifetime: Option<Duration>,
    /// Cookie `Domain`: set a parent domain (`example.com`) for one sign-in to cover
    /// its subdomains; unset, the cookie stays on the host that set it.
    pub cookie_domain: Option<String>,
    /// Mark the cookie `Secure`. Unset: yes, except when every portal origin is
    /// plain-http localhost (development).
    pub cookie_secure: Option<bool>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            keyring: PathBuf::from("/var/lib/keyward/keyring.toml"),
            cookie_name: "keyward_session".into(),
            max_lifetime: Duration::from_secs(12 * 3600),
            leeway: Duration::from_secs(60),
            cache_capacity: 100_000,
            lifetime: None,
            cookie_domain: None,
            cookie_secure: None,
        }
    }
}

/// `[assertion]`: the signed JWT handed to upstreams in `X-Keyward-Assertion`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssertionConfig {
    pub enabled: bool,
    /// The `iss` claim; upstreams check it.
    pub issuer: String,
    /// Lifetime of one assertion (never beyond its session).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            issuer: "keyward".into(),
            ttl: Duration::from_secs(300),
        }
    }
}

/// `[policy]`: the route policy file (hot-reloaded).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub file: PathBuf,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("/etc/keyward/policy.toml"),
        }
    }
}

/// `[portal]`: the sign-in portal (WebAuthn ceremonies, devices page, OIDC) and the
/// JWKS listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    pub listen: SocketAddr,
    /// Where browsers are sent to sign in; keyward appends `?rd=<return URL>`.
    pub login_url: String,
    /// The WebAuthn relying-party id: the registrable domain every origin is under
    /// (`example.com` covers `auth.example.com` and `app.example.com`).
    pub rp_id: String,
    /// The name authenticators show ("Sign in to …").
    pub rp_name: String,
    /// The exact origins the portal is reached at (scheme, host, port; no path). A
    /// WebAuthn response from any other origin is refused; state-changing requests
    /// must carry one of them in `Origin`.
    pub origins: Vec<String>,
    /// Hosts a sign-in may return to (`app.example.com`, `*.example.com`,
    /// `localhost:8080`). Empty: the hosts of `origins`.
    pub return_hosts: Vec<String>,
    /// How people are identified: `invite` (local users from `keyward users invite`),
    /// `oidc` (IdP sign-in then a passkey at every login) or `oidc-enroll` (passkey
    /// sign-in; the IdP vouches for people when they enroll a device).
    pub identity: IdentityMode,
    /// How long an invite link stays valid.
    #[serde(with = "humantime_serde")]
    pub invite_ttl: Duration,
    /// Addresses allowed to say who the client is in `X-Forwarded-For` (HAProxy).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Ceremonies (sign-in or enrollment starts) allowed per client address per minute.
    pub rate_per_ip: u32,
    /// Ceremonies allowed per user per minute.
    pub rate_per_user: u32,
    pub attestation: AttestationConfig,
}

/// How the portal learns who someone is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    #[default]
    Invite,
    Oidc,
    OidcEnroll,
}

/// `[portal.attestation]`: hardware-bound security keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationConfig {
    /// PEM files of attestation root CAs (from the vendor or the FIDO MDS). When set,
    /// people can enroll a "security key": its attestation must chain to one of
    /// these, and its sessions are `attested` (what `device = "attested"` routes ask).
    pub ca_files: Vec<PathBuf>,
    /// Authenticator models (AAGUIDs) accepted as attested; empty: any model the CAs
    /// vouch for.
    pub aaguids: Vec<String>,
    /// Refuse every enrollment that is not an attested security key.
    pub required: bool,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            login_url: "http://localhost:8080/.keyward/login".into(),
            rp_id: "localhost".into(),
            rp_name: "keyward".into(),
            origins: vec!["http://localhost:8080".into()],
            return_hosts: Vec::new(),
            identity: IdentityMode::Invite,
            invite_ttl: Duration::from_secs(24 * 3600),
            trusted_proxies: vec![
                "127.0.0.1/32".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            rate_per_ip: 30,
            rate_per_user: 10,
            attestation: AttestationConfig::default(),
        }
    }
}

/// `[store]`: durable state (revocations, users, credentials).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite:///var/lib/keyward/keyward.db` (one node) or
    /// `postgres://keyward@db.internal/keyward?sslmode=verify-full` (shared by many
    /// nodes; leave the password out of the file: `PGPASSWORD` or a `PGPASSFILE`).
    pub url: String,
    /// How often agents read new revocations from the store (a revoke made with the
    /// CLI is also pushed to the local agent at once).
    #[serde(with = "humantime_serde")]
    pub revocation_poll: Duration,
    /// PostgreSQL: how often every agent announces a heartbeat to all; one that hears
    /// nothing for three periods takes its listening connection for dead and listens
    /// anew.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// The oldest the agent's copy of the revocation log may get (since its last
    /// successful read) and sessions still be honoured. Past it, an agent cut off from
    /// its store cannot know what was revoked elsewhere, and refuses sessions (deny,
    /// reason `error`) until it reads the log again; public routes stay public. Unset:
    /// the agent keeps deciding with the revocations it holds, however old.
    #[serde(with = "humantime_serde")]
    pub revocations_max_age: Option<Duration>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:///var/lib/keyward/keyward.db".into(),
            revocation_poll: Duration::from_secs(1),
            heartbeat: Duration::from_secs(10),
            revocations_max_age: None,
        }
    }
}

/// `[audit]`: security events as JSON lines.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Append audit lines to this file; standard output when unset.
    pub file: Option<PathBuf>,
}

const MIB: usize = 1024 * 1024;

/// `[spoa]`: the listener HAProxy's SPOE filter connects to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoaConfig {
    /// `IP:PORT` and/or `unix:/path` entries.
    pub listen: Vec<String>,
    pub max_frame_size: u32,
    pub max_inflight: usize,
    pub max_connections: usize,
    /// Read and write buffers of all SPOP connections together, in MiB, beyond which a
    /// connection keeps to its own 32 KiB.
    pub max_buffer_mib: usize,
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// `"auto"` (default): pipelining with HAProxy 2.x / 3.0, one request at a time per
    /// connection with 3.1+ (whose SPOP multiplexer can stall on pipelined ACKs);
    /// `"on"`, `"off"`. See docs/haproxy.md.
    #[serde(deserialize_with = "pipelining")]
    pub pipelining: Pipelining,
    /// Threads of keyward's runtime (SPOA, portal, ops). 0: one per CPU. Fewer leave
    /// HAProxy more room and save cross-thread wake-ups on cache hits, at the price of
    /// queueing behind new-session work (docs/benchmarks.md).
    pub worker_threads: usize,
}

impl Default for SpoaConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            listen: vec!["127.0.0.1:12345".into()],
            max_frame_size: l.max_frame_size,
            max_inflight: l.max_inflight,
            max_connections: l.max_connections,
            max_buffer_mib: l.max_buffered / MIB,
            hello_timeout: l.hello_timeout,
            idle_timeout: l.idle_timeout,
            handler_timeout: l.handler_timeout,
            drain_timeout: l.drain_timeout,
            pipelining: l.pipelining,
            worker_threads: 0,
        }
    }
}

/// `spoa.pipelining`: one of the words [`Pipelining`] parses.
fn pipelining<'de, D: Deserializer<'de>>(d: D) -> Result<Pipelining, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

impl SpoaConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_size: self.max_frame_size,
            max_inflight: self.max_inflight,
            max_connections: self.max_connections,
            max_buffered: self.max_buffer_mib.saturating_mul(MIB),
            hello_timeout: self.hello_timeout,
            idle_timeout: self.idle_timeout,
            handler_timeout: self.handler_timeout,
            drain_timeout: self.drain_timeout,
            pipelining: self.pipelining,
        }
    }

    /// The runtime's worker threads: `worker_threads`, or one per CPU.
    pub fn threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// The parsed listen addresses (valid after [`Config::validate`]).
    pub fn listen_addrs(&self) -> Vec<ListenAddr> {
        self.listen.iter().filter_map(|s| s.parse().ok()).collect()
    }
}

/// `[ops]`: metrics and health endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    pub listen: SocketAddr,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9181)),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter: `info`, `keyward=debug,info`, ... `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that cannot be used, with the key at fault and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("`{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
    /// The `[oidc]` section; the message names the key.
    #[error("{0}")]
    Oidc(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        Self::Load(Box::new(e))
    }
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

impl Config {
    /// How long a session made by the portal lasts.
    pub fn session_lifetime(&self) -> Duration {
        self.session.lifetime.unwrap_or(self.session.max_lifetime)
    }

    /// Seconds after which nothing sealed or revoked now can still match a valid
    /// session: the longest session plus the clock leeway. Verify-only session keys
    /// retire, and revocations are forgotten, after this.
    pub fn session_horizon_secs(&self) -> i64 {
        (self.session.max_lifetime + self.session.leeway).as_secs() as i64
    }

    /// The same for upstream assertions: verify-only assertion keys retire after this.
    pub fn assertion_horizon_secs(&self) -> i64 {
        (self.assertion.ttl + self.session.leeway).as_secs() as i64
    }

    /// Loads `path` (which must exist) with `KEYWARD_*` overrides, then validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(invalid(
                "--config",
                format!(
                    "{} is not a readable file; pass the path of keyward.toml",
                    path.display()
                ),
            ));
        }
        Self::from_figment(Self::figment(path))
    }

    /// The providers, in order of precedence (later wins): file, environment.
    pub fn figment(path: &Path) -> Figment {
        Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("KEYWARD_").split("__").ignore(&["config"]))
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values serde cannot: ranges, addresses, how limits relate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version != CONFIG_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "this keyward reads config version {CONFIG_VERSION}; found {}",
                    self.version
                ),
            ));
        }
        let s = &self.spoa;
        if s.listen.is_empty() {
            return Err(invalid(
                "spoa.listen",
                "give at least one address, e.g. [\"127.0.0.1:12345\"]",
            ));
        }
        for l in &s.listen {
            l.parse::<ListenAddr>()
                .map_err(|e| invalid("spoa.listen", e))?;
        }
        if !(256..=1024 * 1024).contains(&s.max_frame_size) {
            return Err(invalid(
                "spoa.max_frame_size",
                format!(
                    "{} is outside 256..=1048576; HAProxy's default is 16384",
                    s.max_frame_size
                ),
            ));
        }
        if s.max_inflight == 0 || s.max_inflight > 10_000 {
            return Err(invalid(
                "spoa.max_inflight",
                "must be between 1 and 10000 (default 64)",
            ));
        }
        if s.worker_threads > 1024 {
            return Err(invalid(
                "spoa.worker_threads",
                "at most 1024 (0: one per CPU, the default)",
            ));
        }
        if s.max_connections == 0 {
            return Err(invalid(
                "spoa.max_connections",
                "must be at least 1 (default 8192)",
            ));
        }
        if !(1..=1024 * 1024).contains(&s.max_buffer_mib) {
            return Err(invalid(
                "spoa.max_buffer_mib",
                format!(
                    "must be 1..=1048576 MiB (default 256), not {}",
                    s.max_buffer_mib
                ),
            ));
        }
        for (key, d) in [
            ("spoa.hello_timeout", s.hello_timeout),
            ("spoa.idle_timeout", s.idle_timeout),
            ("spoa.handler_timeout", s.handler_timeout),
            ("spoa.drain_timeout", s.drain_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than zero, e.g. \"1s\""));
            }
        }
        if s.handler_timeout >= Duration::from_secs(5) {
            return Err(invalid(
                "spoa.handler_timeout",
                "must be below \"5s\", and below HAProxy's `timeout processing` (shipped: 500ms); use e.g. \"400ms\"",
            ));
        }
        let sess = &self.session;
        if sess.cookie_name.is_empty()
            || !sess
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                "session.cookie_name",
                "use letters, digits, `-`, `_` or `.` only (default \"keyward_session\")",
            ));
        }
        if sess.max_lifetime < Duration::from_secs(60)
            || sess.max_lifetime > Duration::from_secs(30 * 86_400)
        {
            return Err(invalid(
                "session.max_lifetime",
                "must be between \"1m\" and \"30d\" (default \"12h\")",
            ));
        }
        if sess.leeway > Duration::from_secs(300) {
            return Err(invalid(
                "session.leeway",
                "more than \"5m\" of clock skew hides real problems; fix the clocks",
            ));
        }
        if sess.cache_capacity == 0 {
            return Err(invalid(
                "session.cache_capacity",
                "must be at least 1 (default 100000)",
            ));
        }
        if self.assertion.ttl.is_zero() || self.assertion.ttl > Duration::from_secs(3600) {
            return Err(invalid(
                "assertion.ttl",
                "must be between \"1s\" and \"1h\" (default \"5m\")",
            ));
        }
        if self.assertion.issuer.is_empty() {
            return Err(invalid(
                "assertion.issuer",
                "set the `iss` upstreams expect, e.g. \"https://auth.example.com\"",
            ));
        }
        let url = &self.portal.login_url;
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.contains('?')
            || url.contains('#')
        {
            return Err(invalid(
                "portal.login_url",
                format!(
                    "`{url}` must be an absolute http(s) URL without query or fragment, e.g. \"https://auth.example.com/.keyward/login\""
                ),
            ));
        }
        if let Some(lifetime) = sess.lifetime
            && (lifetime < Duration::from_secs(60) || lifetime > sess.max_lifetime)
        {
            return Err(invalid(
                "session.lifetime",
                "must be between \"1m\" and `session.max_lifetime` (unset: the same)",
            ));
        }
        if let Some(domain) = &sess.cookie_domain
            && !portal::is_hostname(domain.trim_start_matches('.'))
        {
            return Err(invalid(
                "session.cookie_domain",
                format!("`{domain}` is not a domain name; e.g. \"example.com\""),
            ));
        }
        portal::validate(self)?;
        self.tunnels.validate()?;
        if let Some(oidc) = &self.oidc {
            oidc.validate()
                .map_err(|e| ConfigError::Oidc(e.to_string()))?;
        }
        if !self.store.url.starts_with("sqlite:")
            && !self.store.url.starts_with("postgres://")
            && !self.store.url.starts_with("postgresql://")
        {
            return Err(invalid(
                "store.url",
                "use sqlite:///path/to/keyward.db (one node) or postgres://user@host/database (many nodes)",
            ));
        }
        // An in-memory database is lost on restart, and each process (the agent, every
        // CLI command) would have its own: revocations would never reach the agent.
        if self.store.url.contains(":memory:") || self.store.url.contains("mode=memory") {
            return Err(invalid(
                "store.url",
                "an in-memory database loses users, devices and revocations; use sqlite:///path/to/keyward.db",
            ));
        }
        if self.store.revocation_poll.is_zero()
            || self.store.revocation_poll > Duration::from_secs(300)
        {
            return Err(invalid(
                "store.revocation_poll",
                "must be between \"1ms\" and \"5m\" (default \"1s\"): other agents apply revocations this late",
            ));
        }
        if self.store.heartbeat < Duration::from_millis(100)
            || self.store.heartbeat > Duration::from_secs(300)
        {
            return Err(invalid(
                "store.heartbeat",
                "must be between \"100ms\" and \"5m\" (default \"10s\")",
            ));
        }
        // Reads every poll: a bound of fewer than three polls would refuse sessions
        // whenever one read is late.
        if let Some(max) = self.store.revocations_max_age
            && (max < self.store.revocation_poll * 3 || max < Duration::from_secs(1))
        {
            return Err(invalid(
                "store.revocations_max_age",
                "must be at least three `store.revocation_poll` periods, and at least \"1s\"",
            ));
        }
        Ok(())
    }
}

/// Where `keyward` looks for its config when `--config` is not given.
pub fn default_path() -> PathBuf {
    std::env::var_os("KEYWARD_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/keyward/keyward.toml"))
}

mod portal;
mod tunnels;
pub use portal::{host_within, parse_origin};
pub use tunnels::{ApiAddr, TunnelsConfig};
#[cfg(test)]
mod tests;
