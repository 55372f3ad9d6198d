//! Session token tests: the round trip and every kind of hostile token, each with the
//! exact error it must produce.

use base64ct::{Base64UrlUnpadded, Encoding};
use pasetors::keys::{AsymmetricKeyPair, Generate};
use pasetors::version4::{LocalToken, PublicToken, V4};
use proptest::prelude::*;

use super::*;
use crate::testutil::{NOW, claims, ring, rng, within};

const LEEWAY: i64 = 30;

/// Splits a sealed token into (payload segment, footer segment).
fn parts(token: &str) -> (&str, &str) {
    let rest = token.strip_prefix(HEADER).expect("v4.local. header");
    rest.split_once('.').expect("a footer")
}

fn with_footer(token: &str, footer_json: &str) -> String {
    let (payload, _) = parts(token);
    let footer = Base64UrlUnpadded::encode_string(footer_json.as_bytes());
    format!("{HEADER}{payload}.{footer}")
}

/// Seals `payload` with the ring's active key, choosing footer and implicit assertion.
fn raw_seal(ring: &KeyRing, payload: &[u8], footer: &[u8], implicit: Option<&[u8]>) -> String {
    let key = ring.active_session_key().unwrap();
    LocalToken::encrypt(key.paseto_key(), payload, Some(footer), implicit).unwrap()
}

fn kid_footer(ring: &KeyRing) -> String {
    format!(r#"{{"kid":"{}"}}"#, ring.active_session_key().unwrap().id())
}

#[test]
fn seal_then_open_returns_the_claims() {
    let ring = ring(1);
    let token = seal(&claims(), &ring).unwrap();
    assert!(token.starts_with("v4.local."));
    assert!(token.len() < 600, "typical token is small: {}", token.len());
    let (_, footer) = parts(&token);
    let footer = Base64UrlUnpadded::decode_vec(footer).unwrap();
    assert_eq!(footer, kid_footer(&ring).as_bytes());
    assert_eq!(open(&token, &ring, NOW, within(LEEWAY)), Ok(claims()));
}

#[test]
fn two_seals_of_the_same_claims_differ() {
    let ring = ring(1);
    assert_ne!(
        seal(&claims(), &ring).unwrap(),
        seal(&claims(), &ring).unwrap()
    );
}

#[test]
fn truncated_tokens_are_malformed() {
    let ring = ring(1);
    let token = seal(&claims(), &ring).unwrap();
    for len in 0..token.len() {
        assert_eq!(
            open(&token[..len], &ring, NOW, within(LEEWAY)),
            Err(TokenError::Malformed),
            "truncated to {len}"
        );
    }
}

#[test]
fn unknown_kid_in_footer_is_unknown_key() {
    let ring = ring(1);
    let token = seal(&claims(), &ring).unwrap();
    let other = crate::testutil::ring(2);
    let other_kid = kid_footer(&other);
    assert_eq!(
        open(&with_footer(&token, &other_kid), &ring, NOW, within(LEEWAY)),
        Err(TokenError::UnknownKey)
    );
    let junk = r#"{"kid":"not-a-paserk-id"}"#;
    assert_eq!(
        open(&with_footer(&token, junk), &ring, NOW, within(LEEWAY)),
        Err(TokenError::UnknownKey)
    );
    // One character of our own kid changed.
    let mut kid = kid_footer(&ring).into_bytes();
    let i = kid.len() - 3;
    kid[i] = if kid[i] == b'A' { b'B' } else { b'A' };
    let kid = String::from_utf8(kid).unwrap();
    assert_eq!(
        open(&with_footer(&token, &kid), &ring, NOW, within(LEEWAY)),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn footer_not_a_kid_object_is_malformed() {
    let ring = ring(1);
    let token = seal(&claims(), &ring).unwrap();
    let kid = ring.active_session_key().unwrap().id().to_owned();
    for footer in [
        String::new(),
        "kid".to_owned(),
        format!(r#"{{"kid":"{kid}","wpk":"x"}}"#),
        format!(r#"["{kid}"]"#),
        r#"{"kid":7}"#.to_owned(),
    ] {
        let t = with_footer(&token, &footer);
        assert_eq!(
            open(&t, &ring, NOW, within(LEEWAY)),
            Err(TokenError::Malformed),
            "{footer}"
        );
    }
    let (payload, _) = parts(&token);
    let no_footer = format!("{HEADER}{payload}");
    assert_eq!(
        open(&no_footer, &ring, NOW, within(LEEWAY)),
        Err(TokenError::Malformed)
    );
}

#[test]
fn footer_swapped_from_another_token_is_invalid() {
    let mut ring = ring(1);
    let old = seal(&claims(), &ring).unwrap();
    ring.rotate_session(NOW, &mut rng(9)).unwrap();
    let new = seal(&claims(), &ring).unwrap();
    let (old_payload, old_footer) = parts(&old);
    let (new_payload, new_footer) = parts(&new);
    assert_ne!(old_footer, new_footer);
    for t in [
        format!("{HEADER}{old_payload}.{new_footer}"),
        format!("{HEADER}{new_payload}.{old_footer}"),
    ] {
        assert_eq!(
            open(&t, &ring, NOW, within(LEEWAY)),
            Err(TokenError::Invalid)
        );
    }
    assert!(
        open(&old, &ring, NOW, within(LEEWAY)).is_ok()
            && open(&new, &ring, NOW, within(LEEWAY)).is_ok()
    );
}

#[test]
fn retired_key_is_unknown_key() {
    let mut ring = ring(1);
    let old = seal(&claims(), &ring).unwrap();
    let old_id = ring.active_session_key().unwrap().id().to_owned();
    ring.rotate_session(NOW, &mut rng(9)).unwrap();
    assert_eq!(open(&old, &ring, NOW, within(LEEWAY)), Ok(claims()));
    ring.retire(&old_id, NOW).unwrap();
    assert_eq!(
        open(&old, &ring, NOW, within(LEEWAY)),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn expiry_honours_the_leeway() {
    let ring = ring(1);
    let c = claims();
    let token = seal(&c, &ring).unwrap();
    assert_eq!(open(&token, &ring, c.exp, within(LEEWAY)), Ok(c.clone()));
    assert_eq!(
        open(&token, &ring, c.exp + LEEWAY, within(LEEWAY)),
        Ok(c.clone())
    );
    let err = open(&token, &ring, c.exp + LEEWAY + 1, within(LEEWAY)).unwrap_err();
    assert_eq!(err, TokenError::Expired);
    assert!(err.is_expired());
    assert_eq!(
        open(&token, &ring, c.exp + 1, within(0)),
        Err(TokenError::Expired)
    );
    assert_eq!(
        open(&token, &ring, c.exp + 1, within(-100)),
        Err(TokenError::Expired)
    );
    assert!(!TokenError::Invalid.is_expired());
}

#[test]
fn a_session_longer_than_the_lifetime_limit_ends_at_the_limit() {
    // Sealed under a 12h limit, opened after it was lowered to 1h: revocations are
    // kept, and retired keys trusted, for 1h plus leeway, so the token ends at iat + 1h.
    let ring = ring(1);
    let c = Claims {
        iat: NOW,
        exp: NOW + 12 * 3600,
        ..claims()
    };
    let token = seal(&c, &ring).unwrap();
    let limit = Validity {
        leeway: LEEWAY,
        max_lifetime: 3600,
    };
    let opened = open(&token, &ring, NOW + 10, limit).unwrap();
    assert_eq!(opened.exp, NOW + 3600);
    assert_eq!(
        opened,
        Claims {
            exp: NOW + 3600,
            ..c.clone()
        }
    );
    assert!(open(&token, &ring, NOW + 3600 + LEEWAY, limit).is_ok());
    assert_eq!(
        open(&token, &ring, NOW + 3600 + LEEWAY + 1, limit),
        Err(TokenError::Expired)
    );
    // Within the limit, `exp` stands.
    assert_eq!(open(&token, &ring, NOW + 10, within(LEEWAY)), Ok(c));
}

#[test]
fn issued_in_the_future_is_not_yet_valid() {
    let ring = ring(1);
    let c = Claims {
        iat: NOW + 100,
        ..claims()
    };
    let token = seal(&c, &ring).unwrap();
    assert_eq!(
        open(&token, &ring, NOW, within(LEEWAY)),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(open(&token, &ring, NOW + 70, within(LEEWAY)), Ok(c.clone()));
    assert_eq!(open(&token, &ring, NOW, within(100)), Ok(c));
}

#[test]
fn expiry_before_issue_is_invalid() {
    let ring = ring(1);
    let c = Claims {
        exp: NOW - 1,
        ..claims()
    };
    let token = seal(&c, &ring).unwrap();
    assert_eq!(
        open(&token, &ring, NOW - 10, within(LEEWAY)),
        Err(TokenError::Invalid)
    );
}

#[test]
fn another_deployments_token_is_refused() {
    let ours = ring(1);
    let theirs = ring(2);
    let token = seal(&claims(), &theirs).unwrap();
    assert_eq!(
        open(&token, &ours, NOW, within(LEEWAY)),
        Err(TokenError::UnknownKey)
    );
    // Their secret, our kid in the footer.
    let key = theirs.active_session_key().unwrap();
    let payload = serde_json::to_vec(&claims()).unwrap();
    let forged = LocalToken::encrypt(
        key.paseto_key(),
        &payload,
        Some(kid_footer(&ours).as_bytes()),
        Some(IMPLICIT_ASSERTION),
    )
    .unwrap();
    assert_eq!(
        open(&forged, &ours, NOW, within(LEEWAY)),
        Err(TokenError::Invalid)
    );
}

#[test]
fn other_implicit_assertion_is_invalid() {
    let ring = ring(1);
    let payload = serde_json::to_vec(&claims()).unwrap();
    let footer = kid_footer(&ring);
    for implicit in [Some(&b"keyward-invite-v1"[..]), Some(&b""[..]), None] {
        let t = raw_seal(&ring, &payload, footer.as_bytes(), implicit);
        assert_eq!(
            open(&t, &ring, NOW, within(LEEWAY)),
            Err(TokenError::Invalid)
        );
    }
    let t = raw_seal(&ring, &payload, footer.as_bytes(), Some(IMPLICIT_ASSERTION));
    assert_eq!(open(&t, &ring, NOW, within(LEEWAY)), Ok(claims()));
}

#[test]
fn authentic_payload_that_is_not_claims_is_invalid() {
    let ring = ring(1);
    let footer = kid_footer(&ring);
    let mut extra = serde_json::to_value(claims()).unwrap();
    extra["admin"] = true.into();
    for payload in [
        b"{\"foo\":1}".to_vec(),
        b"not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        serde_json::to_vec(&extra).unwrap(),
    ] {
        let t = raw_seal(&ring, &payload, footer.as_bytes(), Some(IMPLICIT_ASSERTION));
        assert_eq!(
            open(&t, &ring, NOW, within(LEEWAY)),
            Err(TokenError::Invalid)
        );
    }
}

#[test]
fn other_versions_and_purposes_are_malformed() {
    let ring = ring(1);
    let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
    let payload = serde_json::to_vec(&claims()).unwrap();
    let footer = kid_footer(&ring);
    let public = PublicToken::sign(&pair.secret, &payload, Some(footer.as_bytes()), None).unwrap();
    assert!(public.starts_with("v4.public."));
    assert_eq!(
        open(&public, &ring, NOW, within(LEEWAY)),
        Err(TokenError::Malformed)
    );

    let token = seal(&claims(), &ring).unwrap();
    let (body, foot) = parts(&token);
    for header in [
        "v2.local.",
        "v3.local.",
        "v1.local.",
        "V4.LOCAL.",
        "v4.locals.",
    ] {
        let t = format!("{header}{body}.{foot}");
        assert_eq!(
            open(&t, &ring, NOW, within(LEEWAY)),
            Err(TokenError::Malformed),
            "{header}"
        );
    }
    assert_eq!(
        open(&format!(" {token}"), &ring, NOW, within(LEEWAY)),
        Err(TokenError::Malformed)
    );
    assert_eq!(
        open(&format!("{token}."), &ring, NOW, within(LEEWAY)),
        Err(TokenError::Malformed)
    );
}

#[test]
fn huge_input_is_malformed_without_parsing() {
    let ring = ring(1);
    let huge = format!("{HEADER}{}", "A".repeat(64 * 1024));
    assert_eq!(
        open(&huge, &ring, NOW, within(LEEWAY)),
        Err(TokenError::Malformed)
    );
    // Even authentic tokens are refused past the limit, so nothing big gets decoded.
    let sized = |n: usize| {
        let c = Claims {
            roles: vec!["r".repeat(n)],
            ..claims()
        };
        (seal(&c, &ring).unwrap(), c)
    };
    let (big, _) = sized(48 * 1024);
    assert_eq!(
        open(&big, &ring, NOW, within(LEEWAY)),
        Err(TokenError::Malformed)
    );
    let (short, _) = sized(0);
    let room = (MAX_TOKEN_LEN - short.len()) * 3 / 4;
    let (at_limit, c) = sized(room);
    assert!(at_limit.len() <= MAX_TOKEN_LEN && at_limit.len() > MAX_TOKEN_LEN - 8);
    assert_eq!(open(&at_limit, &ring, NOW, within(LEEWAY)), Ok(c));
    let (over, _) = sized(room + 6);
    assert!(over.len() > MAX_TOKEN_LEN);
    assert_eq!(
        open(&over, &ring, NOW, within(LEEWAY)),
        Err(TokenError::Malformed)
    );
}

#[test]
fn messages_carry_no_token_bytes() {
    let ring = ring(1);
    let token = seal(&claims(), &ring).unwrap();
    let (_, footer) = parts(&token);
    for bad in [&token[..token.len() - 1], &token[..40]] {
        let err = open(bad, &ring, NOW, within(LEEWAY)).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains(&token[9..30]) && !text.contains(footer),
            "{text}"
        );
    }
}

#[test]
fn session_ids_are_128_random_bits() {
    let a = new_session_id(&mut rng(1));
    let b = new_session_id(&mut rng(2));
    assert_eq!(a.len(), 22);
    assert_ne!(a, b);
    assert_eq!(Base64UrlUnpadded::decode_vec(&a).unwrap().len(), 16);
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
}

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Replace one character anywhere with another base64url character.
    #[test]
    fn one_character_changed_anywhere_is_refused(pos in any::<prop::sample::Index>(), with in 0..B64URL.len()) {
        let ring = ring(1);
        let token = seal(&claims(), &ring).unwrap();
        let i = pos.index(token.len());
        let mut bytes = token.clone().into_bytes();
        let replacement = if B64URL[with] == bytes[i] { B64URL[(with + 1) % B64URL.len()] } else { B64URL[with] };
        bytes[i] = replacement;
        let mutated = String::from_utf8(bytes).unwrap();
        let got = open(&mutated, &ring, NOW, within(LEEWAY));

        let dot = token.rfind('.').unwrap();
        if i < HEADER.len() || i == dot {
            prop_assert_eq!(got, Err(TokenError::Malformed));
        } else if i < dot {
            // The encrypted message: authentication fails; only the last character can
            // also break strict base64 (non-zero trailing bits).
            if i == dot - 1 {
                prop_assert!(matches!(got, Err(TokenError::Invalid | TokenError::Malformed)), "{:?}", got);
            } else {
                prop_assert_eq!(got, Err(TokenError::Invalid));
            }
        } else {
            // The footer: no longer our kid, or no longer a kid object.
            prop_assert!(matches!(got, Err(TokenError::UnknownKey | TokenError::Malformed)), "{:?}", got);
        }
    }

    #[test]
    fn arbitrary_strings_never_open(s in any::<String>()) {
        let ring = ring(1);
        prop_assert!(open(&s, &ring, NOW, within(LEEWAY)).is_err());
        let prefixed = format!("{HEADER}{s}");
        prop_assert!(open(&prefixed, &ring, NOW, within(LEEWAY)).is_err());
    }

    #[test]
    fn token_shaped_garbage_never_opens(body in "[A-Za-z0-9_-]{0,700}", foot in "[A-Za-z0-9_.-]{0,90}") {
        let ring = ring(1);
        let t = format!("{HEADER}{body}.{foot}");
        prop_assert!(open(&t, &ring, NOW, within(LEEWAY)).is_err());
    }

    #[test]
    fn any_claims_round_trip(sub in "\\PC{0,40}", roles in prop::collection::vec("[a-z]{1,12}", 0..5), life in 1i64..1_000_000) {
        let ring = ring(1);
        let c = Claims { sub, roles, exp: NOW + life, ..claims() };
        let token = seal(&c, &ring).unwrap();
        prop_assert_eq!(open(&token, &ring, NOW, within(0)), Ok(c));
    }
}
