//! Upstream assertions: short-lived ES256 JWTs that tell an application who the
//! verified caller is, and the JWKS it verifies them with.
//!
//! The JWS compact form is three base64url parts joined by dots; the ECDSA P-256 /
//! SHA-256 signature (RFC 7518 §3.4: fixed-size `r || s`) comes from `ring`, whose
//! assembly implementation signs several times faster than a portable one: every new
//! session's first request pays for one signature. Claims: `iss`, `aud` (the request host),
//! `sub`, `email`, `roles`, `dev`, `sid`, `amr`, `auth_time`, `iat`, `exp`.

use base64ct::{Base64UrlUnpadded, Encoding};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde::{Deserialize, Serialize};

use crate::claims::Claims;
use crate::keyring::{KeyRing, jwk_coordinates};

/// Why an assertion was not signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    #[error("the key ring has no active assertion key; run `keyward keys rotate`")]
    NoActiveKey,
    #[error("assertion lifetime must be at least one second")]
    InvalidTtl,
    /// The session has expired: there is nothing left to assert.
    #[error("the session has expired; no assertion is issued")]
    SessionExpired,
    #[error("could not encode the assertion claims")]
    Encode,
    #[error("the active assertion key could not be loaded for signing")]
    KeyRejected,
    #[error("signing the assertion failed")]
    Sign,
}

/// Signs assertions with the ring's active assertion key (prepared once per ring).
pub struct AssertionSigner {
    kid: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64url of the fixed header `{"alg":"ES256","typ":"JWT","kid":…}`.
    header: String,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    dev: Option<&'a str>,
    sid: &'a str,
    /// RFC 8176 shape (an array); the value is keyward's method name.
    amr: [&'static str; 1],
    auth_time: i64,
    iat: i64,
    exp: i64,
}

impl AssertionSigner {
    /// A signer for the ring's active assertion key.
    pub fn new(ring: &KeyRing) -> Result<Self, AssertionError> {
        let active = ring
            .active_assertion_key()
            .ok_or(AssertionError::NoActiveKey)?;
        let header = Header {
            alg: "ES256",
            typ: "JWT",
            kid: active.id(),
        };
        let header = serde_json::to_vec(&header).map_err(|_| AssertionError::Encode)?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &active.to_pkcs8_der(),
            &rng,
        )
        .map_err(|_| AssertionError::KeyRejected)?;
        Ok(AssertionSigner {
            kid: active.id().to_owned(),
            key,
            rng,
            header: Base64UrlUnpadded::encode_string(&header),
        })
    }

    /// The `kid` this signer puts in the JWT header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A JWT for `audience` (the request host) and its expiry: `now + ttl_secs`, but
    /// never later than the session's own `exp`.
    pub fn sign(
        &self,
        claims: &Claims,
        audience: &str,
        issuer: &str,
        ttl_secs: i64,
        now: i64,
    ) -> Result<(String, i64), AssertionError> {
        self.sign_until(claims, audience, issuer, ttl_secs, now, claims.exp)
    }

    /// [`Self::sign`], never later than `not_after` instead of the session's `exp`: the
    /// end of the session as the gate accepts it (its `exp` plus the clock leeway), so
    /// an allowed request always gets its assertion.
    pub fn sign_until(
        &self,
        claims: &Claims,
        audience: &str,
        issuer: &str,
        ttl_secs: i64,
        now: i64,
        not_after: i64,
    ) -> Result<(String, i64), AssertionError> {
        if ttl_secs <= 0 {
            return Err(AssertionError::InvalidTtl);
        }
        let exp = now.saturating_add(ttl_secs).min(not_after);
        if exp <= now {
            return Err(AssertionError::SessionExpired);
        }
        let body = AssertionClaims {
            iss: issuer,
            aud: audience,
            sub: &claims.sub,
            email: claims.email.as_deref(),
            roles: &claims.roles,
            dev: claims.dev.as_deref(),
            sid: &claims.sid,
            amr: [claims.amr.as_str()],
            auth_time: claims.auth_time,
            iat: now,
            exp,
        };
        let body = serde_json::to_vec(&body).map_err(|_| AssertionError::Encode)?;
        let mut jwt = String::with_capacity(self.header.len() + body.len() * 4 / 3 + 92);
        jwt.push_str(&self.header);
        jwt.push('.');
        jwt.push_str(&Base64UrlUnpadded::encode_string(&body));
        let signature = self
            .key
            .sign(&self.rng, jwt.as_bytes())
            .map_err(|_| AssertionError::Sign)?;
        jwt.push('.');
        jwt.push_str(&Base64UrlUnpadded::encode_string(signature.as_ref()));
        Ok((jwt, exp))
    }
}

/// A JSON Web Key Set (RFC 7517), as published at the portal's JWKS URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One P-256 public key in a [`Jwks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `EC`.
    pub kty: String,
    /// Always `P-256`.
    pub crv: String,
    pub x: String,
    pub y: String,
    /// RFC 7638 thumbprint; matches the JWT header's `kid`.
    pub kid: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Always `ES256`.
    pub alg: String,
}

/// The public keys upstreams may verify assertions with: the active and the
/// verify-only assertion keys. Retired keys are left out.
pub fn jwks(ring: &KeyRing) -> Jwks {
    let keys = ring
        .assertion_keys()
        .iter()
        .filter(|k| k.state().can_verify())
        .map(|k| {
            let (x, y) = jwk_coordinates(&k.public_key());
            Jwk {
                kty: "EC".into(),
                crv: "P-256".into(),
                x,
                y,
                kid: k.id().to_owned(),
                use_: "sig".into(),
                alg: "ES256".into(),
            }
        })
        .collect();
    Jwks { keys }
}

#[cfg(test)]
mod tests;
