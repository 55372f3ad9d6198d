//! Route policy: which requests are public, and what a session must prove for the rest
//! (a role, a device class, a recent login).
//!
//! A [`Policy`] is loaded once from TOML ([`Policy::from_toml`]), validated with errors
//! that name the rule and the field, and compiled so that [`Policy::evaluate`] is a pure,
//! allocation-free function of the request, the session state and the time. This crate
//! does no IO and reads no clock: `now` is a parameter.
//!
//! ```
//! use keyward_policy::{Decision, Policy, Reason, RequestFacts, SessionState};
//!
//! let policy = Policy::from_toml(r#"
//!     [[rule]]
//!     name = "health checks"
//!     paths = ["/healthz"]
//!     access = "public"
//! "#).unwrap();
//! let req = RequestFacts { host: "app.example.com", path: "/healthz", method: "GET", src: None };
//! let verdict = policy.evaluate(&req, SessionState::None, 1_700_000_000);
//! assert_eq!((verdict.decision, verdict.reason), (Decision::Allow, Reason::Ok));
//! ```
//!
//! The file format and the decision table are documented for operators in
//! `docs/policy.md`.

mod check;
mod error;
mod file;
mod path;
mod policy;
mod rule;
mod verdict;

pub use error::PolicyError;
pub use path::{decoded_slashes, habit_reading, lenient_reading, normalize_path, other_readings};
pub use policy::Policy;
pub use verdict::{Decision, Reason, RequestFacts, SessionState, Verdict};
