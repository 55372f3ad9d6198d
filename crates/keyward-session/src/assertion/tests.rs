//! Assertion tests. Every JWT is checked by independent verifiers: `jsonwebtoken`
//! (keys taken from the JWKS x/y) and RustCrypto's ECDSA verifier.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use serde_json::Value;

use super::*;
use crate::testutil::{NOW, claims, ring, rng};

const ISS: &str = "https://login.example.com";
const AUD: &str = "grafana.example.com";

fn wall_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Verifies with jsonwebtoken against the JWKS entry named by the header's kid.
fn verify(jwt: &str, jwks: &Jwks, aud: &str) -> jsonwebtoken::errors::Result<Value> {
    let kid = decode_header(jwt)?.kid.expect("kid in header");
    let Some(jwk) = jwks.keys.iter().find(|k| k.kid == kid) else {
        return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
    };
    let key = DecodingKey::from_ec_components(&jwk.x, &jwk.y)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[ISS]);
    validation.leeway = 0;
    Ok(decode::<Value>(jwt, &key, &validation)?.claims)
}

/// A session that is live on the wall clock, so jsonwebtoken's own exp check applies.
fn live_claims(now: i64) -> Claims {
    Claims {
        auth_time: now - 60,
        iat: now,
        exp: now + 3600,
        ..claims()
    }
}

#[test]
fn signed_assertion_verifies_with_the_published_key() {
    let ring = ring(1);
    let now = wall_clock();
    let signer = AssertionSigner::new(&ring).unwrap();
    let (jwt, exp) = signer.sign(&live_claims(now), AUD, ISS, 300, now).unwrap();
    assert_eq!(exp, now + 300);
    let got = verify(&jwt, &jwks(&ring), AUD).unwrap();
    let expected = serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": "user-7f3a", "email": "ada@example.com",
        "roles": ["admin", "dev"], "dev": "d-4c1e9b", "sid": "q7m2Yt0bS0W4xk1c9dZr8A",
        "amr": ["passkey"], "auth_time": now - 60, "iat": now, "exp": now + 300,
    });
    assert_eq!(got, expected);

    let header = decode_header(&jwt).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(
        header.kid.as_deref(),
        Some(ring.active_assertion_key().unwrap().id())
    );
    assert_eq!(signer.kid(), ring.active_assertion_key().unwrap().id());
}

#[test]
fn signature_verifies_with_rustcrypto_too() {
    let ring = ring(4);
    let (jwt, _) = AssertionSigner::new(&ring)
        .unwrap()
        .sign(&claims(), AUD, ISS, 60, NOW)
        .unwrap();
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    let sig = Base64UrlUnpadded::decode_vec(sig).unwrap();
    assert_eq!(sig.len(), 64, "JWS ES256 is r || s, not DER");
    let sig = Signature::from_slice(&sig).unwrap();
    let public = VerifyingKey::from(ring.active_assertion_key().unwrap().public_key());
    public.verify(input.as_bytes(), &sig).unwrap();
    let mut tampered = input.to_owned();
    tampered.push('x');
    assert!(public.verify(tampered.as_bytes(), &sig).is_err());
}

#[test]
fn wrong_audience_issuer_or_expired_assertion_is_rejected() {
    let ring = ring(1);
    let set = jwks(&ring);
    let signer = AssertionSigner::new(&ring).unwrap();
    let now = wall_clock();
    let (jwt, _) = signer.sign(&live_claims(now), AUD, ISS, 300, now).unwrap();
    assert!(verify(&jwt, &set, "other.example.com").is_err());
    let (jwt, _) = signer
        .sign(&live_claims(now), AUD, "https://evil", 300, now)
        .unwrap();
    assert!(verify(&jwt, &set, AUD).is_err());
    let past = now - 3600;
    let (jwt, _) = signer
        .sign(&live_claims(past), AUD, ISS, 300, past)
        .unwrap();
    let err = verify(&jwt, &set, AUD).unwrap_err();
    assert_eq!(
        *err.kind(),
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
}

#[test]
fn an_assertion_may_run_to_the_end_the_gate_gives() {
    let signer = AssertionSigner::new(&ring(1)).unwrap();
    let c = claims();
    let (_, exp) = signer
        .sign_until(&c, AUD, ISS, 300, c.exp + 10, c.exp + 60)
        .unwrap();
    assert_eq!(exp, c.exp + 60);
    assert_eq!(
        signer.sign_until(&c, AUD, ISS, 300, c.exp + 60, c.exp + 60),
        Err(AssertionError::SessionExpired)
    );
}

#[test]
fn assertion_never_outlives_the_session() {
    let signer = AssertionSigner::new(&ring(1)).unwrap();
    let c = claims();
    let (_, exp) = signer.sign(&c, AUD, ISS, 300, c.exp - 100).unwrap();
    assert_eq!(exp, c.exp);
    let (_, exp) = signer.sign(&c, AUD, ISS, i64::MAX, NOW).unwrap();
    assert_eq!(exp, c.exp);
    assert_eq!(
        signer.sign(&c, AUD, ISS, 300, c.exp),
        Err(AssertionError::SessionExpired)
    );
    assert_eq!(
        signer.sign(&c, AUD, ISS, 0, NOW),
        Err(AssertionError::InvalidTtl)
    );
    assert_eq!(
        signer.sign(&c, AUD, ISS, -5, NOW),
        Err(AssertionError::InvalidTtl)
    );
}

#[test]
fn optional_claims_are_left_out() {
    let ring = ring(1);
    let c = Claims {
        email: None,
        dev: None,
        roles: vec![],
        amr: crate::AuthMethod::Minted,
        ..claims()
    };
    let (jwt, _) = AssertionSigner::new(&ring)
        .unwrap()
        .sign(&c, AUD, ISS, 60, NOW)
        .unwrap();
    let body = jwt.split('.').nth(1).unwrap();
    let body: Value =
        serde_json::from_slice(&Base64UrlUnpadded::decode_vec(body).unwrap()).unwrap();
    assert!(body.get("email").is_none() && body.get("dev").is_none());
    assert_eq!(body["roles"], serde_json::json!([]));
    assert_eq!(body["amr"], serde_json::json!(["minted"]));
}

#[test]
fn jwks_lists_active_and_verify_keys_but_not_retired() {
    let mut ring = ring(1);
    let first = ring.active_assertion_key().unwrap().id().to_owned();
    let now = wall_clock();
    let (old_jwt, _) = AssertionSigner::new(&ring)
        .unwrap()
        .sign(&live_claims(now), AUD, ISS, 300, now)
        .unwrap();

    let second = ring.rotate_assertion(NOW, &mut rng(7)).unwrap();
    let set = jwks(&ring);
    let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, [first.as_str(), second.as_str()]);
    assert!(
        verify(&old_jwt, &set, AUD).is_ok(),
        "verify-only key still published"
    );
    let signer = AssertionSigner::new(&ring).unwrap();
    assert_eq!(signer.kid(), second);
    let (new_jwt, _) = signer.sign(&live_claims(now), AUD, ISS, 300, now).unwrap();
    assert!(verify(&new_jwt, &set, AUD).is_ok());

    ring.retire(&first, NOW).unwrap();
    let set = jwks(&ring);
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].kid, second);
    assert!(
        verify(&old_jwt, &set, AUD).is_err(),
        "retired key no longer verifies"
    );
}

#[test]
fn jwks_json_is_standard() {
    let ring = ring(1);
    let json = serde_json::to_value(jwks(&ring)).unwrap();
    let key = &json["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["kid"], ring.active_assertion_key().unwrap().id());
    for coordinate in ["x", "y"] {
        let bytes = Base64UrlUnpadded::decode_vec(key[coordinate].as_str().unwrap()).unwrap();
        assert_eq!(bytes.len(), 32, "{coordinate}");
    }
    assert_eq!(key.as_object().unwrap().len(), 7);
    let back: Jwks = serde_json::from_value(json).unwrap();
    assert_eq!(back, jwks(&ring));
}

#[test]
fn signer_debug_hides_the_key() {
    let ring = ring(1);
    let text = format!("{:?}", AssertionSigner::new(&ring).unwrap());
    assert!(text.contains(ring.active_assertion_key().unwrap().id()));
    assert!(!text.contains("key:"), "{text}");
}
