//! The per-request decision: reads the `keyward-request` SPOE message, decides allow /
//! login / deny, and answers with the `txn.keyward.*` variables.

pub mod request;
pub mod vars;

use keyward_spoa::{Actions, Failure, Handler, HandlerError, Request};

pub use request::{AccessRequest, MESSAGE};
pub use vars::{Decision, Reason};

/// The SPOA handler keyward serves.
#[derive(Debug, Default)]
pub struct Gate {}

impl Gate {
    pub fn new() -> Self {
        Self {}
    }

    /// Decides on one request.
    pub fn decide(&self, _req: &AccessRequest) -> (Decision, Reason) {
        // No route policy is loaded: nothing matches, and an unmatched route is denied.
        (Decision::Deny, Reason::Forbidden)
    }
}

impl Handler for Gate {
    async fn handle(&self, request: Request) -> Result<Actions, HandlerError> {
        let req = AccessRequest::from_spoe(&request)?;
        let (decision, reason) = self.decide(&req);
        let mut actions = Actions::new();
        vars::set_decision(&mut actions, decision, reason);
        Ok(actions)
    }

    fn on_failure(&self, _failure: Failure) -> Actions {
        vars::failure()
    }
}
