//! The variables keyward returns to HAProxy (txn scope, `option var-prefix keyward`).

use keyward_spoa::Actions;

/// `txn.keyward.decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    Login,
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

/// `txn.keyward.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Ok,
    NoSession,
    Expired,
    Invalid,
    Revoked,
    Forbidden,
    StaleAuth,
    DeviceNotAllowed,
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

pub fn set_decision(actions: &mut Actions, decision: Decision, reason: Reason) {
    actions
        .set_txn("decision", decision.as_str())
        .set_txn("reason", reason.as_str());
}

/// The answer when no decision could be made: no `decision` at all, so HAProxy's
/// fail-closed rule answers 503, and `reason=error` for its logs.
pub fn failure() -> Actions {
    let mut a = Actions::new();
    a.set_txn("reason", Reason::Error.as_str());
    a
}
