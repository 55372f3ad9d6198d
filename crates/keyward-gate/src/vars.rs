//! The variables keyward returns to HAProxy (txn scope, `option var-prefix keyward`),
//! named as in DESIGN.md: decision, reason, user, email, roles, device, session,
//! assertion, login_url; and `cookie`, the request's Cookie header without keyward's
//! own cookie (what HAProxy forwards).

use keyward_policy::{Decision, Reason};
use keyward_spoa::Actions;

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
