//! Sign-in and enrollment: the pages and their WebAuthn ceremonies.
//!
//! Each ceremony is two requests. `begin` makes the challenge, keeps its state
//! server-side under a random id (an HttpOnly cookie binds it to the browser) and
//! returns the options for `navigator.credentials`; `finish` takes that state (single
//! use), verifies the authenticator's answer with webauthn-rs and, on success, sets
//! the session cookie and says where to go.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_config::IdentityMode;
use keyward_store::{Conflict, Device, Invite, NewDevice, Touch, User};
use serde::Deserialize;
use webauthn_rs::prelude::{
    AttestationMetadata, Passkey, PublicKeyCredential, RegisterPublicKeyCredential, Uuid,
    WebauthnError,
};

use webauthn_rs_proto::ResidentKeyRequirement;

use crate::ceremony::{
    Authentication, CEREMONY_TTL, Enrollment, NotKept, Pending, Registration, SignIn,
};
use crate::pages::{self, json_error};
use crate::web::{self, CEREMONY_COOKIE};
use crate::{Portal, aaguid, unix_now};

/// How recent a sign-in must be to add a device with it (seconds).
const RECENT_SIGN_IN: i64 = 600;

/// The cookie naming the IdP-vouched identity a passkey ceremony completes.
pub const IDP_COOKIE: &str = "keyward_idp";

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    rd: Option<String>,
    invite: Option<String>,
    done: Option<String>,
}

/// What a finished `?done=` step says (fixed texts: nothing from the URL is echoed).
pub fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "signed-out" => "You are signed out.",
        "signed-out-everywhere" => "You are signed out on every device.",
        "revoked" => "The device was revoked; sign in with another one.",
        "renamed" => "Device renamed.",
        "revoked-other" => "Device revoked.",
        _ => return None,
    })
}

/// `GET /.keyward/login`
pub async fn sign_in_page(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let rd = portal.settings.return_hosts.check(q.rd.as_deref());
    let notice = notice(q.done.as_deref());
    let idp_start = format!("/.keyward/oidc/start?rd={}", pages::url_encode(&rd));
    match portal.settings.identity {
        IdentityMode::Oidc => match identified(&portal, &headers).await {
            // The IdP said who it is; the passkey proves it.
            Some(_) => pages::sign_in(&rd, notice, true, None).into_response(),
            // Just signed out: say so rather than bouncing straight back to the IdP.
            None if notice.is_some() => pages::sign_in(
                &rd,
                notice,
                false,
                Some((&idp_start, "Sign in with your organization")),
            )
            .into_response(),
            None => Redirect::to(&idp_start).into_response(),
        },
        IdentityMode::OidcEnroll => {
            let enroll = format!(
                "/.keyward/oidc/start?enroll=1&rd={}",
                pages::url_encode(&rd)
            );
            pages::sign_in(
                &rd,
                notice,
                true,
                Some((&enroll, "New device? Enroll with your organization")),
            )
            .into_response()
        }
        IdentityMode::Invite => pages::sign_in(&rd, notice, true, None).into_response(),
    }
}

/// The IdP-vouched user waiting for a passkey ceremony, if any.
async fn identified(portal: &Portal, headers: &HeaderMap) -> Option<(String, String)> {
    let id = web::cookie(headers, IDP_COOKIE)?;
    match portal.ceremonies.peek(id).await? {
        Pending::Identified { user_id, rd } => Some((user_id, rd)),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInBegin {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    rd: Option<String>,
}

/// `POST /.keyward/login/begin`
pub async fn sign_in_begin(
    State(portal): State<Arc<Portal>>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<SignInBegin>,
) -> Response {
    let ip = web::client_ip(&portal, &peer, &headers);
    let rd = portal.settings.return_hosts.check(body.rd.as_deref());
    let named = match identified(&portal, &headers).await {
        Some((user_id, _)) => {
            if !portal.allow_sign_in(&user_id, ip) {
                return web::too_many(portal.per_user.retry_after());
            }
            Some(portal.store.user(&user_id).await)
        }
        None if portal.settings.identity == IdentityMode::Oidc => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "Sign in with your organization first.",
            );
        }
        None => match body
            .username
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            Some(name) if name.len() <= 128 => {
                if !portal.allow_sign_in(name, ip) {
                    return web::too_many(portal.per_user.retry_after());
                }
                Some(portal.store.user_by_name(name).await)
            }
            Some(_) => return json_error(StatusCode::BAD_REQUEST, "That user name is too long."),
            None => None,
        },
    };
    let user = match named.transpose() {
        Ok(u) => u.flatten(),
        Err(err) => return store_failed(&err),
    };

    // A named user with devices gets their credentials listed (security keys without
    // discoverable credentials need this). Anyone else, including unknown names, gets
    // a usernameless challenge: the answer does not reveal who exists.
    let for_user = match &user {
        Some(u) if !u.disabled => match portal.store.devices(Some(&u.id)).await {
            Ok(devices) if !devices.is_empty() => Some((u.id.clone(), passkeys(&devices))),
            Ok(_) => None,
            Err(err) => return store_failed(&err),
        },
        _ => None,
    };
    let (options, state) = match for_user {
        Some((user_id, keys)) => match portal.webauthn.start_passkey_authentication(&keys) {
            Ok((rcr, state)) => (
                serde_json::to_value(rcr),
                Authentication::ForUser { user_id, state },
            ),
            Err(err) => return ceremony_failed("sign-in", &err),
        },
        None => match portal.webauthn.start_discoverable_authentication() {
            Ok((mut rcr, state)) => {
                // Started from a button, not from autofill.
                rcr.mediation = None;
                (
                    serde_json::to_value(rcr),
                    Authentication::Discoverable(state),
                )
            }
            Err(err) => return ceremony_failed("sign-in", &err),
        },
    };
    let Ok(options) = options else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not start the sign-in.",
        );
    };
    let id = match portal
        .ceremonies
        .put(
            ip,
            web::cookie(&headers, CEREMONY_COOKIE),
            Pending::SignIn(SignIn { state, rd }),
        )
        .await
    {
        Ok(id) => id,
        Err(not_kept) => return busy(not_kept),
    };
    with_ceremony(&portal, &id, Json(options).into_response())
}

/// `POST /.keyward/login/finish`
pub async fn sign_in_finish(
    State(portal): State<Arc<Portal>>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(credential): Json<PublicKeyCredential>,
) -> Response {
    let pending = portal.take_ceremony(&headers).await;
    let Some(Pending::SignIn(sign_in)) = pending.as_ref() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "This sign-in expired or was already used. Start again.",
        );
    };
    let cred_id = credential.raw_id.as_slice();
    let device = match portal.store.device_by_credential(cred_id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            tracing::info!(target: "audit", event = "login_failed", device = %portal.device_id(cred_id), reason = "unknown_credential");
            return json_error(
                StatusCode::FORBIDDEN,
                "This key is not registered here, or it was revoked. Use another device or ask for a new enrollment link.",
            );
        }
        Err(err) => return store_failed(&err),
    };
    if !portal.allow_sign_in(&device.user_id, web::client_ip(&portal, &peer, &headers)) {
        return web::too_many(portal.per_user.retry_after());
    }
    let user = match portal.store.user(&device.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return json_error(
                StatusCode::FORBIDDEN,
                "This key's account no longer exists.",
            );
        }
        Err(err) => return store_failed(&err),
    };
    let Ok(mut passkey) = serde_json::from_str::<Passkey>(&device.passkey) else {
        tracing::error!(device = %device.device, "stored credential does not parse");
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "This key's record is damaged; enroll it again.",
        );
    };
    let result = match &sign_in.state {
        Authentication::Discoverable(state) => {
            let handle = portal
                .webauthn
                .identify_discoverable_authentication(&credential);
            if !matches!(handle, Ok((uuid, _)) if uuid.as_bytes() == &user.handle) {
                return refuse_login(
                    &device,
                    "handle_mismatch",
                    "This key does not belong to the account it claims.",
                );
            }
            portal.webauthn.finish_discoverable_authentication_v2(
                &credential,
                state.clone(),
                &passkey,
            )
        }
        Authentication::ForUser { user_id, state } => {
            if *user_id != device.user_id {
                return refuse_login(
                    &device,
                    "other_user",
                    "This key belongs to a different account.",
                );
            }
            portal
                .webauthn
                .finish_passkey_authentication(&credential, state)
        }
    };
    let result = match result {
        Ok(r) => r,
        Err(err) => {
            let (reason, message) = explain(&err);
            return refuse_login(&device, reason, message);
        }
    };
    if user.disabled {
        return refuse_login(
            &device,
            "user_disabled",
            "This account is disabled. Contact your administrator.",
        );
    }
    if portal.settings.identity == IdentityMode::Oidc {
        // The passkey must complete the IdP sign-in of the same person.
        match identified(&portal, &headers).await {
            Some((user_id, _)) if user_id == user.id => {}
            _ => {
                return refuse_login(
                    &device,
                    "idp_mismatch",
                    "Sign in with your organization first, then use your own key.",
                );
            }
        }
    }
    passkey.update_credential(&result);
    let stored = serde_json::to_string(&passkey).unwrap_or_default();
    match portal
        .store
        .touch_device(&device.device, &stored, result.counter(), unix_now())
        .await
    {
        Ok(Touch::Recorded) => {}
        // Revoked or disabled while the person was touching the key.
        Ok(Touch::Gone) => {
            return refuse_login(
                &device,
                "revoked_during_sign_in",
                "This key or its account was revoked. Contact your administrator.",
            );
        }
        // A sign-in with a newer counter finished first: this answer's counter is
        // behind what the store holds now, as a copied key's would be.
        Ok(Touch::CounterBehind) => {
            let (reason, message) = explain(&WebauthnError::CredentialPossibleCompromise);
            return refuse_login(&device, reason, message);
        }
        Err(err) => return store_failed(&err),
    }
    let rd = sign_in.rd.clone();
    finish_session(&portal, &headers, &user, &device, "login", rd).await
}

/// Mints the session, sets the cookie, ends the ceremony, audits, answers `{redirect}`.
async fn finish_session(
    portal: &Portal,
    headers: &HeaderMap,
    user: &User,
    device: &Device,
    event: &'static str,
    rd: String,
) -> Response {
    let (token, claims) = match portal.mint(user, device) {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(%err, "cannot seal a session (no active session key?)");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sessions cannot be issued right now. Try again shortly.",
            );
        }
    };
    // The session is issued after any revocation this node already holds. Should the
    // user have been disabled, or the device revoked, since they were read, that
    // revocation may be the one the session was issued after: look again.
    match still_allowed(portal, user, device).await {
        Ok(true) => {}
        Ok(false) => {
            return refuse_login(
                device,
                "revoked_during_sign_in",
                "This key or its account was revoked. Contact your administrator.",
            );
        }
        Err(err) => return store_failed(&err),
    }
    tracing::info!(
        target: "audit",
        event,
        device = %device.device,
        session = %claims.sid,
        amr = claims.amr.as_str(),
    );
    let mut res = Json(serde_json::json!({ "redirect": rd })).into_response();
    let session = portal
        .settings
        .cookie
        .session(&token, portal.settings.lifetime);
    web::append_cookie(&mut res, &session);
    web::append_cookie(&mut res, &web::clear_flow_cookie(CEREMONY_COOKIE, "Strict"));
    if let Some(id) = web::cookie(headers, IDP_COOKIE)
        && portal.ceremonies.take(id).await.is_some()
    {
        web::append_cookie(&mut res, &web::clear_flow_cookie(IDP_COOKIE, "Lax"));
    }
    res
}

/// The user is still enabled and the device still registered.
async fn still_allowed(
    portal: &Portal,
    user: &User,
    device: &Device,
) -> Result<bool, keyward_store::StoreError> {
    let enabled = portal
        .store
        .user(&user.id)
        .await?
        .is_some_and(|u| !u.disabled);
    Ok(enabled && portal.store.device(&device.device).await?.is_some())
}

fn with_ceremony(portal: &Portal, id: &str, mut res: Response) -> Response {
    let cookie = web::flow_cookie(CEREMONY_COOKIE, id, "Strict", portal.settings.cookie.secure);
    web::append_cookie(&mut res, &cookie);
    res
}

fn refuse_login(device: &Device, reason: &'static str, message: &str) -> Response {
    tracing::info!(target: "audit", event = "login_failed", device = %device.device, reason);
    json_error(StatusCode::FORBIDDEN, message)
}

/// An audit reason and a message a person can act on.
fn explain(err: &WebauthnError) -> (&'static str, &'static str) {
    use WebauthnError as E;
    match err {
        E::InvalidRPOrigin | E::InvalidRPIDHash => (
            "wrong_origin",
            "This answer was made for a different site. Open the sign-in page from its usual address.",
        ),
        E::UserNotVerified => (
            "user_not_verified",
            "Your authenticator did not verify you (PIN, fingerprint or face). This site requires it.",
        ),
        E::CredentialPossibleCompromise => (
            "counter_regression",
            "This key's signature counter went backwards, so it may have been copied. It was refused; contact your administrator.",
        ),
        E::MismatchedChallenge | E::ChallengeNotFound => (
            "replayed",
            "This answer does not match the current challenge. Start again.",
        ),
        E::AttestationUntrustedAaguid
        | E::AttestationChainNotTrusted(_)
        | E::AttestationTrustFailure
        | E::AttestationNotVerifiable
        | E::AttestationCertificateTrustStoreEmpty
        | E::AttestationNotSupported => (
            "attestation_untrusted",
            "This key is not allowed here: its maker or model is not on this site's list of approved security keys.",
        ),
        _ => (
            "verification_failed",
            "Your authenticator's answer could not be verified. Try again, or use another device.",
        ),
    }
}

fn ceremony_failed(what: &str, err: &WebauthnError) -> Response {
    tracing::error!(%err, "cannot start {what}");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Could not start the ceremony. Try again.",
    )
}

/// A ceremony could not be kept: nothing was started.
fn busy(why: NotKept) -> Response {
    match why {
        NotKept::TooMany => web::too_many(CEREMONY_TTL.as_secs()),
        NotKept::Unavailable => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "keyward cannot start a sign-in right now. Try again shortly.",
        ),
    }
}

fn store_failed(err: &keyward_store::StoreError) -> Response {
    tracing::error!(%err, "store failed");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "keyward cannot reach its database right now. Try again shortly.",
    )
}

fn passkeys(devices: &[Device]) -> Vec<Passkey> {
    devices
        .iter()
        .filter_map(|d| serde_json::from_str::<Passkey>(&d.passkey).ok())
        .collect()
}

/// Who is enrolling: from an invite, the IdP, or the current session.
enum Enroller {
    Invite(User, [u8; 32]),
    Identified(User),
    Session(User),
}

impl Enroller {
    fn user(&self) -> &User {
        match self {
            Enroller::Invite(u, _) | Enroller::Identified(u) | Enroller::Session(u) => u,
        }
    }
}

/// Hash under which an invite secret is stored.
pub fn invite_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

async fn enroller(
    portal: &Portal,
    headers: &HeaderMap,
    invite: Option<&str>,
) -> Result<Enroller, Response> {
    if let Some(secret) = invite.filter(|s| !s.is_empty()) {
        if secret.len() > 128 {
            return Err(invite_problem(&Invite::Unknown));
        }
        let hash = invite_hash(secret);
        return match portal.store.invite(&hash, unix_now()).await {
            Ok(Invite::Valid(user)) => Ok(Enroller::Invite(user, hash)),
            Ok(other) => Err(invite_problem(&other)),
            Err(err) => Err(store_failed(&err)),
        };
    }
    if let Some((user_id, _)) = identified(portal, headers).await {
        let user = match portal.store.user(&user_id).await {
            Ok(Some(u)) if !u.disabled => u,
            Ok(_) => {
                return Err(json_error(
                    StatusCode::FORBIDDEN,
                    "This account is disabled.",
                ));
            }
            Err(err) => return Err(store_failed(&err)),
        };
        // In `oidc` mode the IdP alone enrolls only a first device: sign-in is IdP and
        // passkey, so a phished IdP password must not add a key of its own. Later
        // devices need the passkey too (a recent session, below).
        let first = match portal.settings.identity {
            IdentityMode::Oidc => match portal.store.devices(Some(&user.id)).await {
                Ok(devices) => devices.is_empty(),
                Err(err) => return Err(store_failed(&err)),
            },
            IdentityMode::OidcEnroll | IdentityMode::Invite => true,
        };
        if first {
            return Ok(Enroller::Identified(user));
        }
        if portal.session(headers).is_none() {
            return Err(json_error(
                StatusCode::CONFLICT,
                "This account already has a key. Sign in with it, then add this device from your devices page.",
            ));
        }
    }
    if let Some(claims) = portal.session(headers) {
        // A stolen cookie must not be turned into a device of the thief's: adding a
        // device needs a recent sign-in, not just a live session.
        if unix_now() - claims.auth_time > RECENT_SIGN_IN {
            return Err(json_error(
                StatusCode::UNAUTHORIZED,
                "Confirm it is you: sign in again, then add the device.",
            ));
        }
        return match portal.store.user(&claims.sub).await {
            Ok(Some(u)) if !u.disabled => Ok(Enroller::Session(u)),
            Ok(_) => Err(json_error(
                StatusCode::FORBIDDEN,
                "This account is disabled.",
            )),
            Err(err) => Err(store_failed(&err)),
        };
    }
    Err(json_error(
        StatusCode::UNAUTHORIZED,
        "To enroll a device, open your enrollment link or sign in first.",
    ))
}

fn invite_problem(state: &Invite) -> Response {
    let (status, message) = match state {
        Invite::Expired => (
            StatusCode::GONE,
            "This enrollment link expired. Ask your administrator for a new one.",
        ),
        Invite::Used => (
            StatusCode::GONE,
            "This enrollment link was already used. Each link enrolls one device; ask for a new one.",
        ),
        Invite::UserDisabled => (
            StatusCode::FORBIDDEN,
            "This account is disabled. Contact your administrator.",
        ),
        Invite::Unknown | Invite::Valid(_) => (
            StatusCode::NOT_FOUND,
            "This enrollment link is not valid. Check that you copied all of it.",
        ),
    };
    json_error(status, message)
}

/// `GET /.keyward/enroll`
pub async fn enroll_page(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let invite = q.invite.as_deref();
    let rd =
        q.rd.as_deref()
            .map(|rd| portal.settings.return_hosts.check(Some(rd)))
            .unwrap_or_else(|| "/.keyward/devices".into());
    match enroller(&portal, &headers, invite).await {
        Ok(who) => {
            let attested = portal
                .attestation
                .as_ref()
                .map(|_| portal.settings.attestation_required);
            pages::enroll(who.user(), invite, attested, &rd).into_response()
        }
        Err(res)
            if res.status() == StatusCode::UNAUTHORIZED
                && portal.oidc.is_some()
                && portal.settings.identity != IdentityMode::Invite =>
        {
            Redirect::to(&format!(
                "/.keyward/oidc/start?enroll=1&rd={}",
                pages::url_encode(&rd)
            ))
            .into_response()
        }
        Err(res) if res.status() == StatusCode::UNAUTHORIZED => Redirect::to(&format!(
            "/.keyward/login?rd={}",
            pages::url_encode("/.keyward/enroll")
        ))
        .into_response(),
        Err(res) => {
            let status = res.status();
            let message = match status {
                StatusCode::GONE => "This enrollment link can no longer be used",
                StatusCode::FORBIDDEN => "This account is disabled",
                StatusCode::CONFLICT => "This account already has a key",
                StatusCode::SERVICE_UNAVAILABLE => "keyward cannot reach its database",
                _ => "This enrollment link is not valid",
            };
            let advice = match status {
                StatusCode::GONE => {
                    "Links expire and enroll one device each. Ask your administrator for a new one."
                }
                StatusCode::SERVICE_UNAVAILABLE => "Try again in a moment.",
                StatusCode::CONFLICT => {
                    "Sign in with your organization and your key, then add this device from your devices page."
                }
                _ => {
                    "Check that you copied the whole link, or ask your administrator for a new one."
                }
            };
            pages::problem(status, message, advice)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollBegin {
    #[serde(default)]
    invite: Option<String>,
    name: String,
    /// `passkey` or `security-key`.
    kind: String,
    #[serde(default)]
    rd: Option<String>,
}

/// `POST /.keyward/enroll/begin`
pub async fn enroll_begin(
    State(portal): State<Arc<Portal>>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<EnrollBegin>,
) -> Response {
    let who = match enroller(&portal, &headers, body.invite.as_deref()).await {
        Ok(w) => w,
        Err(res) => return res,
    };
    let user = who.user();
    if !portal.allow_user(&user.id) {
        return web::too_many(portal.per_user.retry_after());
    }
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return json_error(
            StatusCode::BAD_REQUEST,
            "Give the device a name of 1 to 64 characters.",
        );
    }
    let existing = match portal.store.devices(Some(&user.id)).await {
        Ok(d) => passkeys(&d)
            .iter()
            .map(|p| p.cred_id().clone())
            .collect::<Vec<_>>(),
        Err(err) => return store_failed(&err),
    };
    let exclude = (!existing.is_empty()).then_some(existing);
    let handle = Uuid::from_bytes(user.handle);
    let display = user.email.as_deref().unwrap_or(&user.name);
    let started = match body.kind.as_str() {
        "security-key" => {
            let Some(cas) = &portal.attestation else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "This site does not enroll attested security keys; create a passkey.",
                );
            };
            portal
                .webauthn
                .start_attested_passkey_registration(
                    handle,
                    &user.name,
                    display,
                    exclude,
                    cas.clone(),
                    None,
                )
                .map(|(ccr, s)| (ccr, Registration::Attested(s)))
        }
        "passkey" => {
            if portal.settings.attestation_required {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "This site only accepts approved security keys. Use one.",
                );
            }
            portal
                .webauthn
                .start_passkey_registration(handle, &user.name, display, exclude)
                .map(|(mut ccr, s)| {
                    // Ask for a discoverable credential, so sign-in needs no user name.
                    if let Some(sel) = ccr.public_key.authenticator_selection.as_mut() {
                        sel.resident_key = Some(ResidentKeyRequirement::Preferred);
                    }
                    (ccr, Registration::Passkey(s))
                })
        }
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "kind must be `passkey` or `security-key`.",
            );
        }
    };
    let (ccr, state) = match started {
        Ok(s) => s,
        Err(err) => return ceremony_failed("enrollment", &err),
    };
    let Ok(options) = serde_json::to_value(ccr) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not start the enrollment.",
        );
    };
    let rd = body
        .rd
        .as_deref()
        .map(|rd| portal.settings.return_hosts.check(Some(rd)))
        .unwrap_or_else(|| "/.keyward/devices".into());
    let enrollment = Pending::Enroll(Enrollment {
        user_id: user.id.clone(),
        device_name: name.to_owned(),
        invite: match &who {
            Enroller::Invite(_, hash) => Some(*hash),
            _ => None,
        },
        state,
        rd,
    });
    let ip = web::client_ip(&portal, &peer, &headers);
    let replaces = web::cookie(&headers, CEREMONY_COOKIE);
    let id = match portal.ceremonies.put(ip, replaces, enrollment).await {
        Ok(id) => id,
        Err(not_kept) => return busy(not_kept),
    };
    with_ceremony(&portal, &id, Json(options).into_response())
}

/// `POST /.keyward/enroll/finish`
pub async fn enroll_finish(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    Json(credential): Json<RegisterPublicKeyCredential>,
) -> Response {
    let pending = portal.take_ceremony(&headers).await;
    let Some(Pending::Enroll(enrollment)) = pending.as_ref() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "This enrollment expired or was already used. Start again.",
        );
    };
    let device_id = portal.device_id(&credential.raw_id);
    let registered = match &enrollment.state {
        Registration::Passkey(state) => portal
            .webauthn
            .finish_passkey_registration(&credential, state)
            .map(|p| {
                (
                    p,
                    false,
                    aaguid::from_attestation_object(&credential.response.attestation_object),
                )
            }),
        Registration::Attested(state) => portal
            .webauthn
            .finish_attested_passkey_registration(&credential, state)
            .and_then(|ap| {
                let model = match ap.attestation().metadata {
                    AttestationMetadata::Packed { aaguid }
                    | AttestationMetadata::Tpm { aaguid, .. } => {
                        Some(aaguid.hyphenated().to_string())
                    }
                    _ => None,
                };
                let allowed = portal.settings.aaguids.is_empty()
                    || model
                        .as_ref()
                        .is_some_and(|m| portal.settings.aaguids.contains(m));
                if allowed {
                    Ok((Passkey::from(ap), true, model))
                } else {
                    Err(WebauthnError::AttestationUntrustedAaguid)
                }
            }),
    };
    let (passkey, attested, model) = match registered {
        Ok(r) => r,
        Err(err) => {
            let (reason, message) = explain(&err);
            tracing::info!(target: "audit", event = "enroll_failed", device = %device_id, reason);
            return json_error(StatusCode::FORBIDDEN, message);
        }
    };
    // `rawId` is not signed; the device id comes from the verified credential id.
    let device_id = portal.device_id(passkey.cred_id());
    let stored = serde_json::to_string(&passkey).unwrap_or_default();
    let new = NewDevice {
        device: &device_id,
        cred_id: passkey.cred_id(),
        user_id: &enrollment.user_id,
        name: &enrollment.device_name,
        aaguid: model.as_deref(),
        attested,
        passkey: &stored,
        now: unix_now(),
    };
    let device = match portal
        .store
        .add_device(&new, enrollment.invite.as_ref())
        .await
    {
        Ok(Ok(d)) => d,
        Ok(Err(Conflict::Credential)) => {
            tracing::info!(target: "audit", event = "enroll_failed", device = %device_id, reason = "already_registered");
            return json_error(
                StatusCode::CONFLICT,
                "This authenticator is already registered.",
            );
        }
        Ok(Err(_)) => return invite_problem(&Invite::Used),
        Err(err) => return store_failed(&err),
    };
    let user = match portal.store.user(&enrollment.user_id).await {
        Ok(Some(u)) if !u.disabled => u,
        Ok(_) => return json_error(StatusCode::FORBIDDEN, "This account is disabled."),
        Err(err) => return store_failed(&err),
    };
    tracing::info!(
        target: "audit",
        event = "enrolled",
        device = %device.device,
        attested,
        via = if enrollment.invite.is_some() { "invite" } else { "session" },
    );
    finish_session(
        &portal,
        &headers,
        &user,
        &device,
        "login",
        enrollment.rd.clone(),
    )
    .await
}
