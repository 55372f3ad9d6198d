//! ID tokens crafted and signed here (ES256 with `ring`), checked against a JWKS built
//! here, at a fixed `now`.

use std::str::FromStr;

use base64ct::{Base64UrlUnpadded, Encoding};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::*;

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://login.example.test/realms/main";
pub(crate) const CLIENT: &str = "keyward";
pub(crate) const NONCE: &str = "n-0123456789";
pub(crate) const ACCESS_TOKEN: &str = "at-0123456789";

/// An ES256 key of a provider, made here.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl Signer {
    pub(crate) fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            key,
            kid: kid.into(),
            rng,
        }
    }

    pub(crate) fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        })
    }

    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn jwks(signers: &[&Signer]) -> CoreJsonWebKeySet {
    serde_json::from_value(json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() }))
        .unwrap()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "alice", "nonce": NONCE,
        "iat": NOW - 5, "exp": NOW + 300,
        "email": "alice@example.test", "groups": ["eng"],
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn check(jwt: &str, keys: &CoreJsonWebKeySet) -> Result<IdTokenClaims, Rejected> {
    let token = IdToken::from_str(jwt).expect("well-formed JWT");
    let client_id = ClientId::new(CLIENT.into());
    let issuer = IssuerUrl::new(ISSUER.into()).unwrap();
    let nonce = Nonce::new(NONCE.into());
    let access_token = AccessToken::new(ACCESS_TOKEN.into());
    let expected = Expected {
        client_id: &client_id,
        issuer: &issuer,
        nonce: &nonce,
        access_token: &access_token,
        now: NOW,
    };
    verify_id_token(&token, keys, &expected)
}

fn reason(r: Result<IdTokenClaims, Rejected>) -> String {
    match r {
        Err(Rejected::Invalid(why)) => why,
        Err(Rejected::UnknownKey) => "unknown key".into(),
        Ok(_) => panic!("accepted a token that should be rejected"),
    }
}

#[test]
fn a_good_token_passes_and_keeps_extra_claims() {
    let s = Signer::new("k1");
    let c = check(&s.sign(&claims()), &jwks(&[&s])).expect("valid token");
    assert_eq!(c.subject().as_str(), "alice");
    assert_eq!(c.additional_claims().claims["groups"], json!(["eng"]));
}

#[test]
fn expiry_with_leeway() {
    let s = Signer::new("k1");
    let keys = jwks(&[&s]);
    let within = with(claims(), "exp", json!(NOW - LEEWAY_SECS + 5));
    assert!(check(&s.sign(&within), &keys).is_ok());
    let expired = with(claims(), "exp", json!(NOW - LEEWAY_SECS - 1));
    assert!(reason(check(&s.sign(&expired), &keys)).contains("expired"));
    let future = with(claims(), "iat", json!(NOW + LEEWAY_SECS + 60));
    assert!(reason(check(&s.sign(&future), &keys)).contains("future"));
}

#[test]
fn audience_issuer_and_azp() {
    let s = Signer::new("k1");
    let keys = jwks(&[&s]);
    let other = with(claims(), "aud", json!("someone-else"));
    assert!(reason(check(&s.sign(&other), &keys)).contains("wrong audience"));
    let extra = with(claims(), "aud", json!([CLIENT, "untrusted"]));
    assert!(reason(check(&s.sign(&extra), &keys)).contains("wrong audience"));
    let azp = with(claims(), "azp", json!("someone-else"));
    assert!(reason(check(&s.sign(&azp), &keys)).contains("azp"));
    let azp_ok = with(claims(), "azp", json!(CLIENT));
    assert!(check(&s.sign(&azp_ok), &keys).is_ok());
    let iss = with(claims(), "iss", json!("https://evil.example.test"));
    assert!(reason(check(&s.sign(&iss), &keys)).contains("wrong issuer"));
}

#[test]
fn nonce_must_match() {
    let s = Signer::new("k1");
    let keys = jwks(&[&s]);
    let wrong = with(claims(), "nonce", json!("another"));
    assert!(reason(check(&s.sign(&wrong), &keys)).contains("nonce mismatch"));
    let mut missing = claims();
    missing.as_object_mut().unwrap().remove("nonce");
    assert!(reason(check(&s.sign(&missing), &keys)).contains("nonce"));
}

#[test]
fn signatures_keys_and_algorithms() {
    let good = Signer::new("k1");
    let rogue = Signer::new("k1");
    let keys = jwks(&[&good]);
    assert!(reason(check(&rogue.sign(&claims()), &keys)).contains("bad signature"));
    let stranger = Signer::new("k2");
    assert_eq!(
        reason(check(&stranger.sign(&claims()), &keys)),
        "unknown key"
    );

    // HS256 with a key anyone could guess, and `none`: refused before any key lookup.
    let payload = b64(claims().to_string().as_bytes());
    let hs_header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let input = format!("{hs_header}.{payload}");
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, CLIENT.as_bytes()),
        input.as_bytes(),
    );
    let hs = format!("{input}.{}", b64(mac.as_ref()));
    assert!(reason(check(&hs, &keys)).contains("bad signature"));
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none"}"#));
    assert!(check(&none, &keys).is_err());
}

#[test]
fn at_hash_is_checked_when_present() {
    let s = Signer::new("k1");
    let keys = jwks(&[&s]);
    let digest = ring::digest::digest(&ring::digest::SHA256, ACCESS_TOKEN.as_bytes());
    let right = b64(&digest.as_ref()[..16]);
    assert!(check(&s.sign(&with(claims(), "at_hash", json!(right))), &keys).is_ok());
    let wrong = with(claims(), "at_hash", json!("AAAAAAAAAAAAAAAAAAAAAA"));
    assert!(reason(check(&s.sign(&wrong), &keys)).contains("at_hash"));
}
