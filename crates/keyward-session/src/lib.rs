//! Sessions: what a session token says ([`Claims`]), how tokens are sealed and opened
//! with a key ring, and the signed assertions handed to upstream applications.
//!
//! - [`token`]: the session cookie, PASETO v4.local sealed with the ring's active
//!   session key; the footer names the key (`{"kid":"k4.lid.…"}`).
//! - [`keyring`]: session keys and assertion keys with their life cycle
//!   (active → verify-only → retired); [`keyring::file`] is the only module here that
//!   touches the file system.
//! - [`assertion`]: short-lived ES256 JWTs for upstream applications and the JWKS that
//!   verifies them.
//!
//! Everything except [`keyring::file`] is a pure function of its inputs: time comes in
//! as a parameter (`now`, unix seconds) and randomness from the caller, as a closure
//! that fills a buffer with cryptographically secure random bytes (for example
//! `|buf| getrandom::fill(buf).expect("OS random source")`). The one exception is the
//! 32-byte PASETO nonce, which `pasetors` draws from the OS inside [`token::seal`].
//! [`sys`] holds the real clock and random source that callers pass in.

pub mod assertion;
pub mod claims;
pub mod keyring;
pub mod sys;
pub mod token;

#[cfg(test)]
mod testutil;

pub use assertion::{AssertionError, AssertionSigner, Jwk, Jwks, jwks};
pub use claims::{AuthMethod, Claims};
pub use keyring::{AssertionKey, KeyKind, KeyRing, KeyRingError, KeyState, KeySummary, SessionKey};
pub use token::{MAX_TOKEN_LEN, TokenError, Validity, new_session_id, open, seal};
