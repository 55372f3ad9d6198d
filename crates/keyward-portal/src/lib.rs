//! The portal listener (default `127.0.0.1:9180`). HAProxy routes the sign-in host or
//! `/.keyward/` to it.
//!
//! - `GET /.well-known/keyward/jwks.json`: the public keys of the upstream assertion
//!   (active and verify-only; retired keys drop out), so applications verify
//!   `X-Keyward-Assertion` without sharing a secret.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use keyward_gate::Gate;

/// Path of the JWKS document.
pub const JWKS_PATH: &str = "/.well-known/keyward/jwks.json";

/// The portal routes.
pub fn router(gate: Arc<Gate>) -> Router {
    Router::new().route(JWKS_PATH, get(jwks)).with_state(gate)
}

async fn jwks(State(gate): State<Arc<Gate>>) -> impl IntoResponse {
    let body = keyward_session::assertion::jwks(&gate.keys().ring);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // Short, so a rotation reaches verifiers quickly.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        serde_json::to_string(&body).unwrap_or_else(|_| "{\"keys\":[]}".into()),
    )
}
