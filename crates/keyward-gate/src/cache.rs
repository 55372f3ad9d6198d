//! The in-memory cache of the request path.
//!
//! Validated sessions, keyed by the token itself: a hit is one hash of the token with a
//! fast keyed hasher and one comparison of the whole token, so a different token can
//! never hit another's entry. Each entry expires with its token and the capacity is
//! bounded. Only successful validations are cached: a flood of forged tokens costs CPU,
//! never memory (and, never inserted, cannot crowd the table's buckets either).
//!
//! Each session carries the upstream assertions signed for it, one per audience (host),
//! at most [`MAX_AUDIENCES`]; each is re-signed a margin before it expires. They leave
//! the cache with their session.
//!
//! A session remembers the session key that opened it, and each assertion the key that
//! signed it, so a change of the key ring costs nothing for the sessions it leaves
//! valid: the first hit under a new ring checks the session's key is still trusted
//! (else the session is refused at once) and drops the assertions whose key left the
//! JWKS. Every hit under an unchanged ring skips all that with one comparison.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub(crate) use keyward_session::sys::unix_now;
use keyward_session::{Claims, KeyRing};
use moka::Expiry;
use moka::sync::Cache;

/// Assertions kept per session; a session reaching more hosts replaces the one that
/// expires first.
pub const MAX_AUDIENCES: usize = 4;

/// The cache's hasher: fast, seeded at random per process (equality decides a hit).
pub type TokenHasher = foldhash::fast::RandomState;

/// The session cache: token -> validated session.
pub type Sessions = Cache<Box<str>, Arc<Session>, TokenHasher>;

/// A validated session, with what the ACK needs precomputed.
#[derive(Debug)]
pub struct Session {
    pub claims: Claims,
    /// `roles` joined with commas.
    pub roles: String,
    /// The session key that opened the token.
    key: Arc<str>,
    /// The ring generation under which the session and its assertions were last found
    /// trusted.
    generation: AtomicU64,
    assertions: Mutex<Vec<(Box<str>, Assertion)>>,
}

/// A signed assertion and when to sign it again.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub jwt: Arc<str>,
    /// Not used after this instant (unix seconds), a margin before it expires.
    pub refresh_at: i64,
    /// The assertion key that signed it.
    pub key: Arc<str>,
    /// The generation of the ring it was signed under, or found still published in.
    pub generation: u64,
}

impl Session {
    /// A session opened by session key `key` under ring generation `generation`.
    pub fn new(claims: Claims, key: Arc<str>, generation: u64) -> Self {
        let roles = claims.roles.join(",");
        Self {
            claims,
            roles,
            key,
            generation: AtomicU64::new(generation),
            assertions: Mutex::new(Vec::new()),
        }
    }

    /// Whether the session is still trusted under `ring` (of `generation`): always
    /// when the ring is the one last checked; otherwise when its session key still
    /// opens tokens, and then its assertions whose key left the JWKS are dropped.
    pub fn trusted_under(&self, ring: &KeyRing, generation: u64) -> bool {
        if self.generation.load(Ordering::Acquire) == generation {
            return true;
        }
        if ring.verifying_session_key(&self.key).is_none() {
            return false;
        }
        let mut kept = self
            .assertions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        kept.retain(|(_, a)| a.generation == generation || ring.publishes_assertion_key(&a.key));
        for (_, a) in kept.iter_mut() {
            a.generation = generation;
        }
        self.generation.store(generation, Ordering::Release);
        true
    }

    /// The assertion for `audience`, while it is still fresh at `now` and was signed
    /// under (or checked against) the ring of `generation`. One signed under an older
    /// ring by a request racing [`Session::trusted_under`] is signed again.
    pub fn assertion(&self, audience: &str, now: i64, generation: u64) -> Option<Arc<str>> {
        let kept = self
            .assertions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        kept.iter()
            .find(|(aud, a)| &**aud == audience && now < a.refresh_at && a.generation == generation)
            .map(|(_, a)| a.jwt.clone())
    }

    /// Keeps `assertion` for `audience`, replacing an older one for it, or the one that
    /// goes stale first when [`MAX_AUDIENCES`] are kept.
    pub fn keep_assertion(&self, audience: &str, assertion: Assertion) {
        let mut kept = self
            .assertions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = kept.iter_mut().find(|(aud, _)| &**aud == audience) {
            slot.1 = assertion;
        } else if kept.len() < MAX_AUDIENCES {
            kept.push((audience.into(), assertion));
        } else if let Some(slot) = kept.iter_mut().min_by_key(|(_, a)| a.refresh_at) {
            *slot = (audience.into(), assertion);
        }
    }

    /// How many assertions are kept.
    #[cfg(test)]
    pub(crate) fn assertions_kept(&self) -> usize {
        self.assertions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn until(unix: i64) -> Duration {
    Duration::from_secs(unix.saturating_sub(unix_now()).max(0) as u64)
}

struct SessionExpiry {
    leeway: i64,
}

impl Expiry<Box<str>, Arc<Session>> for SessionExpiry {
    fn expire_after_create(&self, _: &Box<str>, s: &Arc<Session>, _: Instant) -> Option<Duration> {
        Some(until(s.claims.exp.saturating_add(self.leeway)))
    }
}

pub fn session_cache(capacity: u64, leeway: i64) -> Sessions {
    Cache::builder()
        .max_capacity(capacity)
        .expire_after(SessionExpiry { leeway })
        .build_with_hasher(TokenHasher::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_session::AuthMethod;

    fn session() -> Session {
        Session::new(
            Claims {
                sid: "s".into(),
                sub: "u".into(),
                email: None,
                roles: vec!["a".into(), "b".into()],
                dev: None,
                aaguid: None,
                amr: AuthMethod::Passkey,
                auth_time: 0,
                iat: 0,
                exp: unix_now() + 3600,
            },
            "k4.lid.s".into(),
            G,
        )
    }

    const G: u64 = 7;

    fn asrt(jwt: &str, refresh_at: i64) -> Assertion {
        Assertion {
            jwt: jwt.into(),
            refresh_at,
            key: "a1".into(),
            generation: G,
        }
    }

    #[test]
    fn assertions_are_per_audience_fresh_and_bounded() {
        let s = session();
        assert_eq!(s.roles, "a,b");
        s.keep_assertion("one", asrt("j1", 50));
        assert_eq!(s.assertion("one", 49, G).as_deref(), Some("j1"));
        assert_eq!(s.assertion("one", 50, G), None, "stale at refresh_at");
        assert_eq!(s.assertion("two", 10, G), None);
        // Re-signed: replaced in place.
        s.keep_assertion("one", asrt("j1b", 90));
        assert_eq!(s.assertion("one", 60, G).as_deref(), Some("j1b"));
        assert_eq!(s.assertions_kept(), 1);
        for (i, aud) in ["two", "three", "four"].into_iter().enumerate() {
            s.keep_assertion(aud, asrt(aud, 70 + i as i64));
        }
        assert_eq!(s.assertions_kept(), MAX_AUDIENCES);
        // A fifth host replaces the one that goes stale first ("two", at 70).
        s.keep_assertion("five", asrt("j5", 95));
        assert_eq!(s.assertions_kept(), MAX_AUDIENCES);
        assert_eq!(s.assertion("two", 0, G), None);
        assert_eq!(s.assertion("five", 0, G).as_deref(), Some("j5"));
        assert_eq!(s.assertion("one", 0, G).as_deref(), Some("j1b"));
    }

    #[test]
    fn an_assertion_signed_under_an_older_ring_is_not_reused() {
        let s = session();
        // Signed by a request still holding the ring before the current one.
        s.keep_assertion(
            "one",
            Assertion {
                generation: G - 1,
                ..asrt("old", 50)
            },
        );
        assert_eq!(s.assertion("one", 0, G), None);
        s.keep_assertion("one", asrt("new", 50));
        assert_eq!(s.assertion("one", 0, G).as_deref(), Some("new"));
    }

    #[test]
    fn only_the_same_token_hits() {
        let cache = session_cache(10, 0);
        let s = Arc::new(session());
        cache.insert("v4.local.token-a".into(), s.clone());
        assert!(cache.get("v4.local.token-a").is_some());
        assert!(cache.get("v4.local.token-b").is_none());
        assert!(cache.get("v4.local.token-").is_none());
        assert!(cache.get("v4.local.token-aa").is_none());
    }
}
