//! The provider's JWKS over real HTTP (a loopback server here): a withdrawn key stops
//! verifying once the cache is due, and a due cache that cannot be fetched verifies
//! nothing.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use openidconnect::AccessToken;

use super::*;
use crate::verify::tests::{ACCESS_TOKEN, CLIENT, NONCE, Signer};

/// Serves the discovery document and, at `/jwks`, whatever `jwks` holds (503 when
/// `None`), counting the JWKS requests in `fetches`.
async fn provider(jwks: Arc<Mutex<Option<Value>>>, fetches: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    });
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (discovery, jwks, fetches) = (discovery.clone(), jwks.clone(), fetches.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut len = 0;
                while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                    match conn.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => len += n,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..len]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let body = match path {
                    "/.well-known/openid-configuration" => Some(discovery.to_string()),
                    "/jwks" => {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        jwks.lock().unwrap().as_ref().map(Value::to_string)
                    }
                    _ => None,
                };
                let reply = match body {
                    Some(b) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                        b.len()
                    ),
                    None => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                };
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    issuer
}

fn keys(signers: &[&Signer]) -> Option<Value> {
    Some(json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() }))
}

async fn verify(p: &Provider, issuer: &str, signer: &Signer) -> Result<(), String> {
    let now = unix_now();
    let jwt = signer.sign(&json!({
        "iss": issuer, "aud": CLIENT, "sub": "alice", "nonce": NONCE,
        "iat": now - 5, "exp": now + 300,
    }));
    let token = verify::IdToken::from_str(&jwt).unwrap();
    let (client_id, issuer) = (
        ClientId::new(CLIENT.into()),
        IssuerUrl::new(issuer.into()).unwrap(),
    );
    let (nonce, access_token) = (
        Nonce::new(NONCE.into()),
        AccessToken::new(ACCESS_TOKEN.into()),
    );
    let expected = Expected {
        client_id: &client_id,
        issuer: &issuer,
        nonce: &nonce,
        access_token: &access_token,
        now,
    };
    p.verify(&token, &expected)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_withdrawn_key_stops_verifying_and_a_due_jwks_must_be_fetched() {
    const MAX_AGE: Duration = Duration::from_millis(300);
    let (old, new) = (Signer::new("k-old"), Signer::new("k-new"));
    let jwks = Arc::new(Mutex::new(keys(&[&old])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let issuer = provider(jwks.clone(), fetches.clone()).await;
    let cfg: OidcConfig = serde_json::from_value(json!({
        "issuer": issuer,
        "client_id": CLIENT,
        "redirect_url": "http://127.0.0.1:9180/.keyward/oidc/callback",
    }))
    .unwrap();
    let p = Provider::discover_with(&cfg, MAX_AGE).await.unwrap();
    verify(&p, &issuer, &old).await.unwrap();

    // The provider withdraws the old key. Until the cache is due, it still verifies
    // (that window is JWKS_MAX_AGE in production); then it does not.
    *jwks.lock().unwrap() = keys(&[&new]);
    verify(&p, &issuer, &old).await.unwrap();
    tokio::time::sleep(MAX_AGE + Duration::from_millis(50)).await;
    let err = verify(&p, &issuer, &old).await.unwrap_err();
    assert!(err.contains("no key in the provider's JWKS"), "{err}");
    verify(&p, &issuer, &new).await.unwrap();

    // Due, and the JWKS cannot be fetched: nothing verifies, not even the key held.
    *jwks.lock().unwrap() = None;
    tokio::time::sleep(MAX_AGE + Duration::from_millis(50)).await;
    let err = verify(&p, &issuer, &new).await.unwrap_err();
    assert!(err.contains("due to be fetched again"), "{err}");
    *jwks.lock().unwrap() = keys(&[&new]);
    verify(&p, &issuer, &new).await.unwrap();

    // Many sign-ins find the cache due at once: one fetch serves them all.
    tokio::time::sleep(MAX_AGE + Duration::from_millis(50)).await;
    let before = fetches.load(Ordering::SeqCst);
    let all = (0..8).map(|_| verify(&p, &issuer, &new));
    for r in futures_util::future::join_all(all).await {
        r.unwrap();
    }
    assert_eq!(fetches.load(Ordering::SeqCst) - before, 1);
}
