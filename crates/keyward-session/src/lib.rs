//! Sessions: what a session token says ([`Claims`]), how tokens are sealed and opened
//! with a key ring, and the signed assertions handed to upstream applications.
//!
//! Pure functions of their inputs: time comes in as a parameter (unix seconds) and
//! randomness from the caller.

pub mod claims;

pub use claims::{AuthMethod, Claims};
