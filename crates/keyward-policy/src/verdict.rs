//! What goes into a policy decision (the request's facts, the session's state) and what
//! comes out of it (a [`Verdict`]: decision, reason, matched rule).
//!
//! `Decision` and `Reason` spell exactly the `txn.keyward.decision` and
//! `txn.keyward.reason` values HAProxy's rules act on.

use std::fmt;
use std::net::IpAddr;

use keyward_session::Claims;

/// What HAProxy does with the request (`txn.keyward.decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Forward it, with identity headers.
    Allow,
    /// Send the client to log in (302 for browsers, 401 for API clients).
    Login,
    /// Refuse it (403).
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Login => "login",
            Decision::Deny => "deny",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why (`txn.keyward.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Allowed.
    Ok,
    /// The route needs a session and the request carries none.
    NoSession,
    /// The session token has expired.
    Expired,
    /// The session token could not be opened or is malformed.
    Invalid,
    /// The session, its device or its user was revoked.
    Revoked,
    /// No rule matches, or the user has none of the rule's roles.
    Forbidden,
    /// The login is older than the rule's `max_auth_age`: log in again (step-up).
    StaleAuth,
    /// The session was not established with the device class the rule demands.
    DeviceNotAllowed,
    /// No decision could be made (used by the gate, never by the policy).
    Error,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Ok,
        Reason::NoSession,
        Reason::Expired,
        Reason::Invalid,
        Reason::Revoked,
        Reason::Forbidden,
        Reason::StaleAuth,
        Reason::DeviceNotAllowed,
        Reason::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::NoSession => "no_session",
            Reason::Expired => "expired",
            Reason::Invalid => "invalid",
            Reason::Revoked => "revoked",
            Reason::Forbidden => "forbidden",
            Reason::StaleAuth => "stale_auth",
            Reason::DeviceNotAllowed => "device_not_allowed",
            Reason::Error => "error",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parts of a request a rule can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// Lower-case host name without the port.
    pub host: &'a str,
    /// Path without the query string, as received (the policy normalizes it).
    pub path: &'a str,
    /// Request method, any case.
    pub method: &'a str,
    /// Client address, when known.
    pub src: Option<IpAddr>,
}

/// What the token layer found out about the request's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState<'a> {
    /// No session token was presented.
    None,
    Expired,
    Invalid,
    Revoked,
    /// A valid, unexpired, unrevoked session.
    Valid(&'a Claims),
}

/// The outcome of [`Policy::evaluate`](crate::Policy::evaluate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Reason,
    /// Index of the rule that matched (see [`Policy::rule_name`](crate::Policy::rule_name));
    /// `None` when no rule matched.
    pub rule: Option<usize>,
    /// Whether an allowed request's upstream gets a signed assertion (the rule's
    /// `assertion`, on unless the rule turns it off); `false` when no rule matched.
    pub assertion: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn wire_spellings() {
        let decisions: Vec<_> = [Decision::Allow, Decision::Login, Decision::Deny]
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(decisions, ["allow", "login", "deny"]);
        let reasons: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "ok",
                "no_session",
                "expired",
                "invalid",
                "revoked",
                "forbidden",
                "stale_auth",
                "device_not_allowed",
                "error"
            ]
        );
        assert_eq!(Reason::ALL.iter().collect::<HashSet<_>>().len(), 9);
    }
}
