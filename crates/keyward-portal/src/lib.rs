//! The portal listener (default `127.0.0.1:9180`). HAProxy routes the sign-in host or
//! `/.keyward/` on every protected host to it.
//!
//! - `/.keyward/login`, `/.keyward/enroll`, `/.keyward/devices`: the pages people use
//!   (sign in with a passkey or security key, enroll from an invite or after the IdP,
//!   manage devices, sign out).
//! - `/.keyward/login/{begin,finish}`, `/.keyward/enroll/{begin,finish}`: the WebAuthn
//!   ceremonies (JSON), state kept server-side and single use.
//! - `/.keyward/oidc/{start,callback}`: the IdP round trip (authorization code + PKCE).
//! - `GET /.well-known/keyward/jwks.json`: the public keys of the upstream assertion,
//!   so applications verify `X-Keyward-Assertion` without sharing a secret.
//!
//! Every page carries CSP and the usual security headers; every state-changing request
//! must come from a configured origin; ceremony starts and finishes are rate limited
//! per client address and per user; return URLs go only to configured hosts.

// Handlers return early with a finished `Response` as their error; boxing it would only
// add an allocation on the refusal paths.
#![allow(clippy::result_large_err)]

pub mod aaguid;
mod account;
mod ceremony;
mod flows;
mod limits;
pub mod metrics;
mod oidc_flow;
mod pages;
mod returnto;
mod revoke;
mod web;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64ct::{Base64UrlUnpadded, Encoding};
use keyward_config::{Config, IdentityMode};
use keyward_gate::{Gate, MAX_SESSION_COOKIES};
use keyward_session::sys::{os_random, unix_now};
use keyward_session::token;
use keyward_session::{AuthMethod, Claims};
use keyward_store::{Device, Store, User};
use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, Url, Uuid, Webauthn, WebauthnBuilder,
};

pub use flows::invite_hash;
pub use returnto::ReturnHosts;
pub use revoke::Revoker;

use crate::ceremony::Ceremonies;
use crate::limits::RateLimit;
use crate::web::CookiePolicy;

/// Path of the JWKS document.
pub const JWKS_PATH: &str = "/.well-known/keyward/jwks.json";

/// Why the portal cannot start; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("`portal.rp_id` / `portal.origins` do not fit together for WebAuthn: {0}")]
    WebAuthn(String),
    #[error("`portal.attestation.ca_files`: {0}")]
    Attestation(String),
    #[error("`oidc`: {0}")]
    Oidc(String),
    #[error(transparent)]
    Store(#[from] keyward_store::StoreError),
}

/// What the portal needs from the config, resolved once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Exact origins (`https://auth.example.com`).
    pub origins: Vec<String>,
    pub return_hosts: ReturnHosts,
    pub cookie: CookiePolicy,
    pub lifetime: i64,
    pub identity: IdentityMode,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub attestation_required: bool,
    /// Accepted AAGUIDs for attested keys (lowercase); empty: any the CAs vouch for.
    pub aaguids: Vec<String>,
}

/// The portal: its settings, and the parts it works with.
#[derive(Debug)]
pub struct Portal {
    pub settings: Settings,
    gate: Arc<Gate>,
    store: Store,
    revoker: Arc<Revoker>,
    webauthn: Webauthn,
    attestation: Option<AttestationCaList>,
    ceremonies: Ceremonies,
    per_ip: RateLimit,
    per_user: RateLimit,
    device_key: [u8; 32],
    oidc: Option<keyward_oidc::Provider>,
    /// Registered by whoever serves the portal ([`Portal::metrics`]).
    metrics: metrics::PortalMetrics,
}

impl Portal {
    /// Builds the portal from the (validated) config. Fails with what to fix when the
    /// WebAuthn origins, attestation CAs or the IdP are not usable.
    pub async fn new(
        cfg: &Config,
        gate: Arc<Gate>,
        revoker: Arc<Revoker>,
    ) -> Result<Self, PortalError> {
        let p = &cfg.portal;
        let origins: Vec<Url> = p
            .origins
            .iter()
            .map(|o| keyward_config::parse_origin(o).map_err(PortalError::WebAuthn))
            .collect::<Result<_, _>>()?;
        let mut builder = WebauthnBuilder::new(&p.rp_id, &origins[0])
            .map_err(|e| {
                PortalError::WebAuthn(format!(
                    "{e} (rp_id \"{}\", origin {})",
                    p.rp_id, origins[0]
                ))
            })?
            .rp_name(&p.rp_name);
        for o in &origins[1..] {
            builder = builder.append_allowed_origin(o);
        }
        let webauthn = builder
            .build()
            .map_err(|e| PortalError::WebAuthn(e.to_string()))?;
        let attestation = load_attestation(&p.attestation.ca_files, &p.attestation.aaguids)?;
        let oidc = match &cfg.oidc {
            Some(o) => Some(
                keyward_oidc::Provider::discover(o)
                    .await
                    .map_err(|e| PortalError::Oidc(e.to_string()))?,
            ),
            None => None,
        };
        let origin_strings: Vec<String> = origins
            .iter()
            .map(|o| o.origin().ascii_serialization())
            .collect();
        let return_hosts = if p.return_hosts.is_empty() {
            ReturnHosts::new(origins.iter().filter_map(|o| {
                o.host_str().map(|h| match o.port() {
                    Some(port) => format!("{h}:{port}"),
                    None => h.to_owned(),
                })
            }))
        } else {
            ReturnHosts::new(p.return_hosts.iter().cloned())
        };
        let all_local_http = origins.iter().all(|o| o.scheme() == "http");
        let store = revoker.store.clone();
        let device_key = store.device_key().await?;
        let ceremonies = Ceremonies::new(store.clone(), p.rate_per_ip);
        Ok(Self {
            settings: Settings {
                origins: origin_strings,
                return_hosts,
                cookie: CookiePolicy {
                    name: cfg.session.cookie_name.clone(),
                    domain: cfg.session.cookie_domain.clone(),
                    secure: cfg.session.cookie_secure.unwrap_or(!all_local_http),
                },
                lifetime: cfg.session_lifetime().as_secs() as i64,
                identity: p.identity,
                trusted_proxies: p.trusted_proxies.clone(),
                attestation_required: p.attestation.required,
                aaguids: p
                    .attestation
                    .aaguids
                    .iter()
                    .map(|a| a.to_ascii_lowercase())
                    .collect(),
            },
            gate,
            store,
            revoker,
            webauthn,
            attestation,
            ceremonies,
            per_ip: RateLimit::per_minute(p.rate_per_ip),
            per_user: RateLimit::per_minute(p.rate_per_user),
            device_key,
            oidc,
            metrics: metrics::PortalMetrics::new(),
        })
    }

    /// The portal's metrics, to register where they are served.
    pub fn metrics(&self) -> &metrics::PortalMetrics {
        &self.metrics
    }

    /// The pseudonymous device id for a credential id: a keyed hash, so the raw id
    /// never reaches sessions, headers or logs.
    pub fn device_id(&self, cred_id: &[u8]) -> String {
        device_id(&self.device_key, cred_id)
    }

    /// The valid, unrevoked sessions of the request's session cookies: several when one
    /// was also set for a longer path or by a sibling site under the cookie domain. At
    /// most one more than a request may carry (see [`Self::session`]).
    fn sessions(&self, headers: &HeaderMap) -> Vec<Claims> {
        let keys = self.gate.keys();
        let revocations = self.gate.revocations();
        let now = unix_now();
        web::cookies(headers, &self.settings.cookie.name)
            .take(MAX_SESSION_COOKIES + 1)
            .filter_map(|t| token::open(t, &keys.ring, now, self.gate.validity()).ok())
            .filter(|c| !revocations.is_revoked(c))
            .collect()
    }

    /// The request's session: as the gate decides it, none unless every valid session
    /// cookie is one user's (a tossed-in cookie must not choose who signs out).
    fn session(&self, headers: &HeaderMap) -> Option<Claims> {
        let all = self.sessions(headers);
        let first = all.first()?;
        (all.len() <= MAX_SESSION_COOKIES && all.iter().all(|c| c.sub == first.sub))
            .then(|| first.clone())
    }

    /// Seals a new session for `user` signed in with `device`.
    fn mint(&self, user: &User, device: &Device) -> Result<(String, Claims), token::TokenError> {
        let now = unix_now();
        // A session made in the same second as a sign-out-everywhere would count as
        // issued before it; issue it just after instead.
        let iat = self
            .gate
            .revocations()
            .latest(&user.id, Some(&device.device))
            .map_or(now, |at| now.max(at + 1));
        let claims = Claims {
            sid: token::new_session_id(&mut os_random),
            sub: user.id.clone(),
            email: user.email.clone(),
            roles: user.roles.clone(),
            dev: Some(device.device.clone()),
            aaguid: device.aaguid.clone(),
            amr: if device.attested {
                AuthMethod::Attested
            } else {
                AuthMethod::Passkey
            },
            auth_time: iat,
            iat,
            exp: iat + self.settings.lifetime,
        };
        let sealed = token::seal(&claims, &self.gate.keys().ring)?;
        Ok((sealed, claims))
    }

    fn allow_ip(&self, ip: IpAddr) -> bool {
        self.per_ip.allow(&rate_key(ip))
    }

    /// The pending ceremony the request's cookie names, taken (single use).
    async fn take_ceremony(&self, headers: &HeaderMap) -> Option<ceremony::Pending> {
        self.ceremonies
            .take(web::cookie(headers, web::CEREMONY_COOKIE)?)
            .await
    }

    fn allow_user(&self, user_id: &str) -> bool {
        self.per_user.allow(user_id)
    }

    /// The per-user budget of sign-ins, spent per user and client: proving nothing, a
    /// stranger naming `who` must not lock them out from elsewhere. `who` is the name
    /// typed (known or not: a 429 must not tell which names exist) or the user id.
    fn allow_sign_in(&self, who: &str, ip: IpAddr) -> bool {
        self.per_user.allow(&format!("{who}|{}", rate_key(ip)))
    }
}

fn load_attestation(
    files: &[std::path::PathBuf],
    aaguids: &[String],
) -> Result<Option<AttestationCaList>, PortalError> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut list = AttestationCaList::default();
    for file in files {
        let text = read_pem(file)?;
        let certs = pem_certificates(&text);
        if certs.is_empty() {
            return Err(PortalError::Attestation(format!(
                "{}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
                file.display()
            )));
        }
        for pem in certs {
            let bad = |e| {
                PortalError::Attestation(format!(
                    "{}: not a usable certificate ({e:?})",
                    file.display()
                ))
            };
            let one = if aaguids.is_empty() {
                AttestationCaList::try_from(pem.as_bytes()).map_err(bad)?
            } else {
                let mut b = AttestationCaListBuilder::new();
                for a in aaguids {
                    let id = Uuid::parse_str(a)
                        .map_err(|e| PortalError::Attestation(format!("AAGUID `{a}`: {e}")))?;
                    b.insert_device_pem(pem.as_bytes(), id, a.clone(), Default::default())
                        .map_err(bad)?;
                }
                b.build()
            };
            list.union(&one);
        }
    }
    Ok(Some(list))
}

/// Every `CERTIFICATE` block of a PEM file (vendor bundles hold several roots).
fn pem_certificates(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

fn read_pem(path: &Path) -> Result<String, PortalError> {
    std::fs::read_to_string(path)
        .map_err(|e| PortalError::Attestation(format!("cannot read {}: {e}", path.display())))
}

/// `d_` + 22 characters: the first 128 bits of BLAKE3 keyed with the store's device key.
pub fn device_id(key: &[u8; 32], cred_id: &[u8]) -> String {
    let h = blake3::keyed_hash(key, cred_id);
    format!(
        "d_{}",
        Base64UrlUnpadded::encode_string(&h.as_bytes()[..16])
    )
}

/// 256 random bits, base64url.
pub(crate) fn random_id() -> String {
    let mut b = [0u8; 32];
    os_random(&mut b);
    Base64UrlUnpadded::encode_string(&b)
}

/// Whose budget a request from `ip` spends: the address, or for IPv6 its /64 (one
/// client is commonly given a whole /64, and would otherwise have 2^64 budgets).
pub(crate) fn rate_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The portal routes.
pub fn router(portal: Arc<Portal>) -> Router {
    let ceremonies = Router::new()
        .route("/.keyward/login/begin", post(flows::sign_in_begin))
        .route("/.keyward/login/finish", post(flows::sign_in_finish))
        .route("/.keyward/enroll/begin", post(flows::enroll_begin))
        .route("/.keyward/enroll/finish", post(flows::enroll_finish))
        // Each start stores a ceremony, and each callback may call the IdP.
        .route("/.keyward/oidc/start", get(oidc_flow::start))
        .route("/.keyward/oidc/callback", get(oidc_flow::callback))
        .route_layer(axum::middleware::from_fn_with_state(
            portal.clone(),
            web::limit_per_ip,
        ));
    let pages = Router::new()
        .merge(ceremonies)
        .route("/.keyward/login", get(flows::sign_in_page))
        .route("/.keyward/enroll", get(flows::enroll_page))
        .route("/.keyward/devices", get(account::devices_page))
        .route("/.keyward/devices/rename", post(account::rename))
        .route("/.keyward/devices/revoke", post(account::revoke))
        .route("/.keyward/logout", post(account::sign_out))
        .route("/.keyward/logout-all", post(account::sign_out_everywhere))
        .route(
            "/.keyward/static/keyward.js",
            get(|| {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../assets/keyward.js"),
                )
            }),
        )
        .route(
            "/.keyward/static/keyward.css",
            get(|| {
                asset(
                    "text/css; charset=utf-8",
                    include_str!("../assets/keyward.css"),
                )
            }),
        )
        .route(JWKS_PATH, get(jwks))
        // Every route's requests: state-changing ones checked for their origin, then
        // all counted (the refused ones too). Only routes change state; a path no
        // route matches gets 404 from the router.
        .route_layer(axum::middleware::from_fn_with_state(
            portal.clone(),
            web::check_origin,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            portal.clone(),
            metrics::observe,
        ))
        // Ceremony bodies are a few KiB; refuse anything larger before parsing.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(web::security_headers));
    pages.with_state(portal)
}

/// One of the portal's static files (embedded in the binary).
async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
}

async fn jwks(State(portal): State<Arc<Portal>>) -> impl IntoResponse {
    let body = keyward_session::assertion::jwks(&portal.gate.keys().ring);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // Short, so a rotation reaches verifiers quickly.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        serde_json::to_string(&body).unwrap_or_else(|_| "{\"keys\":[]}".into()),
    )
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pem_tests {
    #[test]
    fn every_certificate_of_a_bundle_is_read() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let bundle =
            format!("# vendor roots\n{one}\ntext between\n{one}\n-----BEGIN CERTIFICATE-----\ncut");
        let certs = super::pem_certificates(&bundle);
        assert_eq!(certs.len(), 2);
        assert!(
            certs
                .iter()
                .all(|c| c.starts_with("-----BEGIN") && c.ends_with("-----\n"))
        );
        assert!(super::pem_certificates("no pem here").is_empty());
    }
}
