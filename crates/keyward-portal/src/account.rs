//! "My devices" and signing out: what a signed-in person manages themselves.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_session::Claims;
use keyward_store::Kind;
use serde::Deserialize;

use crate::flows::notice;
use crate::{Portal, pages};

#[derive(Debug, Deserialize)]
pub struct DevicesQuery {
    done: Option<String>,
}

/// The signed-in session, or a redirect to sign in and come back to `back`.
fn require_session(portal: &Portal, headers: &HeaderMap, back: &str) -> Result<Claims, Response> {
    portal.session(headers).ok_or_else(|| {
        Redirect::to(&format!("/.keyward/login?rd={}", pages::url_encode(back))).into_response()
    })
}

/// `GET /.keyward/devices`
pub async fn devices_page(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    Query(q): Query<DevicesQuery>,
) -> Response {
    let claims = match require_session(&portal, &headers, "/.keyward/devices") {
        Ok(c) => c,
        Err(res) => return res,
    };
    let user = match portal.store.user(&claims.sub).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return pages::problem(
                StatusCode::FORBIDDEN,
                "This account no longer exists",
                "Ask your administrator.",
            );
        }
        Err(err) => return unavailable(&err),
    };
    match portal.store.devices(Some(&user.id)).await {
        Ok(devices) => pages::devices(
            &user,
            &devices,
            claims.dev.as_deref(),
            notice(q.done.as_deref()),
        )
        .into_response(),
        Err(err) => unavailable(&err),
    }
}

#[derive(Debug, Deserialize)]
pub struct RenameForm {
    device: String,
    name: String,
}

/// `POST /.keyward/devices/rename`
pub async fn rename(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    Form(form): Form<RenameForm>,
) -> Response {
    let claims = match require_session(&portal, &headers, "/.keyward/devices") {
        Ok(c) => c,
        Err(res) => return res,
    };
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "That name cannot be used",
            "Use 1 to 64 characters.",
        );
    }
    match portal
        .store
        .rename_device(&claims.sub, &form.device, name)
        .await
    {
        Ok(true) => Redirect::to("/.keyward/devices?done=renamed").into_response(),
        Ok(false) => pages::problem(
            StatusCode::NOT_FOUND,
            "No such device",
            "It may have been revoked already.",
        ),
        Err(err) => unavailable(&err),
    }
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    device: String,
}

/// `POST /.keyward/devices/revoke`: deletes the credential (it can no longer sign in)
/// and revokes every session made with it, on every agent.
pub async fn revoke(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Response {
    let claims = match require_session(&portal, &headers, "/.keyward/devices") {
        Ok(c) => c,
        Err(res) => return res,
    };
    // Revoke before deleting: should the deletion fail, the sessions are already gone
    // and the page can be sent again.
    let no_such_device = || {
        pages::problem(
            StatusCode::NOT_FOUND,
            "No such device",
            "It may have been revoked already.",
        )
    };
    match portal.store.device(&form.device).await {
        Ok(Some(d)) if d.user_id == claims.sub => {}
        Ok(_) => return no_such_device(),
        Err(err) => return unavailable(&err),
    }
    if let Err(err) = portal.revoker.revoke(Kind::Device, &form.device).await {
        return unavailable(&err);
    }
    let deleted = match portal
        .store
        .delete_device(Some(&claims.sub), &form.device)
        .await
    {
        Ok(Some(d)) => d,
        Ok(None) => return no_such_device(),
        Err(err) => return unavailable(&err),
    };
    tracing::info!(target: "audit", event = "revoked", kind = "device", device = %deleted.device, by_device = claims.dev.as_deref().unwrap_or("-"));
    if claims.dev.as_deref() == Some(deleted.device.as_str()) {
        // This session's own device: it is signed out with it.
        return signed_out(&portal, "/.keyward/login?done=revoked");
    }
    Redirect::to("/.keyward/devices?done=revoked-other").into_response()
}

/// `POST /.keyward/logout`: revokes this session. With several session cookies (one
/// tossed in by another site), every one the browser sent.
pub async fn sign_out(State(portal): State<Arc<Portal>>, headers: HeaderMap) -> Response {
    for claims in portal.sessions(&headers) {
        if let Err(err) = portal.revoker.revoke(Kind::Session, &claims.sid).await {
            return unavailable(&err);
        }
        tracing::info!(target: "audit", event = "logout", session = %claims.sid, device = claims.dev.as_deref().unwrap_or("-"));
    }
    signed_out(&portal, "/.keyward/login?done=signed-out")
}

/// `POST /.keyward/logout-all`: revokes every session of this user; with several
/// session cookies, of every user they name, so the one the person meant is covered.
pub async fn sign_out_everywhere(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
) -> Response {
    let mut done: Vec<String> = Vec::new();
    for claims in portal.sessions(&headers) {
        if done.contains(&claims.sub) {
            continue;
        }
        if let Err(err) = portal.revoker.revoke(Kind::User, &claims.sub).await {
            return unavailable(&err);
        }
        tracing::info!(target: "audit", event = "logout_everywhere", session = %claims.sid, device = claims.dev.as_deref().unwrap_or("-"));
        done.push(claims.sub);
    }
    signed_out(&portal, "/.keyward/login?done=signed-out-everywhere")
}

fn signed_out(portal: &Portal, to: &str) -> Response {
    let mut res = Redirect::to(to).into_response();
    crate::web::append_cookie(&mut res, &portal.settings.cookie.clear());
    res
}

fn unavailable(err: &keyward_store::StoreError) -> Response {
    tracing::error!(%err, "store failed");
    pages::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "keyward cannot reach its database",
        "Try again in a moment.",
    )
}
