//! The keys in a ring: [`SessionKey`] (PASETO v4.local) and [`AssertionKey`] (ES256),
//! their life-cycle [`KeyState`], and how their ids are derived from the key material
//! (PASERK local id; RFC 7638 JWK thumbprint). Debug output never shows a secret.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use p256::elliptic_curve::point::AffineCoordinates;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use pasetors::keys::SymmetricKey;
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::version4::V4;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::KeyRingError;

/// Where a key is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Seals new session tokens / signs new assertions. One per kind.
    Active,
    /// Verify-only since `since` (unix seconds): opens tokens, stays in the JWKS.
    Verify { since: i64 },
    /// Refused since `since`: tokens naming it fail with `UnknownKey`; not in the JWKS.
    Retired { since: i64 },
}

impl KeyState {
    /// `active`, `verify` or `retired`: the word used in the key-ring file.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Verify { .. } => "verify",
            KeyState::Retired { .. } => "retired",
        }
    }

    /// Whether tokens/assertions produced by a key in this state are still accepted.
    pub fn can_verify(&self) -> bool {
        matches!(self, KeyState::Active | KeyState::Verify { .. })
    }
}

/// The two kinds of key in a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Symmetric PASETO v4.local key for session tokens.
    Session,
    /// ES256 (P-256) key for upstream assertions.
    Assertion,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Session => "session",
            KeyKind::Assertion => "assertion",
        })
    }
}

/// A PASETO v4.local key. Its id is the PASERK local id (`k4.lid.…`) of the secret.
pub struct SessionKey {
    pub(super) id: String,
    pub(super) key: SymmetricKey<V4>,
    pub(super) created: i64,
    pub(super) state: KeyState,
}

impl SessionKey {
    /// A key from its 32-byte secret; the id is computed from it.
    pub fn from_secret(secret: &[u8; 32], created: i64, state: KeyState) -> SessionKey {
        let key = SymmetricKey::<V4>::from(secret).expect("32 bytes is the v4.local key size");
        SessionKey::from_paseto_key(key, created, state)
    }

    pub(crate) fn from_paseto_key(key: SymmetricKey<V4>, created: i64, state: KeyState) -> Self {
        let mut id = String::new();
        Id::from(&key)
            .fmt(&mut id)
            .expect("writing to a String cannot fail");
        SessionKey {
            id,
            key,
            created,
            state,
        }
    }

    pub(super) fn generate(created: i64, rand: &mut impl FnMut(&mut [u8])) -> SessionKey {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand(&mut secret[..]);
        SessionKey::from_secret(&secret, created, KeyState::Active)
    }

    /// PASERK local id, `k4.lid.` + 44 characters. Not secret.
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn created(&self) -> i64 {
        self.created
    }
    pub fn state(&self) -> KeyState {
        self.state
    }
    pub(crate) fn paseto_key(&self) -> &SymmetricKey<V4> {
        &self.key
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("state", &self.state)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// An ES256 (P-256) signing key. Its id is the RFC 7638 JWK thumbprint of the public key.
#[derive(Clone)]
pub struct AssertionKey {
    pub(super) id: String,
    pub(super) secret: p256::SecretKey,
    pub(super) created: i64,
    pub(super) state: KeyState,
}

impl AssertionKey {
    /// A key from a P-256 secret key; the id is computed from its public key.
    pub fn from_secret_key(secret: p256::SecretKey, created: i64, state: KeyState) -> Self {
        let id = jwk_thumbprint(&secret.public_key());
        AssertionKey {
            id,
            secret,
            created,
            state,
        }
    }

    /// A key from PKCS#8 DER (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    pub fn from_pkcs8_der(der: &[u8], created: i64, state: KeyState) -> Option<Self> {
        let secret = p256::SecretKey::from_pkcs8_der(der).ok()?;
        Some(AssertionKey::from_secret_key(secret, created, state))
    }

    /// PKCS#8 DER of the private key (zeroized on drop).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let doc = self
            .secret
            .to_pkcs8_der()
            .expect("encoding a valid P-256 key as PKCS#8 cannot fail");
        Zeroizing::new(doc.as_bytes().to_vec())
    }

    pub(super) fn generate(
        created: i64,
        rand: &mut impl FnMut(&mut [u8]),
    ) -> Result<Self, KeyRingError> {
        // Rejection sampling: a uniformly random 32-byte string is a valid scalar
        // (non-zero, below the group order) with probability 1 - 2^-32.
        for _ in 0..16 {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand(&mut bytes[..]);
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes[..]) {
                return Ok(AssertionKey::from_secret_key(
                    secret,
                    created,
                    KeyState::Active,
                ));
            }
        }
        Err(KeyRingError::BrokenRandomSource)
    }

    /// `kid` in JWT headers and the JWKS.
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn created(&self) -> i64 {
        self.created
    }
    pub fn state(&self) -> KeyState {
        self.state
    }
    pub fn public_key(&self) -> p256::PublicKey {
        self.secret.public_key()
    }
    #[cfg(test)]
    pub(crate) fn secret_key(&self) -> &p256::SecretKey {
        &self.secret
    }
}

impl fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("state", &self.state)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// JWK `x` and `y` (base64url) of a P-256 public key.
pub(crate) fn jwk_coordinates(public: &p256::PublicKey) -> (String, String) {
    let point = public.as_affine();
    (
        Base64UrlUnpadded::encode_string(point.x().as_ref()),
        Base64UrlUnpadded::encode_string(point.y().as_ref()),
    )
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
fn jwk_thumbprint(public: &p256::PublicKey) -> String {
    let (x, y) = jwk_coordinates(public);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    Base64UrlUnpadded::encode_string(&Sha256::digest(canonical.as_bytes()))
}
