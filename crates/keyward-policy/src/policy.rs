//! [`Policy`]: the compiled rule list and the decision for one request.
//!
//! First matching rule wins; no match is a deny. `evaluate` is a pure function of the
//! request, the session state and `now`, and does not allocate unless the request path
//! needs normalizing.

use crate::error::PolicyError;
use crate::file;
use crate::path::{normalize_path, other_readings};
use crate::rule::{Access, PathMatch, Rule, Shortfall};
use crate::verdict::{Decision, Reason, RequestFacts, SessionState, Verdict};

/// A loaded route policy: an ordered list of rules.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Parses, validates and compiles a policy file (TOML).
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        Ok(Policy {
            rules: file::parse(text)?,
        })
    }

    /// A policy without rules: every request is denied.
    pub fn empty() -> Policy {
        Policy { rules: Vec::new() }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The `name` of the rule at `index` (as in [`Verdict::rule`]).
    pub fn rule_name(&self, index: usize) -> Option<&str> {
        self.rules.get(index).map(|r| r.name.as_str())
    }

    #[cfg(test)]
    pub(crate) fn rules_for_tests(&self) -> &[Rule] {
        &self.rules
    }

    /// Decides on one request. `now` is the current time in unix seconds.
    ///
    /// The first rule whose hosts, paths, methods and sources all match decides. A public
    /// rule allows; any other rule needs a valid session, then checks roles (`deny`,
    /// `forbidden`), the device class (`deny`, `device_not_allowed`) and the age of the
    /// login (`login`, `stale_auth`), in that order.
    ///
    /// A path that an upstream could read another way (see [`other_readings`]) is
    /// decided under every reading, and each reading both as written and ignoring ASCII
    /// case (as case-insensitive upstreams route it); the strictest verdict stands.
    pub fn evaluate(&self, req: &RequestFacts<'_>, session: SessionState<'_>, now: i64) -> Verdict {
        let path = normalize_path(req.path);
        let mut verdict = self.evaluate_path(req, &path, session, now);
        for other in other_readings(req.path) {
            verdict = stricter(verdict, self.evaluate_path(req, &other, session, now));
        }
        verdict
    }

    /// [`Policy::evaluate`] for one normalized reading of the path: the stricter of the
    /// first rule that matches it as written and the first that matches it ignoring
    /// case. Both come out of one pass; when they are the same rule (every request whose
    /// path is written in the case of the rules) it is decided once.
    fn evaluate_path(
        &self,
        req: &RequestFacts<'_>,
        path: &str,
        session: SessionState<'_>,
        now: i64,
    ) -> Verdict {
        let src = req.src.map(|ip| ip.to_canonical());
        let mut ignoring_case = None;
        let mut exact = None;
        for (index, rule) in self.rules.iter().enumerate() {
            match rule.matches(req.host, path, req.method, src) {
                PathMatch::Exact => {
                    exact = Some(index);
                    break;
                }
                PathMatch::IgnoringCase => {
                    ignoring_case = ignoring_case.or(Some(index));
                }
                PathMatch::No => {}
            }
        }
        let verdict = self.decide(exact, session, now);
        match ignoring_case {
            None => verdict,
            Some(index) => stricter(verdict, self.decide(Some(index), session, now)),
        }
    }

    /// The verdict of the rule at `index` (`None`: no rule matched) for this session.
    fn decide(&self, index: Option<usize>, session: SessionState<'_>, now: i64) -> Verdict {
        let Some((index, rule)) = index.map(|i| (i, &self.rules[i])) else {
            return Verdict {
                decision: Decision::Deny,
                reason: Reason::Forbidden,
                rule: None,
                assertion: false,
            };
        };
        let verdict = |decision, reason| Verdict {
            decision,
            reason,
            rule: Some(index),
            assertion: rule.assertion,
        };
        let requirements = match &rule.access {
            Access::Public => return verdict(Decision::Allow, Reason::Ok),
            Access::Session(requirements) => requirements,
        };
        let claims = match session {
            SessionState::None => return verdict(Decision::Login, Reason::NoSession),
            SessionState::Expired => return verdict(Decision::Login, Reason::Expired),
            SessionState::Invalid => return verdict(Decision::Login, Reason::Invalid),
            SessionState::Revoked => return verdict(Decision::Login, Reason::Revoked),
            SessionState::Valid(claims) => claims,
        };
        match requirements.check(claims, now) {
            Ok(()) => verdict(Decision::Allow, Reason::Ok),
            Err(Shortfall::Role) => verdict(Decision::Deny, Reason::Forbidden),
            Err(Shortfall::Device) => verdict(Decision::Deny, Reason::DeviceNotAllowed),
            Err(Shortfall::StaleAuth) => verdict(Decision::Login, Reason::StaleAuth),
        }
    }
}

/// Deny over login over allow; between equals, the first (the literal reading).
fn stricter(a: Verdict, b: Verdict) -> Verdict {
    let rank = |v: &Verdict| match v.decision {
        Decision::Allow => 0,
        Decision::Login => 1,
        Decision::Deny => 2,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

#[cfg(test)]
mod tests;
