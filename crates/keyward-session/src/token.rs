//! The session token codec: [`Claims`] sealed as PASETO v4.local.
//!
//! - payload: the JSON of [`Claims`] (unknown fields are refused when opening);
//! - footer: `{"kid":"k4.lid.…"}`, the PASERK id of the sealing key (authenticated, but
//!   read before authentication only to pick the key);
//! - implicit assertion: [`IMPLICIT_ASSERTION`], so a v4.local token made with the same
//!   key for another purpose can never be replayed as a session.
//!
//! [`open`] rejects oversized input and the wrong header before any decoding, then
//! looks the key up among the keys that may verify (active and verify-only), then
//! authenticates and decrypts, then checks the times against `now`. Errors never carry
//! token bytes or the untrusted key id.

use base64ct::{Base64UrlUnpadded, Encoding};
use pasetors::token::{Local, UntrustedToken};
use pasetors::version4::{LocalToken, V4};
use serde::{Deserialize, Serialize};

use crate::claims::Claims;
use crate::keyring::KeyRing;

/// Longest token [`open`] looks at (bytes). A typical session token is about 450.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Bound into every session token's authentication tag; never sent.
pub const IMPLICIT_ASSERTION: &[u8] = b"keyward-session-v1";

/// What every session token starts with (the PASETO header).
pub const HEADER: &str = "v4.local.";

/// Why a token was not sealed or not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a v4.local token with a key-id footer, or too long.
    #[error("malformed session token")]
    Malformed,
    /// The footer names no key that may verify (unknown, another deployment, retired).
    #[error("session token sealed with an unknown or retired key")]
    UnknownKey,
    /// Authentication failed, or the payload is not valid claims.
    #[error("session token failed authentication")]
    Invalid,
    /// `now` is past the expiry plus leeway.
    #[error("session token expired")]
    Expired,
    /// Issued in the future beyond the leeway (clock skew between nodes?).
    #[error("session token issued in the future; check clock synchronisation")]
    NotYetValid,
    /// The key ring has no active session key to seal with.
    #[error("the key ring has no active session key; run `keyward keys rotate`")]
    NoActiveKey,
    /// The claims could not be encoded or encrypted (e.g. OS random source failed).
    #[error("could not seal the session token (claims encoding or OS random source failed)")]
    Seal,
}

impl TokenError {
    /// True for [`TokenError::Expired`]: the holder had a valid session that ran out,
    /// as opposed to a token that was never ours.
    pub fn is_expired(&self) -> bool {
        matches!(self, TokenError::Expired)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Footer<'a> {
    #[serde(borrow)]
    kid: &'a str,
}

/// Seals `claims` with the ring's active session key.
pub fn seal(claims: &Claims, ring: &KeyRing) -> Result<String, TokenError> {
    let key = ring.active_session_key().ok_or(TokenError::NoActiveKey)?;
    let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Seal)?;
    let footer = serde_json::to_vec(&Footer { kid: key.id() }).map_err(|_| TokenError::Seal)?;
    LocalToken::encrypt(
        key.paseto_key(),
        &payload,
        Some(&footer),
        Some(IMPLICIT_ASSERTION),
    )
    .map_err(|_| TokenError::Seal)
}

/// What a token's times are checked against, besides `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Seconds of clock skew tolerated between the node that sealed and the node that
    /// opens (negative counts as 0).
    pub leeway: i64,
    /// The longest a session may last (`session.max_lifetime`, seconds): a token whose
    /// `exp` is further from its `iat` ends at `iat + max_lifetime`. Revocations are
    /// kept, and retired keys trusted, only that long; a token sealed before the limit
    /// was lowered must not outlive them.
    pub max_lifetime: i64,
}

/// Opens a session token: checks its form, key, authenticity and times.
///
/// `now` is unix seconds. The claims returned have `exp` at most
/// `iat + validity.max_lifetime`.
pub fn open(
    token: &str,
    ring: &KeyRing,
    now: i64,
    validity: Validity,
) -> Result<Claims, TokenError> {
    open_with_key(token, ring, now, validity).map(|(claims, _)| claims)
}

/// [`open`], also returning the id of the session key that opened the token (a cache
/// keeping the claims checks it is still trusted when the ring changes).
pub fn open_with_key<'r>(
    token: &str,
    ring: &'r KeyRing,
    now: i64,
    validity: Validity,
) -> Result<(Claims, &'r str), TokenError> {
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(HEADER) {
        return Err(TokenError::Malformed);
    }
    let untrusted =
        UntrustedToken::<Local, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
    let footer = parse_footer(untrusted.untrusted_footer()).ok_or(TokenError::Malformed)?;
    let key = ring
        .verifying_session_key(footer.kid)
        .ok_or(TokenError::UnknownKey)?;
    let trusted = LocalToken::decrypt(key.paseto_key(), &untrusted, None, Some(IMPLICIT_ASSERTION))
        .map_err(|_| TokenError::Invalid)?;
    let mut claims: Claims =
        serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Invalid)?;
    if claims.exp < claims.iat {
        return Err(TokenError::Invalid);
    }
    claims.exp = claims
        .exp
        .min(claims.iat.saturating_add(validity.max_lifetime.max(0)));
    check_times(&claims, now, validity.leeway)?;
    Ok((claims, key.id()))
}

/// `{"kid":"…"}` and nothing else (serde would also take `["…"]` for a struct).
fn parse_footer(bytes: &[u8]) -> Option<Footer<'_>> {
    if bytes.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn check_times(claims: &Claims, now: i64, leeway: i64) -> Result<(), TokenError> {
    let leeway = leeway.max(0);
    if now > claims.exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if claims.iat > now.saturating_add(leeway) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// A new session id: 128 random bits, base64url without padding (22 characters).
pub fn new_session_id(rand: &mut impl FnMut(&mut [u8])) -> String {
    let mut bytes = [0u8; 16];
    rand(&mut bytes);
    Base64UrlUnpadded::encode_string(&bytes)
}

#[cfg(test)]
mod tests;
