//! A dishonest OpenID Provider: real discovery, JWKS, token and userinfo endpoints on
//! loopback, but the ID token it returns is whatever the test scripted: wrong audience,
//! expired, signed with another key or with HS256, for another nonce. Only for the
//! negative cases; sign-ins that should work run against the real `oidc-provider`.

use keyward_session::sys::unix_now;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use base64ct::{Base64UrlUnpadded, Encoding};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// How the next ID token is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// With the key the JWKS publishes.
    Good,
    /// With another key under the published key's `kid`.
    Rogue,
    /// With a key whose `kid` is not in the JWKS.
    UnknownKid,
    /// HS256 keyed with the given client secret (what a confused RP might accept).
    Hs256,
}

/// What the token and userinfo endpoints answer next.
#[derive(Debug, Clone)]
pub struct Script {
    /// The ID token's claims, exactly.
    pub claims: Value,
    pub signing: Signing,
    /// The userinfo response; `None`: the same `sub` as the ID token, nothing else.
    pub userinfo: Option<Value>,
}

#[derive(Debug)]
struct Shared {
    issuer: String,
    client_secret: String,
    key: EcdsaKeyPair,
    rogue: EcdsaKeyPair,
    rng: SystemRandom,
    script: Mutex<Option<Script>>,
}

/// The crafted provider; its server stops when this is dropped.
#[derive(Debug)]
pub struct CraftedOp {
    pub issuer: String,
    client_id: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

const KID: &str = "crafted-es256";

impl CraftedOp {
    /// Serves discovery, JWKS, token and userinfo on 127.0.0.1. `client_secret` is
    /// only used by [`Signing::Hs256`].
    pub async fn start(client_id: &str, client_secret: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let issuer = format!("http://{}", listener.local_addr().expect("local addr"));
        let rng = SystemRandom::new();
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            client_secret: client_secret.to_owned(),
            key: new_key(&rng),
            rogue: new_key(&rng),
            rng,
            script: Mutex::new(None),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            issuer,
            client_id: client_id.to_owned(),
            shared,
            task,
        }
    }

    /// Claims an honest provider would issue now for `nonce`: this issuer, audience the
    /// client, subject `mallory`, valid for five minutes.
    pub fn honest_claims(&self, nonce: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": self.issuer, "aud": self.client_id, "sub": "mallory", "nonce": nonce,
            "iat": now, "exp": now + 300, "email": "mallory@example.test", "groups": ["admins"],
        })
    }

    /// Sets what the next token (and userinfo) requests get.
    pub fn script(&self, script: Script) {
        *self.shared.script.lock().expect("script lock") = Some(script);
    }
}

impl Drop for CraftedOp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_key(rng: &SystemRandom) -> EcdsaKeyPair {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
        .expect("generate P-256 key");
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng)
        .expect("load P-256 key")
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn json_response(v: &Value) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(CONTENT_TYPE, "application/json")], v.to_string())
}

async fn discovery(State(s): State<Arc<Shared>>) -> impl axum::response::IntoResponse {
    let i = &s.issuer;
    json_response(&json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/auth"),
        "token_endpoint": format!("{i}/token"),
        "userinfo_endpoint": format!("{i}/userinfo"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> impl axum::response::IntoResponse {
    let point = s.key.public_key().as_ref();
    json_response(&json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    }]}))
}

async fn token(State(s): State<Arc<Shared>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(script) = s.script.lock().expect("script lock").clone() else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            json_response(
                &json!({"error": "invalid_grant", "error_description": "nothing scripted"}),
            ),
        )
            .into_response();
    };
    let id_token = sign(&s, &script);
    json_response(&json!({
        "access_token": "crafted-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

async fn userinfo(State(s): State<Arc<Shared>>) -> impl axum::response::IntoResponse {
    let script = s.script.lock().expect("script lock").clone();
    let body = match script {
        Some(Script {
            userinfo: Some(u), ..
        }) => u,
        Some(Script { claims, .. }) => json!({ "sub": claims["sub"] }),
        None => json!({}),
    };
    json_response(&body)
}

fn sign(s: &Shared, script: &Script) -> String {
    let (alg, kid) = match script.signing {
        Signing::Hs256 => ("HS256", KID),
        Signing::UnknownKid => ("ES256", "not-in-jwks"),
        Signing::Good | Signing::Rogue => ("ES256", KID),
    };
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(script.claims.to_string().as_bytes())
    );
    let signature = match script.signing {
        Signing::Hs256 => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.client_secret.as_bytes());
            ring::hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
        }
        Signing::Good => s
            .key
            .sign(&s.rng, input.as_bytes())
            .expect("sign")
            .as_ref()
            .to_vec(),
        Signing::Rogue | Signing::UnknownKid => s
            .rogue
            .sign(&s.rng, input.as_bytes())
            .expect("sign")
            .as_ref()
            .to_vec(),
    };
    format!("{input}.{}", b64(&signature))
}
