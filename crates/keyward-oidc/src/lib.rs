//! OpenID Connect relying party: keyward signs people in at an OpenID Provider
//! (Keycloak, Okta, Entra ID, ...) with the authorization code flow and PKCE, then turns
//! the provider's groups into keyward roles.
//!
//! ```text
//! Provider::discover(cfg)      discovery document + JWKS, once at startup
//! provider.begin()             -> (authorization URL, Pending)   keep Pending until the callback
//! provider.complete(pending, code, state)
//!     state (constant time) -> token endpoint (code + PKCE verifier)
//!     -> ID token: RS256/ES256 signature, iss, aud, azp, exp, iat, nonce, at_hash
//!     -> userinfo (if the provider has one; same `sub`) -> Identity { groups, roles }
//! ```
//!
//! Modules: [`config`] (the `[oidc]` section, validated without IO), `verify` (ID token
//! checks as a pure function of token, keys, expectations and `now`), `claims` (groups
//! claim, merge, role mapping; pure), `http` (the provider's HTTP client: rustls, no
//! redirects, 10 s, 1 MiB bodies). Only `http` and this file do IO.
//!
//! Invariant: no error, log line or `Debug` output carries a token, an authorization
//! code, a client secret, a PKCE verifier, a nonce or a state value.

mod claims;
pub mod config;
mod error;
mod http;
mod verify;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, JsonWebKeySetUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse, UserInfoClaims,
};
use subtle::ConstantTimeEq;

pub use claims::{Identity, MAX_GROUP_LEN, MAX_GROUPS};
pub use config::OidcConfig;
pub use error::OidcError;
pub use http::MAX_BODY;

use claims::{ExtraClaims, Profile};
use error::{chain, discovery_error, exchange_error, userinfo_error};
use http::Http;
use verify::{Expected, Rejected, verify_id_token};

type TokenFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type OidcTokenResponse = StandardTokenResponse<TokenFields, CoreTokenType>;
type OidcClient<HasTokenUrl = EndpointSet> = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    OidcTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,    // authorization
    EndpointNotSet, // device authorization
    EndpointNotSet, // introspection
    EndpointNotSet, // revocation
    HasTokenUrl,
    EndpointMaybeSet, // userinfo
>;
type UserInfo = UserInfoClaims<ExtraClaims, CoreGenderClaim>;

/// The JWKS is fetched again on an unknown `kid` (key rotation), at most this often.
const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(60);
/// A JWKS older than this is fetched again before it verifies anything: a key the
/// provider withdrew (say, after a leak) stops verifying within this time. When the
/// fetch fails, sign-in through the provider fails until it succeeds.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Longer authorization codes are refused before they reach the provider.
const MAX_CODE_LEN: usize = 4096;

/// One configured OpenID Provider, discovered. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    client: OidcClient,
    http: Http,
    issuer: IssuerUrl,
    client_id: ClientId,
    redirect_url: String,
    confidential: bool,
    scopes: Vec<Scope>,
    groups_claim: String,
    role_map: BTreeMap<String, Vec<String>>,
    jwks_url: JsonWebKeySetUrl,
    jwks: RwLock<Keys>,
    jwks_max_age: Duration,
    /// One JWKS fetch at a time: callbacks that find the cache due together wait for
    /// the first one's fetch instead of each making their own.
    refetch: tokio::sync::Mutex<()>,
}

struct Keys {
    set: CoreJsonWebKeySet,
    fetched: Instant,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Provider")
            .field("issuer", &i.issuer.as_str())
            .field("client_id", &i.client_id.as_str())
            .field(
                "client",
                &if i.confidential {
                    "confidential"
                } else {
                    "public"
                },
            )
            .field("redirect_url", &i.redirect_url)
            .field("groups_claim", &i.groups_claim)
            .finish_non_exhaustive()
    }
}

/// A sign-in in progress: what [`Provider::complete`] needs from [`Provider::begin`].
/// Keep it server-side (keyed by [`Pending::state`]) until the callback arrives.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    state: String,
    nonce: String,
    pkce_verifier: String,
}

impl Pending {
    /// The `state` sent in the authorization URL; the callback must bring it back.
    pub fn state(&self) -> &str {
        &self.state
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pending { .. }")
    }
}

impl Provider {
    /// Validates `cfg`, fetches the provider's discovery document
    /// (`<issuer>/.well-known/openid-configuration`) and its JWKS.
    pub async fn discover(cfg: &OidcConfig) -> Result<Provider, OidcError> {
        Self::discover_with(cfg, JWKS_MAX_AGE).await
    }

    async fn discover_with(
        cfg: &OidcConfig,
        jwks_max_age: Duration,
    ) -> Result<Provider, OidcError> {
        cfg.validate()?;
        let http = Http::new().map_err(|e| {
            OidcError::Discovery(format!("cannot set up the HTTP client: {}", chain(&e)))
        })?;
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| OidcError::Config(format!("oidc.issuer is not a URL: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer.clone(), &http)
            .await
            .map_err(|e| discovery_error(&cfg.issuer, &e))?;

        endpoint(
            "authorization_endpoint",
            metadata.authorization_endpoint().url(),
        )?;
        endpoint("jwks_uri", metadata.jwks_uri().url())?;
        let token_url = metadata.token_endpoint().cloned().ok_or_else(|| {
            OidcError::Discovery(format!(
                "{} advertises no token_endpoint; keyward needs the authorization code flow",
                cfg.issuer
            ))
        })?;
        endpoint("token_endpoint", token_url.url())?;
        if let Some(userinfo) = metadata.userinfo_endpoint() {
            endpoint("userinfo_endpoint", userinfo.url())?;
        }
        let algs = metadata.id_token_signing_alg_values_supported();
        if !algs.iter().any(|a| verify::ALLOWED_ALGS.contains(a)) {
            return Err(OidcError::Discovery(format!(
                "{} signs ID tokens only with {}; keyward accepts RS256 and ES256 (configure the client at the provider to use one of them)",
                cfg.issuer,
                algs.iter()
                    .filter_map(|a| serde_json::to_value(a).ok()?.as_str().map(String::from))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }

        let redirect_url = RedirectUrl::new(cfg.redirect_url.clone())
            .map_err(|e| OidcError::Config(format!("oidc.redirect_url is not a URL: {e}")))?;
        let jwks = Keys {
            set: metadata.jwks().clone(),
            fetched: Instant::now(),
        };
        let jwks_url = metadata.jwks_uri().clone();
        let client_id = ClientId::new(cfg.client_id.clone());
        let client = OidcClient::<EndpointMaybeSet>::from_provider_metadata(
            metadata,
            client_id.clone(),
            cfg.client_secret.clone().map(ClientSecret::new),
        )
        .set_token_uri(token_url)
        .set_redirect_uri(redirect_url);

        Ok(Provider {
            inner: Arc::new(Inner {
                client,
                http,
                issuer,
                client_id,
                redirect_url: cfg.redirect_url.clone(),
                confidential: cfg.client_secret.is_some(),
                scopes: cfg.extra_scopes().into_iter().map(Scope::new).collect(),
                groups_claim: cfg.groups_claim.clone(),
                role_map: cfg.role_map.clone(),
                jwks_url,
                jwks: RwLock::new(jwks),
                jwks_max_age,
                refetch: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The issuer this provider was discovered at.
    pub fn issuer(&self) -> &str {
        self.inner.issuer.as_str()
    }

    /// Starts a sign-in: authorization code flow with PKCE (S256) and a random `state`
    /// and `nonce` (32 random bytes each).
    pub fn begin(&self) -> (url::Url, Pending) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .inner
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                || CsrfToken::new_random_len(32),
                || Nonce::new_random_len(32),
            )
            .add_scopes(self.inner.scopes.iter().cloned())
            .set_pkce_challenge(challenge)
            .url();
        let pending = Pending {
            state: state.into_secret(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.into_secret(),
        };
        (url, pending)
    }

    /// Finishes a sign-in from the callback's `code` and `state`: checks `state`
    /// against `pending` (constant time), exchanges the code (with the PKCE verifier),
    /// verifies the ID token, fetches userinfo when the provider has that endpoint (its
    /// `sub` must be the ID token's) and maps groups to roles.
    pub async fn complete(
        &self,
        pending: Pending,
        code: &str,
        state: &str,
    ) -> Result<Identity, OidcError> {
        let inner = &self.inner;
        if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(OidcError::StateMismatch);
        }
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Err(OidcError::Exchange(format!(
                "the callback's code is empty or longer than {MAX_CODE_LEN} bytes"
            )));
        }

        let token = inner
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&inner.http)
            .await
            .map_err(exchange_error)?;

        let id_token = token.id_token().ok_or_else(|| {
            OidcError::IdToken(
                "the token response has no id_token (is the `openid` scope allowed for this client?)"
                    .into(),
            )
        })?;
        let nonce = Nonce::new(pending.nonce);
        let expected = Expected {
            client_id: &inner.client_id,
            issuer: &inner.issuer,
            nonce: &nonce,
            access_token: token.access_token(),
            now: unix_now(),
        };
        let claims = self.verify(id_token, &expected).await?;
        let from_id_token = Profile {
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified(),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            groups: claims::groups(claims.additional_claims(), &inner.groups_claim)?,
        };

        let from_userinfo = match inner
            .client
            .user_info(token.access_token().clone(), Some(claims.subject().clone()))
        {
            Ok(request) => {
                let info: UserInfo = request
                    .request_async(&inner.http)
                    .await
                    .map_err(userinfo_error)?;
                Some(Profile {
                    email: info.email().map(|e| e.to_string()),
                    email_verified: info.email_verified(),
                    name: info.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
                    groups: claims::groups(info.additional_claims(), &inner.groups_claim)?,
                })
            }
            // The provider has no userinfo endpoint: the ID token is all there is.
            Err(_) => None,
        };

        Ok(claims::identity(
            claims.subject().to_string(),
            inner.issuer.to_string(),
            from_id_token,
            from_userinfo,
            &inner.role_map,
        ))
    }

    /// Verifies with the cached JWKS; on an unknown key, fetches the JWKS again (the
    /// provider may have rotated keys) unless that was done within the last minute. A
    /// cache older than [`JWKS_MAX_AGE`] is fetched again first, and nothing verifies
    /// until that succeeds.
    async fn verify(
        &self,
        id_token: &verify::IdToken,
        expected: &Expected<'_>,
    ) -> Result<verify::IdTokenClaims, OidcError> {
        let (set, fetched) = {
            let keys = self.inner.jwks.read().unwrap_or_else(|e| e.into_inner());
            (keys.set.clone(), keys.fetched)
        };
        let stale = fetched.elapsed() >= self.inner.jwks_max_age;
        if !stale {
            match verify_id_token(id_token, &set, expected) {
                Ok(claims) => return Ok(claims),
                Err(Rejected::UnknownKey) if fetched.elapsed() >= JWKS_REFRESH_MIN_INTERVAL => {}
                Err(e) => return Err(rejected(e)),
            }
        }
        let _one_fetch = self.inner.refetch.lock().await;
        let (current, current_fetched) = {
            let keys = self.inner.jwks.read().unwrap_or_else(|e| e.into_inner());
            (keys.set.clone(), keys.fetched)
        };
        if current_fetched > fetched {
            // Fetched by another callback while this one waited: use that.
            return verify_id_token(id_token, &current, expected).map_err(rejected);
        }
        let set = CoreJsonWebKeySet::fetch_async(&self.inner.jwks_url, &self.inner.http)
            .await
            .map_err(|e| {
                let why = if stale {
                    "the provider's JWKS is due to be fetched again, and fetching it failed"
                } else {
                    "signed with a key not in the provider's JWKS, and fetching the JWKS again failed"
                };
                OidcError::IdToken(format!("{why}: {}", error::describe_discovery(&e)))
            })?;
        tracing::info!(
            target: "audit",
            event = "oidc_jwks_refreshed",
            issuer = self.inner.issuer.as_str(),
            keys = set.keys().len()
        );
        *self.inner.jwks.write().unwrap_or_else(|e| e.into_inner()) = Keys {
            set: set.clone(),
            fetched: Instant::now(),
        };
        verify_id_token(id_token, &set, expected).map_err(rejected)
    }
}

fn rejected(r: Rejected) -> OidcError {
    match r {
        Rejected::UnknownKey => OidcError::IdToken(
            "bad signature: no key in the provider's JWKS matches the token's key ID and algorithm"
                .into(),
        ),
        Rejected::Invalid(why) => OidcError::IdToken(why),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Endpoints from the discovery document follow the same rule as `oidc.issuer`.
fn endpoint(name: &str, url: &url::Url) -> Result<(), OidcError> {
    config::check_scheme(url)
        .map_err(|why| OidcError::Discovery(format!("the provider's {name} {url} {why}")))
}

#[cfg(test)]
#[path = "jwks_tests.rs"]
mod jwks_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_debug_hides_its_secrets() {
        let p = Pending {
            state: "state-secret".into(),
            nonce: "nonce-secret".into(),
            pkce_verifier: "verifier-secret".into(),
        };
        let shown = format!("{p:?} {:?}", p.clone());
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(p.state(), "state-secret");
    }
}
