//! The per-request decision: reads the `keyward-request` SPOE message, finds and
//! validates the session (cache first), applies revocations and the route policy, and
//! answers with the `txn.keyward.*` variables.
//!
//! [`Gate::decide`] is a function of (request, policy, keys, revocations, now); the
//! handler wraps it with the clock and the ACK. Policy, keys and revocations are
//! swapped atomically while requests flow.

pub mod cache;
pub mod credential;
pub mod metrics;
pub mod request;
pub mod tunnels;
pub mod vars;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use keyward_policy::{Policy, RequestFacts, SessionState, Verdict};
use keyward_session::assertion::AssertionSigner;
use keyward_session::keyring::KeyRing;
use keyward_session::token::{self, TokenError, Validity};
use keyward_spoa::{Actions, Failure, Handler, HandlerError, Request};
use keyward_store::Revocations;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

pub use keyward_policy::{Decision, Reason};
pub use metrics::GateMetrics;
pub use request::{AccessRequest, MAX_RETURN_URL, MESSAGE};

use cache::{Assertion, Session, Sessions};
use tunnels::{StreamRef, TunnelArgError, Tunnels};

/// Settings of the request path (from `[session]`, `[assertion]`, `[portal]`).
#[derive(Debug, Clone)]
pub struct GateConfig {
    pub cookie_name: String,
    /// Seconds of clock skew tolerated.
    pub leeway: i64,
    /// The longest a session may last (`session.max_lifetime`, seconds), whatever its
    /// token says.
    pub max_lifetime: i64,
    /// Browsers needing a session go here, with `?rd=<url>`.
    pub login_url: String,
    /// `None`: no upstream assertion.
    pub assertion: Option<AssertionConfig>,
    pub cache_capacity: u64,
    /// `store.revocations_max_age` (seconds): past it since the revocation log was last
    /// read, sessions are refused. `None`: revocations of any age are trusted.
    pub revocations_max_age: Option<i64>,
    /// `tunnels.max_tracked` when tunnels are ended with their session
    /// (`tunnels.enabled`); `None`: upgrades are decided, then left alone.
    pub tunnels: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct AssertionConfig {
    pub issuer: String,
    pub ttl_secs: i64,
}

/// The keys in use: the ring and the signer built from it.
#[derive(Debug)]
pub struct Keys {
    pub ring: KeyRing,
    /// The assertion signer and its key id, shared by the cached assertions it signed.
    signer: Option<(AssertionSigner, Arc<str>)>,
    generation: u64,
    /// The ids of the session keys, shared by the cached sessions that name them (a
    /// million sessions, one copy of each id).
    session_key_ids: Vec<Arc<str>>,
}

impl Keys {
    pub fn new(ring: KeyRing) -> Self {
        let signer = AssertionSigner::new(&ring).ok().map(|s| {
            let id = s.kid().into();
            (s, id)
        });
        let generation = ring.generation();
        let session_key_ids = ring.session_keys().iter().map(|k| k.id().into()).collect();
        Self {
            ring,
            signer,
            generation,
            session_key_ids,
        }
    }

    /// The shared copy of session key id `id`.
    fn session_key_id(&self, id: &str) -> Arc<str> {
        self.session_key_ids
            .iter()
            .find(|k| &***k == id)
            .cloned()
            .unwrap_or_else(|| id.into())
    }

    /// [`KeyRing::generation`], computed once.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What was decided, and about which session.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The valid session, whose identity goes to the upstream on allow.
    pub session: Option<Arc<Session>>,
    /// A revoked session presented with the request (for the audit only).
    pub revoked: Option<Arc<Session>>,
}

enum Found {
    None,
    Expired,
    Invalid,
    Revoked(Arc<Session>),
    Valid(Arc<Session>),
}

/// Most session cookies of one name a request may carry (a browser sends one per
/// path and domain it was set for); more are refused.
pub const MAX_SESSION_COOKIES: usize = 4;

/// The SPOA handler keyward serves.
#[derive(Debug)]
pub struct Gate {
    cfg: GateConfig,
    policy: ArcSwap<Policy>,
    keys: ArcSwap<Keys>,
    revocations: ArcSwap<Revocations>,
    /// When the store's revocations were last read (unix seconds; 0: never).
    revocations_read_at: AtomicI64,
    sessions: Sessions,
    tunnels: Option<Tunnels>,
    metrics: GateMetrics,
}

impl Gate {
    pub fn new(cfg: GateConfig, policy: Policy, keys: Keys, metrics: GateMetrics) -> Self {
        metrics.policy_rules.set(policy.len() as i64);
        metrics.keyring_generation.set(keys.generation as i64);
        Self {
            sessions: cache::session_cache(cfg.cache_capacity, cfg.leeway),
            tunnels: cfg.tunnels.map(Tunnels::new),
            cfg,
            policy: ArcSwap::from_pointee(policy),
            keys: ArcSwap::from_pointee(keys),
            revocations: ArcSwap::from_pointee(Revocations::default()),
            revocations_read_at: AtomicI64::new(0),
            metrics,
        }
    }

    /// Replaces the route policy; the next request uses it.
    pub fn set_policy(&self, policy: Policy) {
        self.metrics.policy_rules.set(policy.len() as i64);
        self.policy.store(Arc::new(policy));
    }

    /// Replaces the key ring; the next request uses it. Cached sessions stay: each is
    /// checked against the new ring on its next hit (see [`cache`]), so a retired key
    /// stops working on the next request, and a rotation costs no cache misses.
    pub fn set_keys(&self, keys: Keys) {
        self.metrics.keyring_generation.set(keys.generation as i64);
        self.keys.store(Arc::new(keys));
    }

    pub fn validity(&self) -> Validity {
        Validity {
            leeway: self.cfg.leeway,
            max_lifetime: self.cfg.max_lifetime,
        }
    }

    /// The tunnels allowed with a session (`None`: not tracked).
    pub fn tunnels(&self) -> Option<&Tunnels> {
        self.tunnels.as_ref()
    }

    /// Seconds of clock skew tolerated (`session.leeway`).
    pub fn leeway(&self) -> i64 {
        self.cfg.leeway
    }

    /// Remembers the tunnel an allowed upgrade (message `keyward-upgrade`) opens, so
    /// that it can be ended with its session. A tunnel that cannot be remembered (the
    /// table, or the session's share of it, is full) is refused: it could not be ended.
    /// Only read when tunnels are on and a session is allowed: a stream that cannot be
    /// named then is an error (the request fails closed).
    fn track_tunnel(&self, request: &Request, outcome: &mut Outcome) -> Result<(), TunnelArgError> {
        let (Some(tunnels), Some(session)) = (&self.tunnels, &outcome.session) else {
            return Ok(());
        };
        if outcome.verdict.decision != Decision::Allow {
            return Ok(());
        }
        let Some(stream) = StreamRef::from_spoe(request)? else {
            return Ok(());
        };
        match tunnels.track(stream, session.clone()) {
            Ok(()) => self.metrics.tunnels_tracked.set(tunnels.len() as i64),
            Err(full) => {
                self.metrics.tunnels_refused.inc();
                tracing::warn!(
                    target: "audit",
                    event = "tunnel_refused",
                    session = session.claims.sid.as_str(),
                    device = session.claims.dev.as_deref().unwrap_or("-"),
                    why = full.as_str(),
                );
                outcome.verdict.decision = Decision::Deny;
                outcome.verdict.reason = Reason::Error;
            }
        }
        Ok(())
    }

    /// Brings the `keyward_tunnels_tracked` gauge up to date (after the reaper forgot
    /// some).
    pub fn tunnels_changed(&self) {
        if let Some(t) = &self.tunnels {
            self.metrics.tunnels_tracked.set(t.len() as i64);
        }
    }

    pub fn keys(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    /// The revocations in force.
    pub fn revocations(&self) -> Arc<Revocations> {
        self.revocations.load_full()
    }

    /// Replaces the revocation snapshot.
    pub fn set_revocations(&self, revocations: Revocations) {
        self.metrics.revocations.set(revocations.len() as i64);
        self.revocations.store(Arc::new(revocations));
    }

    /// Records that the store's revocations were read at `now` (unix seconds), after
    /// what was read was applied with [`Gate::set_revocations`].
    pub fn revocations_read(&self, now: i64) {
        let newest = self
            .revocations_read_at
            .fetch_max(now, Ordering::AcqRel)
            .max(now);
        self.metrics.revocations_read.set(newest);
    }

    /// Whether the revocations in hand are too old to trust sessions by at `now`
    /// (`store.revocations_max_age`).
    fn revocations_too_old(&self, now: i64) -> bool {
        self.cfg.revocations_max_age.is_some_and(|max| {
            now.saturating_sub(self.revocations_read_at.load(Ordering::Acquire)) > max
        })
    }

    /// Sessions in the cache (after pending evictions ran).
    pub fn cached_sessions(&self) -> u64 {
        self.sessions.run_pending_tasks();
        let n = self.sessions.entry_count();
        self.metrics.cache_entries.set(n as i64);
        n
    }

    /// The ACK's variables for one NOTIFY at `now` (unix seconds): decide, remember
    /// the tunnel an allowed upgrade opens, answer.
    pub fn answer(&self, request: &Request, now: i64) -> Result<Actions, HandlerError> {
        let req = AccessRequest::from_spoe(request)?;
        let mut outcome = self.decide(&req, now);
        self.track_tunnel(request, &mut outcome)?;
        Ok(self.actions(&req, &outcome, now))
    }

    /// Decides on one request at `now` (unix seconds).
    pub fn decide(&self, req: &AccessRequest, now: i64) -> Outcome {
        let found = credential::find(
            req.cookie.as_deref(),
            req.authorization.as_deref(),
            &self.cfg.cookie_name,
        );
        let mut found = match found {
            None => Found::None,
            Some(c) if c.repeated => match &req.cookie {
                Some(header) => self.one_of_repeated(header, now),
                None => Found::Invalid,
            },
            Some(c) => match self.session(c.token, now) {
                Ok(s) if self.revocations.load().is_revoked(&s.claims) => Found::Revoked(s),
                Ok(s) => Found::Valid(s),
                Err(e) if e.is_expired() => Found::Expired,
                Err(_) => Found::Invalid,
            },
        };
        let state = match &found {
            Found::None => SessionState::None,
            Found::Expired => SessionState::Expired,
            Found::Invalid => SessionState::Invalid,
            Found::Revoked(_) => SessionState::Revoked,
            Found::Valid(s) => SessionState::Valid(&s.claims),
        };
        let facts = RequestFacts {
            host: &req.host,
            path: &req.path,
            method: &req.method,
            src: req.src,
        };
        let verdict = if request::valid_host(&req.host_header) {
            let policy = self.policy.load();
            let verdict = policy.evaluate(&facts, state, now);
            if matches!(found, Found::Valid(_)) && self.revocations_too_old(now) {
                // Cut off from the revocation log: whether this session was revoked
                // elsewhere is unknown. It yields no identity; a route that needs one
                // is refused (not sent to sign in, where a new session would be no
                // better), a public one stays public.
                found = Found::None;
                let anonymous = policy.evaluate(&facts, SessionState::None, now);
                if anonymous.decision == Decision::Allow {
                    anonymous
                } else {
                    Verdict {
                        decision: Decision::Deny,
                        reason: Reason::Error,
                        rule: verdict.rule,
                        assertion: false,
                    }
                }
            } else {
                verdict
            }
        } else {
            Verdict {
                decision: Decision::Deny,
                reason: Reason::Forbidden,
                rule: None,
                assertion: false,
            }
        };
        match found {
            Found::Valid(s) => Outcome {
                verdict,
                session: Some(s),
                revoked: None,
            },
            Found::Revoked(s) => Outcome {
                verdict,
                session: None,
                revoked: Some(s),
            },
            _ => Outcome {
                verdict,
                session: None,
                revoked: None,
            },
        }
    }

    /// The session of a `Cookie` header carrying several session cookies (one set for a
    /// longer path, or for the parent domain by a sibling site). The valid ones must all
    /// be one user's, else none counts: the first cookie must not choose who the
    /// request is. An unrevoked one is preferred; junk is skipped. At most
    /// [`MAX_SESSION_COOKIES`] are looked at, and a header with more is refused.
    fn one_of_repeated(&self, header: &str, now: i64) -> Found {
        let revocations = self.revocations.load();
        let mut chosen: Option<Arc<Session>> = None;
        let mut expired = false;
        for (i, token) in credential::cookie_values(header, &self.cfg.cookie_name).enumerate() {
            if i == MAX_SESSION_COOKIES {
                return Found::Invalid;
            }
            match self.session(token, now) {
                Ok(s) => {
                    if let Some(c) = &chosen {
                        if c.claims.sub != s.claims.sub {
                            return Found::Invalid;
                        }
                        if !revocations.is_revoked(&c.claims) {
                            continue;
                        }
                    }
                    chosen = Some(s);
                }
                Err(e) if e.is_expired() => expired = true,
                Err(_) => {}
            }
        }
        match chosen {
            Some(s) if revocations.is_revoked(&s.claims) => Found::Revoked(s),
            Some(s) => Found::Valid(s),
            None if expired => Found::Expired,
            None => Found::Invalid,
        }
    }

    /// A validated session for `token`: from the cache, or opened and cached.
    ///
    /// A session opened under a ring that [`Gate::set_keys`] replaced a moment later is
    /// still cached with the old ring's generation, so its next hit checks its key.
    fn session(&self, token: &str, now: i64) -> Result<Arc<Session>, TokenError> {
        let keys = self.keys.load();
        if let Some(s) = self.sessions.get(token) {
            if s.trusted_under(&keys.ring, keys.generation) {
                self.metrics.cache_hits.inc();
                if now > s.claims.exp.saturating_add(self.cfg.leeway) {
                    return Err(TokenError::Expired);
                }
                return Ok(s);
            }
            // Its key was retired: opening it again gives the reason.
            self.sessions.invalidate(token);
        }
        self.metrics.cache_misses.inc();
        let started = Instant::now();
        let opened = token::open_with_key(token, &keys.ring, now, self.validity());
        self.metrics
            .validation_seconds
            .observe(started.elapsed().as_secs_f64());
        let (claims, key) = opened?;
        let key = keys.session_key_id(key);
        let session = Arc::new(Session::new(claims, key, keys.generation));
        self.sessions.insert(token.into(), session.clone());
        Ok(session)
    }

    /// The assertion for `session` at `audience`, signed once and reused until shortly
    /// before it expires.
    fn assertion(&self, session: &Session, audience: &str, now: i64) -> Option<Arc<str>> {
        let cfg = self.cfg.assertion.as_ref()?;
        let keys = self.keys.load();
        if let Some(jwt) = session.assertion(audience, now, keys.generation) {
            return Some(jwt);
        }
        let (signer, signer_id) = keys.signer.as_ref()?;
        let c = &session.claims;
        let until = c.exp.saturating_add(self.cfg.leeway.max(0));
        match signer.sign_until(c, audience, &cfg.issuer, cfg.ttl_secs, now, until) {
            Ok((jwt, exp)) => {
                let margin = (cfg.ttl_secs / 5).clamp(1, 60);
                let jwt: Arc<str> = jwt.into();
                session.keep_assertion(
                    audience,
                    Assertion {
                        jwt: jwt.clone(),
                        refresh_at: exp - margin,
                        key: signer_id.clone(),
                        generation: keys.generation,
                    },
                );
                Some(jwt)
            }
            Err(err) => {
                tracing::error!(%err, "signing the upstream assertion failed");
                None
            }
        }
    }

    /// The ACK's variables for `outcome`.
    pub fn actions(&self, req: &AccessRequest, outcome: &Outcome, now: i64) -> Actions {
        let Verdict {
            mut decision,
            mut reason,
            rule,
            assertion,
        } = outcome.verdict;
        // A route that gives its upstream an assertion (when assertions are on) gets no
        // identity without one: should signing fail, the request is refused.
        let mut jwt = None;
        if decision == Decision::Allow
            && assertion
            && self.cfg.assertion.is_some()
            && let Some(s) = &outcome.session
        {
            jwt = self.assertion(s, &req.host, now);
            if jwt.is_none() {
                (decision, reason) = (Decision::Deny, Reason::Error);
            }
        }
        let mut a = Actions::new();
        vars::set_decision(&mut a, decision, reason);
        match decision {
            Decision::Allow => {
                // keyward's cookie is for keyward: HAProxy forwards this instead.
                if let Some(rest) = req
                    .cookie
                    .as_deref()
                    .and_then(|c| credential::without_cookie(c, &self.cfg.cookie_name))
                {
                    a.set_txn("cookie", rest);
                }
                if let Some(s) = &outcome.session {
                    let c = &s.claims;
                    a.set_txn("user", c.sub.as_str())
                        .set_txn("roles", s.roles.as_str())
                        .set_txn("session", c.sid.as_str());
                    if let Some(email) = &c.email {
                        a.set_txn("email", email.as_str());
                    }
                    if let Some(dev) = &c.dev {
                        a.set_txn("device", dev.as_str());
                    }
                    if let Some(jwt) = &jwt {
                        a.set_txn("assertion", &**jwt);
                    }
                }
            }
            Decision::Login => {
                let url = match req.return_url() {
                    Some(back) => format!(
                        "{}?rd={}",
                        self.cfg.login_url,
                        utf8_percent_encode(&back, NON_ALPHANUMERIC)
                    ),
                    None => self.cfg.login_url.clone(),
                };
                a.set_txn("login_url", url);
            }
            Decision::Deny => {}
        }
        self.metrics.decision(decision, reason);
        if decision == Decision::Deny || matches!(reason, Reason::Invalid | Reason::Revoked) {
            let claims = outcome
                .session
                .as_ref()
                .or(outcome.revoked.as_ref())
                .map(|s| &s.claims);
            tracing::info!(
                target: "audit",
                event = "access",
                decision = decision.as_str(),
                reason = reason.as_str(),
                route = rule.and_then(|i| self.policy.load().rule_name(i).map(str::to_owned)).as_deref().unwrap_or("-"),
                session = claims.map_or("-", |c| c.sid.as_str()),
                device = claims.and_then(|c| c.dev.as_deref()).unwrap_or("-"),
                method = &*req.method,
            );
        }
        a
    }
}

impl Handler for Gate {
    async fn handle(&self, request: Request) -> Result<Actions, HandlerError> {
        self.answer(&request, cache::unix_now())
    }

    fn on_failure(&self, failure: Failure) -> Actions {
        tracing::warn!(target: "audit", event = "decision_failed", failure = failure.as_str());
        vars::failure()
    }
}

#[cfg(test)]
mod tests;
