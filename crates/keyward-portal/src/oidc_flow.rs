//! The IdP round trip: `start` sends the browser to the provider (authorization code
//! with PKCE; state and nonce kept server-side), `callback` verifies what comes back,
//! records the person, and hands over to a passkey ceremony.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_store::{NewUser, Source};
use serde::Deserialize;

use crate::ceremony::{NotKept, OidcPending, Pending};
use crate::flows::IDP_COOKIE;
use crate::{Portal, pages, unix_now, web};

const OIDC_COOKIE: &str = "keyward_oidc";

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    rd: Option<String>,
    enroll: Option<String>,
}

/// `GET /.keyward/oidc/start`
pub async fn start(
    State(portal): State<Arc<Portal>>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some(provider) = &portal.oidc else {
        return pages::problem(
            StatusCode::NOT_FOUND,
            "No identity provider is configured",
            "Sign in with your passkey.",
        );
    };
    let rd = portal.settings.return_hosts.check(q.rd.as_deref());
    let (url, pending) = provider.begin();
    let pending = Pending::Oidc(OidcPending {
        pending,
        rd,
        enroll: q.enroll.as_deref() == Some("1"),
    });
    let ip = web::client_ip(&portal, &peer, &headers);
    let replaces = web::cookie(&headers, OIDC_COOKIE);
    let id = match portal.ceremonies.put(ip, replaces, pending).await {
        Ok(id) => id,
        Err(not_kept) => return not_started(not_kept),
    };
    let mut res = Redirect::to(url.as_str()).into_response();
    // Lax: the provider's redirect back is a cross-site top-level navigation.
    let cookie = web::flow_cookie(OIDC_COOKIE, &id, "Lax", portal.settings.cookie.secure);
    web::append_cookie(&mut res, &cookie);
    res
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /.keyward/oidc/callback`
pub async fn callback(
    State(portal): State<Arc<Portal>>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(provider) = &portal.oidc else {
        return pages::problem(
            StatusCode::NOT_FOUND,
            "No identity provider is configured",
            "Sign in with your passkey.",
        );
    };
    let pending = match web::cookie(&headers, OIDC_COOKIE) {
        Some(id) => portal.ceremonies.take(id).await,
        None => None,
    };
    let Some(Pending::Oidc(p)) = pending.as_ref() else {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "This sign-in expired",
            "It took too long, or was already used. Start again from the sign-in page.",
        );
    };
    if let Some(error) = q.error.as_deref() {
        tracing::info!(target: "audit", event = "idp_failed", reason = "provider_error", error = error.chars().take(64).collect::<String>());
        return pages::problem(
            StatusCode::FORBIDDEN,
            "Your organization's sign-in did not complete",
            "Try again; if it keeps failing, contact your administrator.",
        );
    }
    let (Some(code), Some(state)) = (q.code.as_deref(), q.state.as_deref()) else {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer is incomplete",
            "Start again from the sign-in page.",
        );
    };
    let identity = match provider.complete(p.pending.clone(), code, state).await {
        Ok(i) => i,
        Err(err) => {
            tracing::info!(target: "audit", event = "idp_failed", reason = %err);
            return pages::problem(
                StatusCode::FORBIDDEN,
                "Your organization's sign-in could not be verified",
                "Start again from the sign-in page.",
            );
        }
    };
    // The id becomes a header value upstream: printable, bounded, not a local id.
    let printable = |v: &str| !v.chars().any(char::is_control);
    if identity.sub.starts_with("local:")
        || identity.sub.is_empty()
        || identity.sub.len() > 255
        || !printable(&identity.sub)
        || !identity.email.as_deref().is_none_or(printable)
        || !identity.name.as_deref().is_none_or(printable)
        || !identity
            .roles
            .iter()
            .all(|r| printable(r) && !r.contains(','))
    {
        return pages::problem(
            StatusCode::FORBIDDEN,
            "This identity cannot be used here",
            "Contact your administrator.",
        );
    }
    let mut handle = [0u8; 16];
    crate::os_random(&mut handle);
    let name = identity
        .email
        .clone()
        .filter(|_| identity.email_verified)
        .or_else(|| identity.name.clone())
        .unwrap_or_else(|| identity.sub.clone());
    let new = NewUser {
        id: &identity.sub,
        handle,
        name: &name,
        email: identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified),
        roles: &identity.roles,
        source: Source::Oidc,
        now: unix_now(),
    };
    let user = match portal.store.upsert_oidc_user(&new).await {
        Ok(u) => u,
        Err(err) => {
            tracing::error!(%err, "store failed");
            return unavailable();
        }
    };
    if user.disabled {
        return pages::problem(
            StatusCode::FORBIDDEN,
            "This account is disabled",
            "Contact your administrator.",
        );
    }
    let has_devices = match portal.store.devices(Some(&user.id)).await {
        Ok(d) => !d.is_empty(),
        Err(err) => {
            tracing::error!(%err, "store failed");
            return unavailable();
        }
    };
    tracing::info!(target: "audit", event = "idp_verified", roles = user.roles.len());
    let identified = Pending::Identified {
        user_id: user.id.clone(),
        rd: p.rd.clone(),
    };
    let ip = web::client_ip(&portal, &peer, &headers);
    let replaces = web::cookie(&headers, IDP_COOKIE);
    let id = match portal.ceremonies.put(ip, replaces, identified).await {
        Ok(id) => id,
        Err(not_kept) => return not_started(not_kept),
    };
    let next = if p.enroll || !has_devices {
        "/.keyward/enroll"
    } else {
        "/.keyward/login"
    };
    let mut res = Redirect::to(&format!("{next}?rd={}", pages::url_encode(&p.rd))).into_response();
    let cookie = web::flow_cookie(IDP_COOKIE, &id, "Lax", portal.settings.cookie.secure);
    web::append_cookie(&mut res, &cookie);
    web::append_cookie(&mut res, &web::clear_flow_cookie(OIDC_COOKIE, "Lax"));
    res
}

/// A ceremony could not be kept: nothing was started or granted.
fn not_started(why: NotKept) -> Response {
    match why {
        NotKept::TooMany => pages::problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-ins in progress",
            "Finish or abandon the ones you started, wait a few minutes, then try again.",
        ),
        NotKept::Unavailable => unavailable(),
    }
}

/// The store failed: nothing was started or granted.
fn unavailable() -> Response {
    pages::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "keyward cannot reach its database",
        "Try again in a moment.",
    )
}
