//! Metrics of the request path, under `keyward_`. Labels: decision and reason only.

use keyward_policy::{Decision, Reason};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

const DECISIONS: [Decision; 3] = [Decision::Allow, Decision::Login, Decision::Deny];

#[derive(Debug, Clone)]
pub struct GateMetrics {
    /// decision x reason, resolved once.
    decisions: Vec<IntCounter>,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub validation_seconds: Histogram,
    pub keyring_generation: IntGauge,
    pub revocations: IntGauge,
    /// When the store's revocations were last read (unix seconds): an agent that
    /// cannot read its store keeps enforcing what it has, and this says how old it is.
    pub revocations_read: IntGauge,
    pub policy_rules: IntGauge,
    /// Sessions in the cache (updated by the agent's housekeeping, every second).
    pub cache_entries: IntGauge,
    /// Open tunnels (upgrades allowed with a session) this agent would end with it.
    pub tunnels_tracked: IntGauge,
    /// Upgrades refused because the tunnel table was full.
    pub tunnels_refused: IntCounter,
}

impl GateMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "decisions_total",
                "Request decisions, by decision and reason",
            )
            .namespace("keyward"),
            &["decision", "reason"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        let mut resolved = Vec::with_capacity(DECISIONS.len() * Reason::ALL.len());
        for d in DECISIONS {
            for r in Reason::ALL {
                resolved.push(decisions.with_label_values(&[d.as_str(), r.as_str()]));
            }
        }
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::with_opts(Opts::new(name, help).namespace("keyward"))?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::with_opts(Opts::new(name, help).namespace("keyward"))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let validation_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "token_validation_seconds",
                "Opening a session token on a cache miss",
            )
            .namespace("keyward")
            .buckets(vec![
                1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3,
            ]),
        )?;
        registry.register(Box::new(validation_seconds.clone()))?;
        Ok(Self {
            decisions: resolved,
            cache_hits: counter(
                "session_cache_hits_total",
                "Session tokens found in the cache",
            )?,
            cache_misses: counter(
                "session_cache_misses_total",
                "Session tokens validated from scratch",
            )?,
            validation_seconds,
            keyring_generation: gauge(
                "keyring_generation",
                "Generation of the key ring in use (changes on rotation)",
            )?,
            revocations: gauge("revocations", "Revocations in force in memory")?,
            revocations_read: gauge(
                "revocations_read_timestamp_seconds",
                "When revocations were last read from the store (unix seconds)",
            )?,
            policy_rules: gauge("policy_rules", "Rules in the route policy in use")?,
            cache_entries: gauge(
                "session_cache_entries",
                "Validated sessions held in memory (bounded by session.cache_capacity)",
            )?,
            tunnels_tracked: gauge(
                "tunnels_tracked",
                "Open tunnels (WebSocket and other upgrades) this agent ends with their session",
            )?,
            tunnels_refused: counter(
                "tunnels_refused_total",
                "Upgrades refused because tunnels.max_tracked tunnels were open",
            )?,
        })
    }

    pub fn decision(&self, decision: Decision, reason: Reason) {
        let d = DECISIONS.iter().position(|x| *x == decision).unwrap_or(0);
        let r = Reason::ALL.iter().position(|x| *x == reason).unwrap_or(0);
        if let Some(c) = self.decisions.get(d * Reason::ALL.len() + r) {
            c.inc();
        }
    }
}
