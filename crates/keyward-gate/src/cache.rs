//! The in-memory caches of the request path.
//!
//! - Sessions: validated tokens, keyed by a BLAKE3 digest of the token (32 bytes, so a
//!   4 KiB token costs no more memory than a short one), each entry expiring with its
//!   token, capacity bounded. Only successful validations are cached: a flood of forged
//!   tokens costs CPU, never memory.
//! - Assertions: signed JWTs per (session, audience), dropped a margin before expiry so
//!   they are re-signed in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_session::Claims;
pub(crate) use keyward_session::sys::unix_now;
use moka::Expiry;
use moka::sync::Cache;

/// A validated session, with what the ACK needs precomputed.
#[derive(Debug)]
pub struct Session {
    pub claims: Claims,
    /// `roles` joined with commas.
    pub roles: String,
}

impl Session {
    pub fn new(claims: Claims) -> Self {
        let roles = claims.roles.join(",");
        Self { claims, roles }
    }
}

pub type Digest = [u8; 32];

pub fn digest(token: &str) -> Digest {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn until(unix: i64) -> Duration {
    Duration::from_secs(unix.saturating_sub(unix_now()).max(0) as u64)
}

struct SessionExpiry {
    leeway: i64,
}

impl Expiry<Digest, Arc<Session>> for SessionExpiry {
    fn expire_after_create(&self, _: &Digest, s: &Arc<Session>, _: Instant) -> Option<Duration> {
        Some(until(s.claims.exp + self.leeway))
    }
}

/// A signed assertion and when it expires.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub jwt: Arc<str>,
    pub exp: i64,
    /// Dropped from the cache at this instant, a margin before `exp`.
    pub refresh_at: i64,
}

struct AssertionExpiry;

impl Expiry<Digest, Assertion> for AssertionExpiry {
    fn expire_after_create(&self, _: &Digest, a: &Assertion, _: Instant) -> Option<Duration> {
        Some(until(a.refresh_at))
    }
}

pub fn session_cache(capacity: u64, leeway: i64) -> Cache<Digest, Arc<Session>> {
    Cache::builder()
        .max_capacity(capacity)
        .expire_after(SessionExpiry { leeway })
        .build()
}

pub fn assertion_cache(capacity: u64) -> Cache<Digest, Assertion> {
    Cache::builder()
        .max_capacity(capacity)
        .expire_after(AssertionExpiry)
        .build()
}

/// Key of an assertion: the session and the audience.
pub fn assertion_key(sid: &str, audience: &str) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(sid.as_bytes());
    h.update(&[0]);
    h.update(audience.as_bytes());
    *h.finalize().as_bytes()
}
