//! The claims inside a session token.

use serde::{Deserialize, Serialize};

/// How the session's login was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// A WebAuthn passkey with user verification.
    Passkey,
    /// A WebAuthn security key whose attestation chained to a trusted CA
    /// (hardware-bound); `Claims::aaguid` names the model.
    Attested,
    /// Minted by an administrator with `keyward token mint` (break-glass, automation).
    Minted,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Passkey => "passkey",
            AuthMethod::Attested => "attested",
            AuthMethod::Minted => "minted",
        }
    }
}

/// Everything a session token asserts. Serialized as the token's JSON payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Session id: random, URL-safe; safe to log and to revoke by.
    pub sid: String,
    /// Stable user id (the IdP's `sub`, or the local user id).
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Pseudonymous device id (keyed hash of the credential id; never the raw id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Authenticator model (AAGUID, lower-case hyphenated UUID) for attested keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aaguid: Option<String>,
    pub amr: AuthMethod,
    /// When the login ceremony happened (unix seconds); drives step-up.
    pub auth_time: i64,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
}
