//! Key-ring life cycle tests: generate, rotate, retire, validation, redaction.

use base64ct::{Base64UrlUnpadded, Encoding};
use pasetors::paserk::FormatAsPaserk;

use super::*;
use crate::testutil::{NOW, claims, ring, rng, within};
use crate::token::{TokenError, open, seal};

const DAY: i64 = 86_400;

#[test]
fn generate_makes_one_active_key_of_each_kind() {
    let ring = ring(1);
    let list = ring.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].kind, KeyKind::Session);
    assert_eq!(list[1].kind, KeyKind::Assertion);
    assert!(
        list.iter()
            .all(|k| k.state == KeyState::Active && k.created == NOW)
    );
    let session = ring.active_session_key().unwrap();
    assert!(session.id().starts_with("k4.lid.") && session.id().len() == 7 + 44);
    let assertion = ring.active_assertion_key().unwrap();
    assert_eq!(assertion.id().len(), 43, "base64url SHA-256 thumbprint");
}

#[test]
fn ids_follow_the_key_material() {
    // Same randomness, same keys, same ids; other randomness, other ids.
    assert_eq!(ring(1).list(), ring(1).list());
    let (a, b) = (ring(1), ring(2));
    assert_ne!(
        a.active_session_key().unwrap().id(),
        b.active_session_key().unwrap().id()
    );
    assert_ne!(
        a.active_assertion_key().unwrap().id(),
        b.active_assertion_key().unwrap().id()
    );
}

#[test]
fn thumbprint_matches_rfc_7638_by_hand() {
    let ring = ring(3);
    let key = ring.active_assertion_key().unwrap();
    let (x, y) = jwk_coordinates(&key.public_key());
    let json = serde_json::json!({"crv": "P-256", "kty": "EC", "x": x, "y": y});
    // serde_json sorts object keys, which is the RFC 7638 member order here.
    let canonical = serde_json::to_string(&json).unwrap();
    let expected = Base64UrlUnpadded::encode_string(&Sha256::digest(canonical.as_bytes()));
    assert_eq!(key.id(), expected);
}

#[test]
fn rotation_keeps_old_tokens_valid_and_seals_with_the_new_key() {
    let mut ring = ring(1);
    let old_id = ring.active_session_key().unwrap().id().to_owned();
    let old = seal(&claims(), &ring).unwrap();
    let new_id = ring.rotate_session(NOW + 10, &mut rng(7)).unwrap();
    assert_ne!(new_id, old_id);
    assert_eq!(ring.active_session_key().unwrap().id(), new_id);
    let old_key = ring
        .session_keys()
        .iter()
        .find(|k| k.id() == old_id)
        .unwrap();
    assert_eq!(old_key.state(), KeyState::Verify { since: NOW + 10 });
    assert_eq!(open(&old, &ring, NOW + 20, within(0)), Ok(claims()));
    let new = seal(&claims(), &ring).unwrap();
    assert_ne!(
        new[new.rfind('.').unwrap()..],
        old[old.rfind('.').unwrap()..]
    );
    assert_eq!(open(&new, &ring, NOW + 20, within(0)), Ok(claims()));
    // A second rotation leaves the first verify key as it was.
    ring.rotate_session(NOW + 30, &mut rng(8)).unwrap();
    let states: Vec<_> = ring.session_keys().iter().map(|k| k.state()).collect();
    assert_eq!(
        states,
        [
            KeyState::Verify { since: NOW + 10 },
            KeyState::Verify { since: NOW + 30 },
            KeyState::Active
        ]
    );
}

#[test]
fn retire_expired_waits_for_the_longest_session() {
    let mut ring = ring(1);
    let old = seal(&claims(), &ring).unwrap();
    ring.rotate_session(NOW, &mut rng(7)).unwrap();
    ring.rotate_assertion(NOW, &mut rng(8)).unwrap();
    let lifetime = DAY;
    let ttl = 300;
    assert!(ring.retire_expired(NOW + ttl, lifetime, ttl).is_empty());
    let retired = ring.retire_expired(NOW + ttl + 1, lifetime, ttl);
    assert_eq!(retired.len(), 1, "the assertion key goes first");
    assert!(
        ring.retire_expired(NOW + lifetime, lifetime, ttl)
            .is_empty()
    );
    assert_eq!(open(&old, &ring, NOW + 60, within(0)), Ok(claims()));
    let retired = ring.retire_expired(NOW + lifetime + 1, lifetime, ttl);
    assert_eq!(retired.len(), 1);
    assert_eq!(
        ring.session_keys()[0].state(),
        KeyState::Retired {
            since: NOW + lifetime + 1
        }
    );
    assert_eq!(
        open(&old, &ring, NOW + 60, within(0)),
        Err(TokenError::UnknownKey)
    );
    // Active keys are never retired by time.
    assert!(ring.retire_expired(i64::MAX, 0, 0).is_empty());
    assert!(ring.active_session_key().is_some() && ring.active_assertion_key().is_some());
}

#[test]
fn explicit_retire() {
    let mut ring = ring(1);
    let old = ring.active_session_key().unwrap().id().to_owned();
    let err = ring.retire(&old, NOW).unwrap_err();
    assert!(matches!(err, KeyRingError::RetireActive { .. }), "{err}");
    assert!(err.to_string().contains("keyward keys rotate"));
    let err = ring.retire("k4.lid.nope", NOW).unwrap_err();
    assert!(matches!(err, KeyRingError::NoSuchKey { .. }), "{err}");
    ring.rotate_session(NOW, &mut rng(7)).unwrap();
    ring.retire(&old, NOW + 5).unwrap();
    let state = |r: &KeyRing| r.session_keys()[0].state();
    assert_eq!(state(&ring), KeyState::Retired { since: NOW + 5 });
    ring.retire(&old, NOW + 9).unwrap();
    assert_eq!(
        state(&ring),
        KeyState::Retired { since: NOW + 5 },
        "idempotent"
    );
    // Assertion keys too.
    let first = ring.active_assertion_key().unwrap().id().to_owned();
    ring.rotate_assertion(NOW, &mut rng(8)).unwrap();
    ring.retire(&first, NOW).unwrap();
    assert_eq!(
        ring.assertion_keys()[0].state(),
        KeyState::Retired { since: NOW }
    );
}

#[test]
fn generation_changes_with_every_change() {
    let mut ring = ring(1);
    let mut seen = vec![ring.generation()];
    let old = ring.active_session_key().unwrap().id().to_owned();
    ring.rotate_session(NOW, &mut rng(7)).unwrap();
    seen.push(ring.generation());
    ring.rotate_assertion(NOW, &mut rng(8)).unwrap();
    seen.push(ring.generation());
    ring.retire(&old, NOW).unwrap();
    seen.push(ring.generation());
    ring.retire(&old, NOW).unwrap(); // no change
    assert_eq!(ring.generation(), *seen.last().unwrap());
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "{seen:?}");
    assert_eq!(crate::testutil::ring(1).generation(), seen[0]);
}

#[test]
fn from_keys_enforces_exactly_one_active_and_unique_ids() {
    let s = |n: u8, state| SessionKey::from_secret(&[n; 32], NOW, state);
    let a = || ring(1).active_assertion_key().unwrap().clone();
    let verify = KeyState::Verify { since: NOW };

    let err = KeyRing::from_keys(
        vec![s(1, KeyState::Active), s(2, KeyState::Active)],
        vec![a()],
    );
    assert!(matches!(
        err,
        Err(KeyRingError::SeveralActiveKeys {
            kind: KeyKind::Session,
            count: 2
        })
    ));
    let err = KeyRing::from_keys(vec![s(1, verify)], vec![a()]);
    assert!(matches!(
        err,
        Err(KeyRingError::NoActiveKey {
            kind: KeyKind::Session
        })
    ));
    let err = KeyRing::from_keys(vec![s(1, KeyState::Active), s(1, verify)], vec![a()]);
    assert!(matches!(
        err,
        Err(KeyRingError::DuplicateKey {
            kind: KeyKind::Session,
            ..
        })
    ));
    let err = KeyRing::from_keys(vec![s(1, KeyState::Active)], vec![]);
    assert!(matches!(
        err,
        Err(KeyRingError::NoActiveKey {
            kind: KeyKind::Assertion
        })
    ));
    let err = KeyRing::from_keys(vec![s(1, KeyState::Active)], vec![a(), a()]);
    assert!(matches!(
        err,
        Err(KeyRingError::SeveralActiveKeys {
            kind: KeyKind::Assertion,
            ..
        })
    ));
    assert!(KeyRing::from_keys(vec![s(1, KeyState::Active), s(2, verify)], vec![a()]).is_ok());
}

#[test]
fn a_broken_random_source_is_reported() {
    let mut zeros = |b: &mut [u8]| b.fill(0);
    // An all-zero scalar is not a P-256 key.
    assert!(matches!(
        KeyRing::generate(NOW, &mut zeros),
        Err(KeyRingError::BrokenRandomSource)
    ));
    let mut ring = ring(1);
    let mut constant = |b: &mut [u8]| b.fill(7);
    ring.rotate_session(NOW, &mut constant).unwrap();
    let before = ring.generation();
    assert!(matches!(
        ring.rotate_session(NOW, &mut constant),
        Err(KeyRingError::BrokenRandomSource)
    ));
    assert_eq!(
        ring.generation(),
        before,
        "a failed rotation changes nothing"
    );
    assert!(ring.active_session_key().is_some());
}

#[test]
fn debug_output_redacts_secrets() {
    let ring = ring(1);
    let text = format!("{ring:?}");
    let mut paserk = String::new();
    ring.active_session_key()
        .unwrap()
        .paseto_key()
        .fmt(&mut paserk)
        .unwrap();
    let secret_b64 = paserk.strip_prefix("k4.local.").unwrap();
    assert!(!text.contains(secret_b64), "{text}");
    let session = ring
        .active_session_key()
        .unwrap()
        .paseto_key()
        .as_bytes()
        .to_vec();
    let scalar = ring
        .active_assertion_key()
        .unwrap()
        .secret_key()
        .to_bytes()
        .to_vec();
    for secret in [session, scalar] {
        let list = format!("{secret:?}");
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !text.contains(&list[1..30]) && !text.contains(&hex[..16]),
            "{text}"
        );
    }
    assert!(text.contains("<redacted>") && text.contains(ring.active_session_key().unwrap().id()));
}

#[test]
fn pkcs8_round_trip_keeps_the_id() {
    let ring = ring(1);
    let key = ring.active_assertion_key().unwrap();
    let back = AssertionKey::from_pkcs8_der(&key.to_pkcs8_der(), 5, KeyState::Active).unwrap();
    assert_eq!(back.id(), key.id());
    assert!(AssertionKey::from_pkcs8_der(b"not der", 5, KeyState::Active).is_none());
}
