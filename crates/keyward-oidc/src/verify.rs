//! ID token checks as a pure function of (token, provider keys, expectations, now):
//! signature (RS256 or ES256 only, with a key from the provider's JWKS), issuer,
//! audience (our client ID, and no other untrusted audience), `azp`, expiry, issue time,
//! nonce, and `at_hash` when present. `openidconnect` does most of the work; `azp` and
//! `at_hash` it leaves to the caller.

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AccessToken, AccessTokenHash, ClaimsVerificationError, ClientId, IdTokenVerifier, IssuerUrl,
    Nonce, SignatureVerificationError,
};

use crate::claims::ExtraClaims;
use crate::error::chain;

pub(crate) type IdToken = openidconnect::IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub(crate) type IdTokenClaims = openidconnect::IdTokenClaims<ExtraClaims, CoreGenderClaim>;

/// The only ID token signature algorithms accepted, whatever the provider advertises.
pub(crate) const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 2] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
];

/// Clock skew tolerated between keyward and the provider, on `exp` and `iat`.
pub(crate) const LEEWAY_SECS: i64 = 60;

/// What the ID token must say.
#[derive(Debug)]
pub(crate) struct Expected<'a> {
    pub(crate) client_id: &'a ClientId,
    pub(crate) issuer: &'a IssuerUrl,
    pub(crate) nonce: &'a Nonce,
    /// The access token issued with it, for the `at_hash` check.
    pub(crate) access_token: &'a AccessToken,
    /// Unix seconds.
    pub(crate) now: i64,
}

/// Why an ID token was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// No key in the JWKS matches the token's `kid`/`alg`: the provider may have rotated
    /// its keys, so fetching the JWKS again may help.
    UnknownKey,
    /// Anything else, as a short reason (never the token).
    Invalid(String),
}

/// Checks `token` and returns its claims.
pub(crate) fn verify_id_token(
    token: &IdToken,
    jwks: &CoreJsonWebKeySet,
    expected: &Expected<'_>,
) -> Result<IdTokenClaims, Rejected> {
    let now = expected.now;
    let skewed_now = DateTime::<Utc>::from_timestamp(now.saturating_sub(LEEWAY_SECS), 0)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let verifier: IdTokenVerifier<'_, CoreJsonWebKey> = IdTokenVerifier::new_public_client(
        expected.client_id.clone(),
        expected.issuer.clone(),
        jwks.clone(),
    )
    .set_allowed_algs(ALLOWED_ALGS)
    .set_time_fn(move || skewed_now)
    .set_issue_time_verifier_fn(move |iat| {
        if iat.timestamp() > now.saturating_add(LEEWAY_SECS) {
            Err(format!("issued in the future (iat {})", iat.timestamp()))
        } else {
            Ok(())
        }
    });

    let claims = token
        .claims(&verifier, expected.nonce)
        .map_err(|e| match e {
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            ) => Rejected::UnknownKey,
            other => Rejected::Invalid(describe(&other)),
        })?
        .clone();

    if let Some(azp) = claims.authorized_party()
        && azp.as_str() != expected.client_id.as_str()
    {
        return Err(Rejected::Invalid(format!(
            "azp (authorized party) is `{}`, not this client `{}`",
            azp.as_str(),
            expected.client_id.as_str()
        )));
    }

    if let Some(at_hash) = claims.access_token_hash() {
        let bad = |why: String| Rejected::Invalid(format!("at_hash cannot be checked: {why}"));
        let alg = token.signing_alg().map_err(|e| bad(e.to_string()))?;
        let key = token
            .signing_key(&verifier)
            .map_err(|e| bad(e.to_string()))?;
        let actual = AccessTokenHash::from_token(expected.access_token, alg, key)
            .map_err(|e| bad(e.to_string()))?;
        if actual != *at_hash {
            return Err(Rejected::Invalid(
                "at_hash does not match the access token issued with it".into(),
            ));
        }
    }
    Ok(claims)
}

fn describe(e: &ClaimsVerificationError) -> String {
    match e {
        ClaimsVerificationError::Expired(m) => {
            format!(
                "expired or issued in the future: {m} (compared with {LEEWAY_SECS} s of clock-skew allowance)"
            )
        }
        ClaimsVerificationError::InvalidAudience(m) => format!("wrong audience: {m}"),
        ClaimsVerificationError::InvalidIssuer(m) => format!("wrong issuer: {m}"),
        ClaimsVerificationError::InvalidNonce(m) => {
            format!("{m} (the callback belongs to another sign-in; start again)")
        }
        ClaimsVerificationError::SignatureVerification(s) => format!("bad signature: {s}"),
        other => chain(other),
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
pub(crate) mod tests;
