//! [`OidcError`]: what went wrong, in words a person can act on. No variant ever carries
//! a token, an authorization code, a client secret, a nonce or a state value.

use std::error::Error;

use openidconnect::core::CoreErrorResponseType;
use openidconnect::{
    ClaimsVerificationError, DiscoveryError, RequestTokenError, StandardErrorResponse,
    UserInfoError,
};

use crate::http::HttpError;

/// Why discovery or a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The `[oidc]` section is wrong; the message starts with the key (`oidc.issuer ...`).
    #[error("{0}")]
    Config(String),
    /// The provider's discovery document or JWKS could not be fetched or is unusable.
    #[error("OpenID Provider discovery failed: {0}")]
    Discovery(String),
    /// The callback's `state` is not the one this sign-in started with: a stale or
    /// forged callback, or a second sign-in in another tab.
    #[error(
        "the sign-in callback does not match the sign-in in progress (state mismatch); start the sign-in again"
    )]
    StateMismatch,
    /// The token endpoint refused the code or could not be reached.
    #[error("the provider's token endpoint did not accept the authorization code: {0}")]
    Exchange(String),
    /// The ID token failed a check (signature, issuer, audience, expiry, nonce, ...).
    #[error("the ID token was rejected: {0}")]
    IdToken(String),
    /// The userinfo endpoint failed, or answered for another subject.
    #[error("the provider's userinfo endpoint failed: {0}")]
    Userinfo(String),
    /// A claim keyward needs is malformed or absurdly large (e.g. the groups claim).
    #[error("the provider's claims were rejected: {0}")]
    Claims(String),
}

/// `err` and its sources, joined with `: ` (reqwest puts the useful part in sources).
pub(crate) fn chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Text that came from the provider (an `error_description`), made safe for a log
/// line: at most 200 characters, no control characters.
pub(crate) fn from_provider(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

pub(crate) fn discovery_error(issuer: &str, e: &DiscoveryError<HttpError>) -> OidcError {
    OidcError::Discovery(format!(
        "{issuer}/.well-known/openid-configuration: {} (check oidc.issuer: it must match the provider's issuer exactly)",
        describe_discovery(e)
    ))
}

pub(crate) fn describe_discovery(e: &DiscoveryError<HttpError>) -> String {
    match e {
        DiscoveryError::Parse(p) => {
            format!("not a valid document at `{}`: {}", p.path(), p.inner())
        }
        DiscoveryError::Request(r) => format!("request failed: {}", chain(r)),
        DiscoveryError::Response(_, _, why) => why.clone(),
        other => chain(other),
    }
}

pub(crate) fn exchange_error(
    e: RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>,
) -> OidcError {
    OidcError::Exchange(match e {
        RequestTokenError::ServerResponse(r) => {
            let mut s = r.error().as_ref().to_owned();
            if let Some(d) = r.error_description() {
                s.push_str(": ");
                s.push_str(&from_provider(d));
            }
            s
        }
        RequestTokenError::Request(r) => format!("request failed: {}", chain(&r)),
        // Only the path: the parser's message could quote a token.
        RequestTokenError::Parse(p, _) => {
            format!("the token response is not valid at `{}`", p.path())
        }
        RequestTokenError::Other(o) => from_provider(&o),
    })
}

pub(crate) fn userinfo_error(e: UserInfoError<HttpError>) -> OidcError {
    OidcError::Userinfo(match e {
        UserInfoError::ClaimsVerification(ClaimsVerificationError::InvalidSubject(m)) => {
            format!("it answered for another subject than the ID token's: {m}")
        }
        UserInfoError::ClaimsVerification(c) => format!("response rejected: {}", chain(&c)),
        UserInfoError::Parse(p) => format!("the response is not valid at `{}`", p.path()),
        UserInfoError::Request(r) => format!("request failed: {}", chain(&r)),
        UserInfoError::Response(_, _, why) => from_provider(&why),
        other => chain(&other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_is_bounded_and_single_line() {
        let long = format!("bad\r\nforged: line{}", "x".repeat(500));
        let clean = from_provider(&long);
        assert!(!clean.contains('\n') && !clean.contains('\r'));
        assert_eq!(clean.chars().count(), 200);
    }
}
