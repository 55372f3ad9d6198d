//! HTTP plumbing shared by every page: security headers, the `Origin` check on
//! state-changing requests, the client address behind HAProxy, cookies.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::Portal;

/// Adds the security headers to every response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    // Scripts and styles only from keyward itself; nothing framed, no inline code.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on form posts.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Refuses state-changing requests whose `Origin` is not one of the portal's origins
/// (cross-site request forgery).
pub async fn check_origin(State(portal): State<Arc<Portal>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match origin {
        Some(o) if portal.settings.origins.iter().any(|allowed| allowed == o) => {
            next.run(req).await
        }
        _ => {
            tracing::warn!(
                target: "audit",
                event = "origin_refused",
                path = req.uri().path(),
                origin = origin.unwrap_or("-"),
            );
            crate::pages::problem(
                StatusCode::FORBIDDEN,
                "This request did not come from the sign-in page",
                "Open the sign-in page again and retry from there.",
            )
            .into_response()
        }
    }
}

/// Rate limit of the ceremony endpoints per client address: past `portal.rate_per_ip`
/// starts and finishes a minute, 429 before the body is read.
pub async fn limit_per_ip(
    State(portal): State<Arc<Portal>>,
    peer: ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !portal.allow_ip(client_ip(&portal, &peer, req.headers())) {
        return too_many(portal.per_ip.retry_after());
    }
    next.run(req).await
}

/// The client's address: the peer, or the last `X-Forwarded-For` hop when the peer is
/// a trusted proxy (HAProxy appends the address it saw).
pub fn client_ip(portal: &Portal, peer: &ConnectInfo<SocketAddr>, headers: &HeaderMap) -> IpAddr {
    let peer = peer.0.ip();
    if !portal
        .settings
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&peer))
    {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .next_back()
        .unwrap_or(peer)
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| keyward_gate::credential::cookie_value(v, name))
}

/// The values of every cookie `name` in the request, in order.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(move |v| keyward_gate::credential::cookie_values(v, name))
}

/// Cookie attributes shared by the session cookie.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    pub name: String,
    pub domain: Option<String>,
    pub secure: bool,
}

impl CookiePolicy {
    /// `Set-Cookie` for a session token lasting `max_age` seconds.
    pub fn session(&self, token: &str, max_age: i64) -> String {
        self.build(token, max_age)
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear(&self) -> String {
        self.build("", 0)
    }

    fn build(&self, value: &str, max_age: i64) -> String {
        let mut c = format!(
            "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax",
            self.name
        );
        if let Some(d) = &self.domain {
            c.push_str("; Domain=");
            c.push_str(d.trim_start_matches('.'));
        }
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }
}

/// The cookie binding a browser to its pending ceremony.
pub const CEREMONY_COOKIE: &str = "keyward_ceremony";

/// `Set-Cookie` for one of the portal's ceremony cookies (the ceremony, the IdP round
/// trip, the IdP-vouched identity): `/.keyward/` only, HttpOnly, as long as a
/// ceremony may take. `same_site` is `Strict`, or `Lax` for what must survive the
/// IdP's cross-site redirect back.
pub fn flow_cookie(name: &str, id: &str, same_site: &str, secure: bool) -> String {
    format!(
        "{name}={id}; Path=/.keyward/; Max-Age={}; HttpOnly; SameSite={same_site}{}",
        crate::ceremony::CEREMONY_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes a [`flow_cookie`].
pub fn clear_flow_cookie(name: &str, same_site: &str) -> String {
    format!("{name}=; Path=/.keyward/; Max-Age=0; HttpOnly; SameSite={same_site}")
}

/// Adds a `Set-Cookie` header to `res`.
pub fn append_cookie(res: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A 429 with `Retry-After`.
pub fn too_many(retry_after: u64) -> Response {
    let mut res = crate::pages::json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts. Wait a minute, then try again.",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    res
}
