//! End-to-end ceremonies against the real router: software authenticators
//! (`webauthn-authenticator-rs`) answer the portal's challenges, requests go through
//! the whole middleware stack with `oneshot`, JSON in and out, cookies carried by hand.
//!
//! The soft authenticators differ from a browser in two ways the tests make up for:
//! they only sign for credentials listed in `allowCredentials`, and they return no
//! user handle. For a usernameless (discoverable) sign-in the test names the
//! credential and adds the handle, as a browser's passkey would; neither is covered by
//! the signature, so the server's checks are exercised as they are in production.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use keyward_gate::{Gate, GateConfig, GateMetrics, Keys};
use keyward_session::keyring::KeyRing;
use keyward_session::{AuthMethod, Claims, token};
use keyward_store::{Invite, NewUser, Source, Store, User};
use serde_json::{Value, json};
use tower::ServiceExt;
use webauthn_authenticator_rs::AuthenticatorBackend;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::{self, SoftToken};
use webauthn_rs_proto::{AllowCredentials, UserVerificationPolicy};

use crate::web::CEREMONY_COOKIE;
use crate::{Portal, Revoker, invite_hash, unix_now};

const ORIGIN: &str = "http://localhost:8080";
const SESSION_COOKIE: &str = "keyward_session";
/// Rate limits out of the way, for every test but the one about them.
const UNLIMITED: &str = "rate_per_ip = 1000\nrate_per_user = 1000\n";

/// The portal, its store and gate, behind the router.
struct Harness {
    router: Router,
    portal: Arc<Portal>,
    store: Store,
    gate: Arc<Gate>,
    peer: SocketAddr,
    dir: Arc<tempfile::TempDir>,
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.status, self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The person-facing message of a JSON error.
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// The value `Set-Cookie` gives cookie `name` (empty when it clears it).
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie(name)?
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_owned())
    }

    /// The whole `Set-Cookie` line for cookie `name`.
    fn set_cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
    }

    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[track_caller]
    fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{}", self.text());
        self
    }

    /// Refused with `status` and a message for the person that contains `says`.
    #[track_caller]
    fn refused(&self, status: StatusCode, says: &str) {
        self.expect(status);
        assert!(self.error().contains(says), "{}", self.error());
    }
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

impl Harness {
    async fn new() -> Self {
        Self::build(|_| UNLIMITED.into()).await
    }

    /// A portal whose `[portal]` section is `portal(tempdir)`.
    async fn build(portal: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let toml = format!(
            "version = 1\n\
             [store]\nurl = \"sqlite://{db}\"\n\
             [session]\nkeyring = \"{ring}\"\n\
             [portal]\n{portal}",
            db = d.join("k.db").display(),
            ring = d.join("ring.toml").display(),
            portal = portal(d),
        );
        std::fs::write(d.join("keyward.toml"), toml).unwrap();
        let ring = KeyRing::generate(unix_now(), &mut crate::os_random).unwrap();
        Self::node(Arc::new(dir), ring).await
    }

    /// Another node on the same config and store, with its own portal, gate and store
    /// connections (as another process would have). Its key ring is its own: what it
    /// seals, only it opens.
    async fn peer(&self) -> Self {
        let ring = KeyRing::generate(unix_now(), &mut crate::os_random).unwrap();
        Self::node(self.dir.clone(), ring).await
    }

    async fn node(dir: Arc<tempfile::TempDir>, ring: KeyRing) -> Self {
        let cfg = keyward_config::Config::load(&dir.path().join("keyward.toml")).unwrap();
        let gate = Arc::new(Gate::new(
            GateConfig {
                cookie_name: cfg.session.cookie_name.clone(),
                leeway: cfg.session.leeway.as_secs() as i64,
                max_lifetime: cfg.session.max_lifetime.as_secs() as i64,
                login_url: cfg.portal.login_url.clone(),
                assertion: None,
                cache_capacity: 1000,
                revocations_max_age: None,
                tunnels: None,
            },
            keyward_policy::Policy::empty(),
            Keys::new(ring),
            GateMetrics::register(&prometheus::Registry::new()).unwrap(),
        ));
        let store = Store::open(&cfg.store.url).await.unwrap();
        let revoker = Arc::new(Revoker::new(
            store.clone(),
            gate.clone(),
            cfg.session_horizon_secs(),
        ));
        let portal = Arc::new(Portal::new(&cfg, gate.clone(), revoker).await.unwrap());
        Self {
            router: crate::router(portal.clone()),
            portal,
            store,
            gate,
            peer: "192.0.2.10:50000".parse().unwrap(),
            dir,
        }
    }

    async fn user(&self, name: &str) -> User {
        let mut handle = [0u8; 16];
        crate::os_random(&mut handle);
        let id = format!("local:{name}");
        let email = format!("{name}@example.test");
        self.store
            .create_user(&NewUser {
                id: &id,
                handle,
                name,
                email: Some(&email),
                roles: &["dev".to_owned()],
                source: Source::Local,
                now: unix_now(),
            })
            .await
            .unwrap()
            .unwrap()
    }

    /// A fresh invite secret for `user`, valid for an hour.
    async fn invite(&self, user: &User) -> String {
        let secret = crate::random_id();
        let now = unix_now();
        self.store
            .create_invite(&invite_hash(&secret), &user.id, now, now + 3600)
            .await
            .unwrap();
        secret
    }

    async fn send(&self, mut req: Request<Body>) -> Answer {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, cookies: &[(&str, &str)]) -> Answer {
        let req = with_cookies(Request::get(path), cookies)
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    async fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        cookies: &[(&str, &str)],
    ) -> Answer {
        let req = with_cookies(Request::post(path), cookies)
            .header(header::ORIGIN, ORIGIN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.send(req).await
    }

    async fn post_form(&self, path: &str, form: &str, cookies: &[(&str, &str)]) -> Answer {
        let req = with_cookies(Request::post(path), cookies)
            .header(header::ORIGIN, ORIGIN)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        self.send(req).await
    }

    /// `enroll/begin`, which must succeed: the options and the ceremony cookie.
    async fn enroll_begin(&self, invite: &str, kind: &str) -> (CreationChallengeResponse, String) {
        let a = self
            .post_json(
                "/.keyward/enroll/begin",
                &json!({ "invite": invite, "name": "My key", "kind": kind }),
                &[],
            )
            .await;
        a.expect(StatusCode::OK);
        let ceremony = a.cookie(CEREMONY_COOKIE).expect("a ceremony cookie");
        (serde_json::from_slice(&a.body).unwrap(), ceremony)
    }

    async fn enroll_finish(
        &self,
        ceremony: &str,
        credential: &RegisterPublicKeyCredential,
    ) -> Answer {
        self.post_json(
            "/.keyward/enroll/finish",
            credential,
            &[(CEREMONY_COOKIE, ceremony)],
        )
        .await
    }

    /// A whole enrollment from `invite`; returns the finish answer and the credential.
    async fn enroll(
        &self,
        auth: &mut impl WebauthnAuthenticator,
        invite: &str,
        kind: &str,
    ) -> (Answer, RegisterPublicKeyCredential) {
        let (ccr, ceremony) = self.enroll_begin(invite, kind).await;
        let credential = auth.do_registration(origin(), ccr).unwrap();
        (self.enroll_finish(&ceremony, &credential).await, credential)
    }

    /// `login/begin`, which must succeed: the options and the ceremony cookie.
    async fn login_begin(&self, username: Option<&str>) -> (RequestChallengeResponse, String) {
        let a = self
            .post_json(
                "/.keyward/login/begin",
                &json!({ "username": username, "rd": "http://localhost:8080/app?x=1" }),
                &[],
            )
            .await;
        a.expect(StatusCode::OK);
        let ceremony = a.cookie(CEREMONY_COOKIE).expect("a ceremony cookie");
        (serde_json::from_slice(&a.body).unwrap(), ceremony)
    }

    async fn login_finish(&self, ceremony: &str, credential: &PublicKeyCredential) -> Answer {
        self.post_json(
            "/.keyward/login/finish",
            credential,
            &[(CEREMONY_COOKIE, ceremony)],
        )
        .await
    }

    /// Signs in as `username` (allowCredentials) with `auth`.
    async fn login(&self, auth: &mut impl WebauthnAuthenticator, username: &str) -> Answer {
        let (rcr, ceremony) = self.login_begin(Some(username)).await;
        let credential = auth.do_authentication(origin(), rcr).unwrap();
        self.login_finish(&ceremony, &credential).await
    }

    /// The claims of the session cookie an answer sets.
    fn claims(&self, a: &Answer) -> Claims {
        let sealed = a.cookie(SESSION_COOKIE).expect("a session cookie");
        token::open(
            &sealed,
            &self.gate.keys().ring,
            unix_now(),
            self.gate.validity(),
        )
        .unwrap()
    }

    /// The signature counter the store holds for `device`.
    async fn stored_counter(&self, device: &str) -> u64 {
        let d = self.store.device(device).await.unwrap().unwrap();
        let passkey: Value = serde_json::from_str(&d.passkey).unwrap();
        passkey["cred"]["counter"].as_u64().unwrap()
    }
}

fn with_cookies(
    mut b: axum::http::request::Builder,
    cookies: &[(&str, &str)],
) -> axum::http::request::Builder {
    if !cookies.is_empty() {
        let line: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        b = b.header(header::COOKIE, line.join("; "));
    }
    b
}

/// What a discoverable passkey does for a usernameless challenge: picks its
/// credential and returns its user handle (see the module comment).
fn sign_discoverable(
    auth: &mut impl WebauthnAuthenticator,
    mut rcr: RequestChallengeResponse,
    cred_id: &[u8],
    handle: &[u8],
) -> PublicKeyCredential {
    rcr.public_key.allow_credentials = vec![AllowCredentials {
        type_: "public-key".into(),
        id: cred_id.to_vec(),
        transports: None,
    }];
    let mut credential = auth.do_authentication(origin(), rcr).unwrap();
    credential.response.user_handle = Some(handle.to_vec());
    credential
}

fn pem(der: &[u8]) -> String {
    let b64 = Base64::encode_string(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A soft security key (with user verification) and the PEM of its attestation CA.
fn soft_token() -> (SoftToken, String) {
    use crypto_glue::traits::EncodeDer;
    let (token, ca) = SoftToken::new(true).unwrap();
    (token, pem(&ca.to_der().unwrap()))
}

/// A portal accepting security keys attested by `ca_pem`, restricted to `aaguids`.
async fn attesting_portal(ca_pem: &str, aaguids: &[&str]) -> Harness {
    let ca_pem = ca_pem.to_owned();
    let aaguids: Vec<String> = aaguids.iter().map(|a| format!("\"{a}\"")).collect();
    Harness::build(move |dir| {
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        format!(
            "{UNLIMITED}[portal.attestation]\nca_files = [\"{}\"]\naaguids = [{}]\n",
            ca.display(),
            aaguids.join(", ")
        )
    })
    .await
}

#[tokio::test]
async fn an_invite_enrolls_one_passkey_and_starts_a_session() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let invite = h.invite(&alice).await;
    let mut key = SoftPasskey::new(true);

    let (a, credential) = h.enroll(&mut key, &invite, "passkey").await;
    a.expect(StatusCode::OK);
    assert_eq!(a.json()["redirect"], "/.keyward/devices");
    let line = a.set_cookie(SESSION_COOKIE).unwrap();
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Lax") && line.contains("Path=/"),
        "{line}"
    );
    assert!(
        !line.contains("Secure"),
        "plain-http localhost gets no Secure flag: {line}"
    );
    assert_eq!(
        a.cookie(CEREMONY_COOKIE).as_deref(),
        Some(""),
        "the ceremony cookie is cleared"
    );

    let claims = h.claims(&a);
    assert_eq!(claims.sub, alice.id);
    assert_eq!(claims.email.as_deref(), Some("alice@example.test"));
    assert_eq!(claims.roles, ["dev"]);
    assert_eq!(claims.amr, AuthMethod::Passkey);
    let dev = claims.dev.clone().unwrap();
    assert!(dev.starts_with("d_") && dev.len() == 24, "{dev}");
    assert_eq!(dev, h.portal.device_id(&credential.raw_id));
    assert_ne!(dev, Base64UrlUnpadded::encode_string(&credential.raw_id));
    assert_ne!(dev, credential.id);
    assert!(!dev.contains(&credential.id));

    let stored = h.store.device(&dev).await.unwrap().unwrap();
    assert_eq!(
        (stored.user_id.as_str(), stored.name.as_str()),
        (alice.id.as_str(), "My key")
    );
    assert!(!stored.attested);
    assert_eq!(stored.aaguid, None, "a soft passkey's AAGUID is all zeros");
    assert_eq!(
        h.store
            .device_by_credential(&credential.raw_id)
            .await
            .unwrap()
            .unwrap()
            .device,
        dev
    );

    // The link is spent: it neither starts nor (per the store) finishes another enrollment.
    assert_eq!(
        h.store
            .invite(&invite_hash(&invite), unix_now())
            .await
            .unwrap(),
        Invite::Used
    );
    let again = h
        .post_json(
            "/.keyward/enroll/begin",
            &json!({ "invite": invite, "name": "Second", "kind": "passkey" }),
            &[],
        )
        .await;
    again.refused(StatusCode::GONE, "already used");
    assert!(again.cookie(CEREMONY_COOKIE).is_none());

    // The session opens the devices page, which lists the device.
    let page = h
        .get(
            "/.keyward/devices",
            &[(SESSION_COOKIE, &a.cookie(SESSION_COOKIE).unwrap())],
        )
        .await;
    page.expect(StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains(&format!("data-device=\"{dev}\"")) && html.contains("this session"),
        "{html}"
    );
    assert!(
        !html.contains(&credential.id),
        "the raw credential id never reaches a page"
    );
}

#[tokio::test]
async fn the_device_id_comes_from_the_verified_credential_not_the_client() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let mut bob_key = SoftPasskey::new(true);
    let (b, bob_credential) = h
        .enroll(&mut bob_key, &h.invite(&bob).await, "passkey")
        .await;
    let bob_dev = h.claims(b.expect(StatusCode::OK)).dev.unwrap();

    // `rawId` is not signed: a client may send any value, here bob's credential id
    // (which anyone learns from a named sign-in challenge).
    let mut key = SoftPasskey::new(true);
    let (ccr, ceremony) = h.enroll_begin(&h.invite(&alice).await, "passkey").await;
    let mut credential = key.do_registration(origin(), ccr).unwrap();
    let real = credential.raw_id.clone();
    credential.raw_id = bob_credential.raw_id.clone();
    credential.id = bob_credential.id.clone();
    let a = h.enroll_finish(&ceremony, &credential).await;
    a.expect(StatusCode::OK);
    let dev = h.claims(&a).dev.unwrap();
    assert_ne!(dev, bob_dev, "alice's session must not name bob's device");
    assert_eq!(dev, h.portal.device_id(&real));
    assert_eq!(
        h.store
            .device_by_credential(&real)
            .await
            .unwrap()
            .unwrap()
            .device,
        dev
    );
    assert_eq!(
        h.store.device(&bob_dev).await.unwrap().unwrap().user_id,
        bob.id
    );
}

#[tokio::test]
async fn enrollment_refuses_bad_requests_before_any_ceremony() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let invite = h.invite(&alice).await;
    for (body, status, says) in [
        (
            json!({ "invite": "nope", "name": "k", "kind": "passkey" }),
            StatusCode::NOT_FOUND,
            "not valid",
        ),
        (
            json!({ "name": "k", "kind": "passkey" }),
            StatusCode::UNAUTHORIZED,
            "enrollment link",
        ),
        (
            json!({ "invite": invite, "name": " ", "kind": "passkey" }),
            StatusCode::BAD_REQUEST,
            "1 to 64",
        ),
        (
            json!({ "invite": invite, "name": "k", "kind": "magic" }),
            StatusCode::BAD_REQUEST,
            "kind",
        ),
        (
            json!({ "invite": invite, "name": "k", "kind": "security-key" }),
            StatusCode::BAD_REQUEST,
            "does not enroll attested",
        ),
    ] {
        let a = h.post_json("/.keyward/enroll/begin", &body, &[]).await;
        a.expect(status);
        assert!(a.error().contains(says), "{body}: {}", a.error());
    }
    // Expired links say so.
    let old = crate::random_id();
    h.store
        .create_invite(
            &invite_hash(&old),
            &alice.id,
            unix_now() - 7200,
            unix_now() - 3600,
        )
        .await
        .unwrap();
    let a = h
        .post_json(
            "/.keyward/enroll/begin",
            &json!({ "invite": old, "name": "k", "kind": "passkey" }),
            &[],
        )
        .await;
    a.refused(StatusCode::GONE, "expired");
    // Nothing above used the good link up.
    assert!(matches!(
        h.store
            .invite(&invite_hash(&invite), unix_now())
            .await
            .unwrap(),
        Invite::Valid(_)
    ));
}

#[tokio::test]
async fn usernameless_sign_in_records_use_and_advances_the_counter() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let mut key = SoftPasskey::new(true);
    let (a, credential) = h.enroll(&mut key, &h.invite(&alice).await, "passkey").await;
    let dev = h.claims(a.expect(StatusCode::OK)).dev.unwrap();
    let before = h.store.device(&dev).await.unwrap().unwrap();
    assert_eq!(before.last_used_at, None);
    assert_eq!(h.stored_counter(&dev).await, 0);

    let (rcr, ceremony) = h.login_begin(None).await;
    assert!(
        rcr.public_key.allow_credentials.is_empty(),
        "usernameless: nothing listed"
    );
    assert_eq!(
        rcr.public_key.user_verification,
        UserVerificationPolicy::Required
    );
    let answer = sign_discoverable(&mut key, rcr, &credential.raw_id, &alice.handle);
    let a = h.login_finish(&ceremony, &answer).await;
    a.expect(StatusCode::OK);
    assert_eq!(a.json()["redirect"], "http://localhost:8080/app?x=1");
    let claims = h.claims(&a);
    assert_eq!(
        (claims.sub.as_str(), claims.dev.as_deref()),
        (alice.id.as_str(), Some(dev.as_str()))
    );
    assert_eq!(claims.amr, AuthMethod::Passkey);
    let after = h.store.device(&dev).await.unwrap().unwrap();
    assert!(after.last_used_at.is_some_and(|t| t >= before.created_at));
    assert_eq!(h.stored_counter(&dev).await, 1);

    // A second sign-in moves the counter on again.
    let (rcr, ceremony) = h.login_begin(None).await;
    let answer = sign_discoverable(&mut key, rcr, &credential.raw_id, &alice.handle);
    h.login_finish(&ceremony, &answer)
        .await
        .expect(StatusCode::OK);
    assert_eq!(h.stored_counter(&dev).await, 2);

    // An answer claiming to be bob's credential is refused, and changes nothing.
    let (rcr, ceremony) = h.login_begin(None).await;
    let answer = sign_discoverable(&mut key, rcr, &credential.raw_id, &bob.handle);
    let a = h.login_finish(&ceremony, &answer).await;
    a.refused(StatusCode::FORBIDDEN, "does not belong");
    assert!(a.cookie(SESSION_COOKIE).is_none());
    assert_eq!(h.stored_counter(&dev).await, 2);

    // What an operator watching the portal sees of all that.
    let m = h.portal.metrics();
    assert_eq!(m.count("/.keyward/enroll/finish", "ok"), 1);
    assert_eq!(m.count("/.keyward/login/begin", "ok"), 3);
    assert_eq!(m.count("/.keyward/login/finish", "ok"), 2);
    assert_eq!(m.count("/.keyward/login/finish", "rejected"), 1);
    assert_eq!(m.count("/.keyward/login/finish", "error"), 0);
}

#[tokio::test]
async fn named_sign_in_lists_credentials_and_unknown_names_look_the_same() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    h.user("carol").await; // exists, no devices
    let mut key = SoftPasskey::new(true);
    let (a, credential) = h.enroll(&mut key, &h.invite(&alice).await, "passkey").await;
    a.expect(StatusCode::OK);

    let (rcr, ceremony) = h.login_begin(Some("alice")).await;
    let listed: Vec<&[u8]> = rcr
        .public_key
        .allow_credentials
        .iter()
        .map(|c| c.id.as_slice())
        .collect();
    assert_eq!(listed, [credential.raw_id.as_slice()]);
    let answer = key.do_authentication(origin(), rcr).unwrap();
    let a = h.login_finish(&ceremony, &answer).await;
    a.expect(StatusCode::OK);
    assert_eq!(h.claims(&a).sub, alice.id);

    // Unknown and device-less names get the same usernameless challenge.
    let shape = |a: &Answer| {
        let mut v = a.json();
        v["publicKey"]["challenge"] = Value::Null;
        v
    };
    let mut shapes = Vec::new();
    for name in [None, Some("mallory"), Some("carol")] {
        let a = h
            .post_json("/.keyward/login/begin", &json!({ "username": name }), &[])
            .await;
        a.expect(StatusCode::OK);
        assert!(a.cookie(CEREMONY_COOKIE).is_some_and(|c| !c.is_empty()));
        let rcr: RequestChallengeResponse = serde_json::from_slice(&a.body).unwrap();
        assert!(rcr.public_key.allow_credentials.is_empty(), "{name:?}");
        shapes.push(shape(&a));
    }
    assert!(shapes.windows(2).all(|w| w[0] == w[1]), "{shapes:?}");

    // Return URLs go only to configured hosts.
    let a = h
        .post_json(
            "/.keyward/login/begin",
            &json!({ "username": "alice", "rd": "https://evil.example/" }),
            &[],
        )
        .await;
    let ceremony = a.cookie(CEREMONY_COOKIE).unwrap();
    let rcr: RequestChallengeResponse = serde_json::from_slice(&a.body).unwrap();
    let answer = key.do_authentication(origin(), rcr).unwrap();
    let a = h.login_finish(&ceremony, &answer).await;
    assert_eq!(a.expect(StatusCode::OK).json()["redirect"], "/");
}

#[tokio::test]
async fn a_cloned_authenticator_is_caught_by_its_counter() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    // SoftToken's state serializes, so it can be copied like a cloned key.
    let (mut key, _) = SoftToken::new(true).unwrap();
    let (a, _) = h.enroll(&mut key, &h.invite(&alice).await, "passkey").await;
    let dev = h.claims(a.expect(StatusCode::OK)).dev.unwrap();
    let mut clone = SoftToken::from_cbor(&key.to_cbor().unwrap()).unwrap();

    h.login(&mut key, "alice").await.expect(StatusCode::OK);
    assert_eq!(h.stored_counter(&dev).await, 1);
    // The copy signs with the counter the original already used.
    let a = h.login(&mut clone, "alice").await;
    a.refused(StatusCode::FORBIDDEN, "counter went backwards");
    assert!(a.cookie(SESSION_COOKIE).is_none());
    assert_eq!(
        h.stored_counter(&dev).await,
        1,
        "a refused answer is not recorded"
    );
}

#[tokio::test]
async fn a_counter_below_the_stored_one_is_refused() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let mut key = SoftPasskey::new(true);
    let (a, _) = h.enroll(&mut key, &h.invite(&alice).await, "passkey").await;
    let dev = h.claims(a.expect(StatusCode::OK)).dev.unwrap();
    h.login(&mut key, "alice").await.expect(StatusCode::OK);

    // Someone else's copy of the key has since been used 1000 times.
    let stored = h.store.device(&dev).await.unwrap().unwrap();
    let mut passkey: Value = serde_json::from_str(&stored.passkey).unwrap();
    passkey["cred"]["counter"] = json!(1000);
    assert_eq!(
        h.store
            .touch_device(&dev, &passkey.to_string(), 1000, unix_now())
            .await
            .unwrap(),
        keyward_store::Touch::Recorded
    );

    let a = h.login(&mut key, "alice").await;
    a.refused(StatusCode::FORBIDDEN, "counter went backwards");
    assert_eq!(h.stored_counter(&dev).await, 1000);
}

#[tokio::test]
async fn user_verification_is_required() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let invite = h.invite(&alice).await;

    // The portal asks for verification, which a key without it cannot give.
    let (ccr, ceremony) = h.enroll_begin(&invite, "passkey").await;
    let sel = ccr.public_key.authenticator_selection.clone().unwrap();
    assert_eq!(sel.user_verification, UserVerificationPolicy::Required);
    assert!(
        SoftPasskey::new(false)
            .do_registration(origin(), ccr.clone())
            .is_err()
    );

    // A client that drops the requirement gets an answer without the UV flag: refused.
    let mut lax = ccr;
    if let Some(sel) = lax.public_key.authenticator_selection.as_mut() {
        sel.user_verification = UserVerificationPolicy::Preferred;
    }
    let credential = SoftPasskey::new(false)
        .do_registration(origin(), lax)
        .unwrap();
    let a = h.enroll_finish(&ceremony, &credential).await;
    a.refused(StatusCode::FORBIDDEN, "did not verify you");
    assert!(h.store.devices(Some(&alice.id)).await.unwrap().is_empty());
    assert!(matches!(
        h.store
            .invite(&invite_hash(&invite), unix_now())
            .await
            .unwrap(),
        Invite::Valid(_)
    ));

    // The same at sign-in, for a credential registered with verification.
    let mut key = SoftPasskey::new(true);
    h.enroll(&mut key, &invite, "passkey")
        .await
        .0
        .expect(StatusCode::OK);
    let (mut rcr, ceremony) = h.login_begin(Some("alice")).await;
    rcr.public_key.user_verification = UserVerificationPolicy::Preferred;
    let answer = key.do_authentication(origin(), rcr).unwrap();
    let a = h.login_finish(&ceremony, &answer).await;
    a.refused(StatusCode::FORBIDDEN, "did not verify you");
    assert!(a.cookie(SESSION_COOKIE).is_none());
}

#[tokio::test]
async fn answers_made_for_another_origin_are_refused() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let invite = h.invite(&alice).await;
    let mut key = SoftPasskey::new(true);

    // Enrollment answered for https://localhost:8443 (same RP id, other origin).
    let (ccr, ceremony) = h.enroll_begin(&invite, "passkey").await;
    let other = Url::parse("https://localhost:8443").unwrap();
    let credential = key.do_registration(other.clone(), ccr).unwrap();
    let a = h.enroll_finish(&ceremony, &credential).await;
    a.refused(StatusCode::FORBIDDEN, "different site");
    assert!(h.store.devices(Some(&alice.id)).await.unwrap().is_empty());

    h.enroll(&mut key, &invite, "passkey")
        .await
        .0
        .expect(StatusCode::OK);
    let (rcr, ceremony) = h.login_begin(Some("alice")).await;
    let answer = key.do_authentication(other, rcr).unwrap();
    let a = h.login_finish(&ceremony, &answer).await;
    a.refused(StatusCode::FORBIDDEN, "different site");

    // A phishing page at evil.localhost (a browser would refuse it; the backend
    // signs whatever it is given).
    let (rcr, ceremony) = h.login_begin(Some("alice")).await;
    let evil = Url::parse("http://evil.localhost:8080").unwrap();
    let answer =
        AuthenticatorBackend::perform_auth(&mut key, evil, rcr.public_key, 60_000).unwrap();
    let a = h.login_finish(&ceremony, &answer).await;
    a.refused(StatusCode::FORBIDDEN, "different site");

    // The right origin but an assertion scoped to another RP id.
    let (mut rcr, ceremony) = h.login_begin(Some("alice")).await;
    rcr.public_key.rp_id = "evil.localhost".into();
    let answer =
        AuthenticatorBackend::perform_auth(&mut key, origin(), rcr.public_key, 60_000).unwrap();
    let a = h.login_finish(&ceremony, &answer).await;
    a.refused(StatusCode::FORBIDDEN, "different site");

    // The key still works from the real origin.
    h.login(&mut key, "alice").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn state_changing_requests_need_the_portal_origin() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let invite = h.invite(&alice).await;
    let body =
        serde_json::to_vec(&json!({ "invite": invite, "name": "k", "kind": "passkey" })).unwrap();
    for origin in [
        None,
        Some("http://evil.localhost:8080"),
        Some("https://localhost:8080"),
        Some("null"),
    ] {
        for path in [
            "/.keyward/enroll/begin",
            "/.keyward/enroll/finish",
            "/.keyward/login/begin",
            "/.keyward/login/finish",
            "/.keyward/logout",
            "/.keyward/logout-all",
            "/.keyward/devices/rename",
            "/.keyward/devices/revoke",
        ] {
            let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
            if let Some(o) = origin {
                req = req.header(header::ORIGIN, o);
            }
            let a = h.send(req.body(Body::from(body.clone())).unwrap()).await;
            a.expect(StatusCode::FORBIDDEN);
            assert!(
                a.text().contains("did not come from the sign-in page"),
                "{origin:?} {path}"
            );
            assert!(a.cookie(CEREMONY_COOKIE).is_none());
        }
    }
    // Counted as refused, by route.
    assert_eq!(
        h.portal
            .metrics()
            .count("/.keyward/enroll/begin", "rejected"),
        4
    );
    assert_eq!(h.portal.metrics().count("/.keyward/enroll/begin", "ok"), 0);
    // Refused before the handler: the invite is still good.
    assert!(matches!(
        h.store
            .invite(&invite_hash(&invite), unix_now())
            .await
            .unwrap(),
        Invite::Valid(_)
    ));
    // Pages are GETs and need no Origin.
    h.get("/.keyward/login", &[]).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn ceremonies_are_single_use_and_bound_to_their_challenge() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let mut key = SoftPasskey::new(true);

    let (ccr, ceremony) = h.enroll_begin(&h.invite(&alice).await, "passkey").await;
    let credential = key.do_registration(origin(), ccr).unwrap();
    h.enroll_finish(&ceremony, &credential)
        .await
        .expect(StatusCode::OK);
    let a = h.enroll_finish(&ceremony, &credential).await;
    a.refused(StatusCode::BAD_REQUEST, "expired or was already used");
    assert_eq!(h.store.devices(Some(&alice.id)).await.unwrap().len(), 1);

    // No cookie, or a made-up one, is no ceremony either.
    let (rcr, _) = h.login_begin(Some("alice")).await;
    let answer = key.do_authentication(origin(), rcr).unwrap();
    h.post_json("/.keyward/login/finish", &answer, &[])
        .await
        .expect(StatusCode::BAD_REQUEST);
    h.login_finish(&crate::random_id(), &answer)
        .await
        .expect(StatusCode::BAD_REQUEST);

    // A sign-in finished twice.
    let (rcr, ceremony) = h.login_begin(Some("alice")).await;
    let captured = key.do_authentication(origin(), rcr).unwrap();
    h.login_finish(&ceremony, &captured)
        .await
        .expect(StatusCode::OK);
    let a = h.login_finish(&ceremony, &captured).await;
    a.refused(StatusCode::BAD_REQUEST, "expired or was already used");

    // The captured answer replayed into a fresh ceremony (named and usernameless).
    for name in [Some("alice"), None] {
        let (_, fresh) = h.login_begin(name).await;
        let mut replay = captured.clone();
        replay.response.user_handle = Some(alice.handle.to_vec());
        let a = h.login_finish(&fresh, &replay).await;
        a.expect(StatusCode::FORBIDDEN);
        assert!(
            a.error().contains("does not match the current challenge"),
            "{name:?}: {}",
            a.error()
        );
        assert!(a.cookie(SESSION_COOKIE).is_none());
    }

    // An enrollment cookie does not finish a sign-in.
    let (_, enrolling) = h.enroll_begin(&h.invite(&alice).await, "passkey").await;
    let (rcr, _) = h.login_begin(Some("alice")).await;
    let answer = key.do_authentication(origin(), rcr).unwrap();
    h.login_finish(&enrolling, &answer)
        .await
        .expect(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn attested_security_keys_enroll_when_their_ca_is_trusted() {
    let (mut token, ca) = soft_token();
    let h = attesting_portal(&ca, &[]).await;
    let alice = h.user("alice").await;

    let (a, credential) = h
        .enroll(&mut token, &h.invite(&alice).await, "security-key")
        .await;
    a.expect(StatusCode::OK);
    let claims = h.claims(&a);
    assert_eq!(claims.amr, AuthMethod::Attested);
    let aaguid = softtoken::AAGUID.hyphenated().to_string();
    assert_eq!(claims.aaguid.as_deref(), Some(aaguid.as_str()));
    let dev = claims.dev.unwrap();
    assert_eq!(dev, h.portal.device_id(&credential.raw_id));
    let stored = h.store.device(&dev).await.unwrap().unwrap();
    assert!(stored.attested);
    assert_eq!(stored.aaguid.as_deref(), Some(aaguid.as_str()));

    // Its sign-ins are attested too.
    let a = h.login(&mut token, "alice").await;
    assert_eq!(h.claims(a.expect(StatusCode::OK)).amr, AuthMethod::Attested);

    // A passkey without attestation cannot pass as a security key.
    let (a, _) = h
        .enroll(
            &mut SoftPasskey::new(true),
            &h.invite(&alice).await,
            "security-key",
        )
        .await;
    a.refused(StatusCode::FORBIDDEN, "not allowed here");

    // Nor can a key from a maker whose CA is not configured.
    let (mut stranger, _) = soft_token();
    let (a, _) = h
        .enroll(&mut stranger, &h.invite(&alice).await, "security-key")
        .await;
    a.refused(StatusCode::FORBIDDEN, "not allowed here");
    assert_eq!(h.store.devices(Some(&alice.id)).await.unwrap().len(), 1);

    // The same key enrolled as a plain passkey is a passkey, not attested.
    let (mut plain, _) = soft_token();
    let (a, _) = h
        .enroll(&mut plain, &h.invite(&alice).await, "passkey")
        .await;
    assert_eq!(h.claims(a.expect(StatusCode::OK)).amr, AuthMethod::Passkey);
}

#[tokio::test]
async fn security_keys_outside_the_aaguid_list_are_refused() {
    let (mut token, ca) = soft_token();
    // A YubiKey 5 only: the soft token's CA is trusted, its model is not.
    let h = attesting_portal(&ca, &["cb69481e-8ff7-4039-93ec-0a2729a154a8"]).await;
    let alice = h.user("alice").await;
    let invite = h.invite(&alice).await;
    let (a, _) = h.enroll(&mut token, &invite, "security-key").await;
    a.refused(StatusCode::FORBIDDEN, "not allowed here");
    assert!(a.cookie(SESSION_COOKIE).is_none());
    assert!(h.store.devices(Some(&alice.id)).await.unwrap().is_empty());
    assert!(matches!(
        h.store
            .invite(&invite_hash(&invite), unix_now())
            .await
            .unwrap(),
        Invite::Valid(_)
    ));

    // With its AAGUID listed, the same CA lets it in.
    let (mut token, ca) = soft_token();
    let h = attesting_portal(&ca, &[&softtoken::AAGUID.hyphenated().to_string()]).await;
    let alice = h.user("alice").await;
    let (a, _) = h
        .enroll(&mut token, &h.invite(&alice).await, "security-key")
        .await;
    assert_eq!(h.claims(a.expect(StatusCode::OK)).amr, AuthMethod::Attested);
}

#[tokio::test]
async fn a_revoked_device_loses_its_sessions_and_cannot_sign_in() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let mut key = SoftPasskey::new(true);
    let mut spare = SoftPasskey::new(true);
    let (a, credential) = h.enroll(&mut key, &h.invite(&alice).await, "passkey").await;
    let session = a.expect(StatusCode::OK).cookie(SESSION_COOKIE).unwrap();
    let claims = h.claims(&a);
    let dev = claims.dev.clone().unwrap();
    let (b, _) = h
        .enroll(&mut spare, &h.invite(&alice).await, "passkey")
        .await;
    let spare_session = b.expect(StatusCode::OK).cookie(SESSION_COOKIE).unwrap();
    let spare_claims = h.claims(&b);

    // Only with the session: without it, sign in first.
    let a = h
        .post_form("/.keyward/devices/revoke", &format!("device={dev}"), &[])
        .await;
    a.expect(StatusCode::SEE_OTHER);
    assert!(
        a.location().starts_with("/.keyward/login"),
        "{}",
        a.location()
    );
    assert!(h.store.device(&dev).await.unwrap().is_some());

    let a = h
        .post_form(
            "/.keyward/devices/revoke",
            &format!("device={dev}"),
            &[(SESSION_COOKIE, &session)],
        )
        .await;
    a.expect(StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/.keyward/login?done=revoked");
    assert_eq!(
        a.cookie(SESSION_COOKIE).as_deref(),
        Some(""),
        "its own session is signed out"
    );
    assert!(h.gate.revocations().is_revoked(&claims));
    assert!(
        !h.gate.revocations().is_revoked(&spare_claims),
        "other devices keep their sessions"
    );
    assert!(h.store.device(&dev).await.unwrap().is_none());

    // The old cookie no longer opens the devices page.
    let a = h
        .get("/.keyward/devices", &[(SESSION_COOKIE, &session)])
        .await;
    a.expect(StatusCode::SEE_OTHER);
    assert!(a.location().starts_with("/.keyward/login"));
    h.get("/.keyward/devices", &[(SESSION_COOKIE, &spare_session)])
        .await
        .expect(StatusCode::OK);

    // The key is no longer listed for alice, and its answer is refused.
    let (rcr, ceremony) = h.login_begin(Some("alice")).await;
    assert!(
        rcr.public_key
            .allow_credentials
            .iter()
            .all(|c| c.id != credential.raw_id)
    );
    let answer = sign_discoverable(&mut key, rcr, &credential.raw_id, &alice.handle);
    let a = h.login_finish(&ceremony, &answer).await;
    a.refused(StatusCode::FORBIDDEN, "not registered");
    assert!(a.cookie(SESSION_COOKIE).is_none());

    // Revoking again, or someone else's device, finds nothing.
    h.post_form(
        "/.keyward/devices/revoke",
        &format!("device={dev}"),
        &[(SESSION_COOKIE, &spare_session)],
    )
    .await
    .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_disabled_account_neither_signs_in_nor_enrolls() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let mut key = SoftPasskey::new(true);
    let (a, credential) = h.enroll(&mut key, &h.invite(&alice).await, "passkey").await;
    a.expect(StatusCode::OK);
    let invite = h.invite(&alice).await;
    assert!(
        h.store
            .set_disabled(&alice.id, true, unix_now())
            .await
            .unwrap()
    );

    // Named like an unknown user (nothing listed); the key's answer is refused.
    let (rcr, ceremony) = h.login_begin(Some("alice")).await;
    assert!(rcr.public_key.allow_credentials.is_empty());
    let answer = sign_discoverable(&mut key, rcr, &credential.raw_id, &alice.handle);
    let a = h.login_finish(&ceremony, &answer).await;
    a.refused(StatusCode::FORBIDDEN, "disabled");
    assert!(a.cookie(SESSION_COOKIE).is_none());
    let a = h
        .post_json(
            "/.keyward/enroll/begin",
            &json!({ "invite": invite, "name": "k", "kind": "passkey" }),
            &[],
        )
        .await;
    a.refused(StatusCode::FORBIDDEN, "disabled");
}

#[tokio::test]
async fn people_manage_only_their_own_devices_and_sessions() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let mut alice_key = SoftPasskey::new(true);
    let mut bob_key = SoftPasskey::new(true);
    let (a, _) = h
        .enroll(&mut alice_key, &h.invite(&alice).await, "passkey")
        .await;
    let alice_session = a.expect(StatusCode::OK).cookie(SESSION_COOKIE).unwrap();
    let alice_claims = h.claims(&a);
    let (b, _) = h
        .enroll(&mut bob_key, &h.invite(&bob).await, "passkey")
        .await;
    let bob_dev = h.claims(b.expect(StatusCode::OK)).dev.unwrap();
    let alice_dev = alice_claims.dev.clone().unwrap();

    // Bob's device is not alice's to rename or revoke.
    let cookie = [(SESSION_COOKIE, alice_session.as_str())];
    h.post_form(
        "/.keyward/devices/rename",
        &format!("device={bob_dev}&name=mine"),
        &cookie,
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    h.post_form(
        "/.keyward/devices/revoke",
        &format!("device={bob_dev}"),
        &cookie,
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    assert!(h.store.device(&bob_dev).await.unwrap().is_some());

    let a = h
        .post_form(
            "/.keyward/devices/rename",
            &format!("device={alice_dev}&name=Laptop+key"),
            &cookie,
        )
        .await;
    a.expect(StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/.keyward/devices?done=renamed");
    assert_eq!(
        h.store.device(&alice_dev).await.unwrap().unwrap().name,
        "Laptop key"
    );
    h.post_form(
        "/.keyward/devices/rename",
        &format!("device={alice_dev}&name=%0A"),
        &cookie,
    )
    .await
    .expect(StatusCode::BAD_REQUEST);

    // Signing out revokes this session only.
    let second = h.login(&mut alice_key, "alice").await;
    let second_claims = h.claims(second.expect(StatusCode::OK));
    let a = h.post_form("/.keyward/logout", "", &cookie).await;
    a.expect(StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/.keyward/login?done=signed-out");
    assert_eq!(a.cookie(SESSION_COOKIE).as_deref(), Some(""));
    assert!(h.gate.revocations().is_revoked(&alice_claims));
    assert!(!h.gate.revocations().is_revoked(&second_claims));

    // Signing out everywhere revokes every session of the user, not bob's.
    let bob_claims = h.claims(&b);
    let second_cookie = second.cookie(SESSION_COOKIE).unwrap();
    h.post_form(
        "/.keyward/logout-all",
        "",
        &[(SESSION_COOKIE, &second_cookie)],
    )
    .await
    .expect(StatusCode::SEE_OTHER);
    assert!(h.gate.revocations().is_revoked(&second_claims));
    assert!(!h.gate.revocations().is_revoked(&bob_claims));

    // A sign-in after that is a fresh, valid session.
    let third = h.login(&mut alice_key, "alice").await;
    let third_claims = h.claims(third.expect(StatusCode::OK));
    assert!(!h.gate.revocations().is_revoked(&third_claims));

    // Another site under the cookie domain tossed bob's session cookie in (sent first,
    // for a longer path): the pages see no session, and signing out revokes both.
    let bob_cookie = b.cookie(SESSION_COOKIE).unwrap();
    let third_cookie = third.cookie(SESSION_COOKIE).unwrap();
    let both = [
        (SESSION_COOKIE, bob_cookie.as_str()),
        (SESSION_COOKIE, third_cookie.as_str()),
    ];
    let a = h.get("/.keyward/devices", &both).await;
    a.expect(StatusCode::SEE_OTHER);
    h.post_form("/.keyward/logout", "", &both)
        .await
        .expect(StatusCode::SEE_OTHER);
    assert!(h.gate.revocations().is_revoked(&third_claims));
    assert!(h.gate.revocations().is_revoked(&bob_claims));
}

#[tokio::test]
async fn ceremony_starts_are_rate_limited_per_client() {
    let h = Harness::build(|_| "rate_per_ip = 3\nrate_per_user = 1000\n".into()).await;
    for _ in 0..3 {
        h.login_begin(None).await;
    }
    let a = h.post_json("/.keyward/login/begin", &json!({}), &[]).await;
    a.expect(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers.get(header::RETRY_AFTER).unwrap(), "60");
    assert!(a.error().contains("Too many attempts"), "{}", a.error());
    assert!(a.cookie(CEREMONY_COOKIE).is_none());
    let m = h.portal.metrics();
    assert_eq!(m.count("/.keyward/login/begin", "ok"), 3);
    assert_eq!(m.count("/.keyward/login/begin", "rate_limited"), 1);

    // The IdP round trip spends the same budget (each start stores a ceremony).
    h.get("/.keyward/oidc/start?rd=/", &[])
        .await
        .expect(StatusCode::TOO_MANY_REQUESTS);
    h.get("/.keyward/oidc/callback?state=x&code=y", &[])
        .await
        .expect(StatusCode::TOO_MANY_REQUESTS);

    // Another client has its own budget.
    let mut other = Harness {
        peer: "192.0.2.11:50000".parse().unwrap(),
        ..h
    };
    other.login_begin(None).await;

    // An IPv6 client's budget is its /64: a new address in it is the same client.
    other.peer = "[2001:db8:1:2::7]:50000".parse().unwrap();
    for _ in 0..3 {
        other.login_begin(None).await;
    }
    other.peer = "[2001:db8:1:2:ffff::9]:50000".parse().unwrap();
    other
        .post_json("/.keyward/login/begin", &json!({}), &[])
        .await
        .expect(StatusCode::TOO_MANY_REQUESTS);
    other.peer = "[2001:db8:1:3::7]:50000".parse().unwrap();
    other.login_begin(None).await;
}

/// The per-user budget is spent per user and client: a stranger naming someone cannot
/// lock them out, and a 429 comes the same for names that exist and names that do not.
#[tokio::test]
async fn naming_a_user_spends_only_this_clients_budget_for_them() {
    let mut h = Harness::build(|_| "rate_per_ip = 1000\nrate_per_user = 2\n".into()).await;
    h.user("alice").await;
    let begin = |name: &'static str| json!({ "username": name });
    for name in ["alice", "nobody"] {
        for _ in 0..2 {
            h.post_json("/.keyward/login/begin", &begin(name), &[])
                .await
                .expect(StatusCode::OK);
        }
        h.post_json("/.keyward/login/begin", &begin(name), &[])
            .await
            .expect(StatusCode::TOO_MANY_REQUESTS);
    }
    // alice, from her own address, is not locked out.
    h.peer = "192.0.2.77:40000".parse().unwrap();
    h.post_json("/.keyward/login/begin", &begin("alice"), &[])
        .await
        .expect(StatusCode::OK);
}

/// Adding a device with a live session needs a recent sign-in: a stolen cookie alone
/// cannot enroll the thief's authenticator.
#[tokio::test]
async fn adding_a_device_needs_a_recent_sign_in() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let now = unix_now();
    let session = |auth_age: i64| {
        let claims = Claims {
            sid: crate::random_id(),
            sub: alice.id.clone(),
            email: alice.email.clone(),
            roles: alice.roles.clone(),
            dev: Some("d_previous".into()),
            aaguid: None,
            amr: AuthMethod::Passkey,
            auth_time: now - auth_age,
            iat: now - auth_age,
            exp: now + 3600,
        };
        token::seal(&claims, &h.gate.keys().ring).unwrap()
    };
    let body = json!({ "name": "Second key", "kind": "passkey" });

    let stale = session(3600);
    let a = h
        .post_json("/.keyward/enroll/begin", &body, &[(SESSION_COOKIE, &stale)])
        .await;
    a.refused(StatusCode::UNAUTHORIZED, "sign in again");
    // The page sends the person to sign in first, and back.
    let page = h.get("/.keyward/enroll", &[(SESSION_COOKIE, &stale)]).await;
    assert!(
        page.location().starts_with("/.keyward/login?rd="),
        "{}",
        page.location()
    );

    let fresh = session(30);
    h.post_json("/.keyward/enroll/begin", &body, &[(SESSION_COOKIE, &fresh)])
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_ceremony_begun_on_one_node_finishes_on_another_once() {
    let a = Harness::new().await;
    let b = a.peer().await;
    let alice = a.user("alice").await;
    let mut key = SoftPasskey::new(true);

    let (ccr, ceremony) = a.enroll_begin(&a.invite(&alice).await, "passkey").await;
    let credential = key.do_registration(origin(), ccr).unwrap();
    b.enroll_finish(&ceremony, &credential)
        .await
        .expect(StatusCode::OK);

    let (rcr, ceremony) = b.login_begin(Some("alice")).await;
    let credential = key.do_authentication(origin(), rcr).unwrap();
    let signed_in = a.login_finish(&ceremony, &credential).await;
    assert_eq!(a.claims(signed_in.expect(StatusCode::OK)).sub, alice.id);
    // Used up on every node: the same answer again is refused on either.
    for node in [&a, &b] {
        node.login_finish(&ceremony, &credential)
            .await
            .refused(StatusCode::BAD_REQUEST, "expired or was already used");
    }
}

#[tokio::test]
async fn one_client_holds_no_more_ceremonies_on_many_nodes_than_one_node_allows() {
    // 2 starts a minute per client and node: at most 10 waiting (5 minutes' worth)
    // for one client on the whole store, however many nodes it spreads them over.
    let a = Harness::build(|_| "rate_per_ip = 2\nrate_per_user = 1000\n".into()).await;
    a.user("alice").await;
    let mut nodes = vec![a];
    for _ in 0..5 {
        let peer = nodes[0].peer().await;
        nodes.push(peer);
    }
    for node in &nodes[..5] {
        for _ in 0..2 {
            node.login_begin(Some("alice")).await;
        }
    }
    // The sixth node has started nothing for this client, yet refuses it.
    let mut last = nodes.pop().unwrap();
    last.post_json(
        "/.keyward/login/begin",
        &json!({ "username": "alice" }),
        &[],
    )
    .await
    .refused(StatusCode::TOO_MANY_REQUESTS, "Too many attempts");
    last.peer = "198.51.100.20:40000".parse().unwrap();
    last.login_begin(Some("alice")).await;
}

#[tokio::test]
async fn starting_again_drops_the_ceremony_the_browser_held() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let mut key = SoftPasskey::new(true);
    let (enrolled, _) = h.enroll(&mut key, &h.invite(&alice).await, "passkey").await;
    enrolled.expect(StatusCode::OK);

    let (rcr, first) = h.login_begin(Some("alice")).await;
    let again = h
        .post_json(
            "/.keyward/login/begin",
            &json!({ "username": "alice" }),
            &[(CEREMONY_COOKIE, &first)],
        )
        .await;
    again.expect(StatusCode::OK);
    let second = again.cookie(CEREMONY_COOKIE).unwrap();
    assert_ne!(second, first);
    let answer = key.do_authentication(origin(), rcr).unwrap();
    h.login_finish(&first, &answer)
        .await
        .refused(StatusCode::BAD_REQUEST, "expired or was already used");
    let rcr: RequestChallengeResponse = serde_json::from_slice(&again.body).unwrap();
    let answer = key.do_authentication(origin(), rcr).unwrap();
    h.login_finish(&second, &answer)
        .await
        .expect(StatusCode::OK);
}
