//! The key ring: the session keys that seal and open session tokens and the assertion
//! keys that sign upstream JWTs, each with its life cycle.
//!
//! Per kind, exactly one key is [`KeyState::Active`] (it seals or signs). After a
//! rotation the previous active key becomes [`KeyState::Verify`]: it still opens tokens
//! (or stays in the JWKS) until everything it produced has expired, then
//! [`KeyRing::retire_expired`] moves it to [`KeyState::Retired`] and it is refused.
//!
//! A [`KeyRing`] value always holds valid key material and exactly one active key of
//! each kind: [`KeyRing::from_keys`] checks this, and every operation keeps it. All
//! operations are pure (`now` and randomness are parameters); [`file`] loads and saves.

mod error;
pub mod file;
mod keys;

use sha2::{Digest, Sha256};

pub use error::KeyRingError;
pub(crate) use keys::jwk_coordinates;
pub use keys::{AssertionKey, KeyKind, KeyState, SessionKey};

/// One line of [`KeyRing::list`]: everything about a key but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    pub kind: KeyKind,
    pub id: String,
    pub created: i64,
    pub state: KeyState,
}

/// Session keys and assertion keys; always exactly one active key of each kind.
#[derive(Debug)]
pub struct KeyRing {
    session: Vec<SessionKey>,
    assertion: Vec<AssertionKey>,
}

impl KeyRing {
    /// A new ring: one active session key and one active assertion key.
    pub fn generate(now: i64, rand: &mut impl FnMut(&mut [u8])) -> Result<Self, KeyRingError> {
        let session = vec![SessionKey::generate(now, rand)];
        let assertion = vec![AssertionKey::generate(now, rand)?];
        KeyRing::from_keys(session, assertion)
    }

    /// A ring from keys, checked: exactly one active key per kind, no duplicate ids.
    pub fn from_keys(
        session: Vec<SessionKey>,
        assertion: Vec<AssertionKey>,
    ) -> Result<Self, KeyRingError> {
        check_kind(
            KeyKind::Session,
            session.iter().map(|k| (k.id(), k.state())),
        )?;
        check_kind(
            KeyKind::Assertion,
            assertion.iter().map(|k| (k.id(), k.state())),
        )?;
        Ok(KeyRing { session, assertion })
    }

    pub fn session_keys(&self) -> &[SessionKey] {
        &self.session
    }
    pub fn assertion_keys(&self) -> &[AssertionKey] {
        &self.assertion
    }

    /// The key that seals new session tokens.
    pub fn active_session_key(&self) -> Option<&SessionKey> {
        self.session.iter().find(|k| k.state == KeyState::Active)
    }

    /// The key that signs new assertions.
    pub fn active_assertion_key(&self) -> Option<&AssertionKey> {
        self.assertion.iter().find(|k| k.state == KeyState::Active)
    }

    /// The session key with this id, if it may open tokens (active or verify-only).
    pub fn verifying_session_key(&self, id: &str) -> Option<&SessionKey> {
        self.session
            .iter()
            .find(|k| k.id == id && k.state.can_verify())
    }

    /// Whether assertions signed by the assertion key `id` are still accepted (it is
    /// active or verify-only, so the JWKS publishes it).
    pub fn publishes_assertion_key(&self, id: &str) -> bool {
        self.assertion
            .iter()
            .any(|k| k.id == id && k.state.can_verify())
    }

    /// A new active session key; the previous one becomes verify-only since `now`.
    /// Returns the new key's id.
    pub fn rotate_session(
        &mut self,
        now: i64,
        rand: &mut impl FnMut(&mut [u8]),
    ) -> Result<String, KeyRingError> {
        let new = SessionKey::generate(now, rand);
        if self.session.iter().any(|k| k.id == new.id) {
            return Err(KeyRingError::BrokenRandomSource);
        }
        let id = new.id.clone();
        demote_active(self.session.iter_mut().map(|k| &mut k.state), now);
        self.session.push(new);
        Ok(id)
    }

    /// A new active assertion key; the previous one becomes verify-only since `now`.
    /// Returns the new key's id.
    pub fn rotate_assertion(
        &mut self,
        now: i64,
        rand: &mut impl FnMut(&mut [u8]),
    ) -> Result<String, KeyRingError> {
        let new = AssertionKey::generate(now, rand)?;
        if self.assertion.iter().any(|k| k.id == new.id) {
            return Err(KeyRingError::BrokenRandomSource);
        }
        let id = new.id.clone();
        demote_active(self.assertion.iter_mut().map(|k| &mut k.state), now);
        self.assertion.push(new);
        Ok(id)
    }

    /// Retires verify-only keys whose products have all expired: session keys once
    /// `since + max_session_lifetime` has passed, assertion keys once
    /// `since + assertion_ttl` has passed. Returns the ids retired.
    ///
    /// Pass the longest session lifetime including any clock leeway used by `open`.
    pub fn retire_expired(
        &mut self,
        now: i64,
        max_session_lifetime: i64,
        assertion_ttl: i64,
    ) -> Vec<String> {
        let mut retired = Vec::new();
        let session = self.session.iter_mut().map(|k| (&k.id, &mut k.state));
        retire_older(session, now, max_session_lifetime, &mut retired);
        let assertion = self.assertion.iter_mut().map(|k| (&k.id, &mut k.state));
        retire_older(assertion, now, assertion_ttl, &mut retired);
        retired
    }

    /// Retires a verify-only key now (for example after a suspected leak). The active
    /// key cannot be retired: rotate first. Retiring a retired key changes nothing.
    pub fn retire(&mut self, id: &str, now: i64) -> Result<(), KeyRingError> {
        let state = self
            .session
            .iter_mut()
            .map(|k| (&k.id, &mut k.state))
            .chain(self.assertion.iter_mut().map(|k| (&k.id, &mut k.state)))
            .find(|(kid, _)| *kid == id)
            .map(|(_, state)| state)
            .ok_or_else(|| KeyRingError::NoSuchKey { id: id.to_owned() })?;
        match *state {
            KeyState::Active => Err(KeyRingError::RetireActive { id: id.to_owned() }),
            KeyState::Verify { .. } => {
                *state = KeyState::Retired { since: now };
                Ok(())
            }
            KeyState::Retired { .. } => Ok(()),
        }
    }

    /// Every key without its secret: session keys first, then assertion keys.
    pub fn list(&self) -> Vec<KeySummary> {
        let session = self
            .session
            .iter()
            .map(|k| (KeyKind::Session, &k.id, k.created, k.state));
        let assertion = self
            .assertion
            .iter()
            .map(|k| (KeyKind::Assertion, &k.id, k.created, k.state));
        session
            .chain(assertion)
            .map(|(kind, id, created, state)| KeySummary {
                kind,
                id: id.clone(),
                created,
                state,
            })
            .collect()
    }

    /// A fingerprint of the ring's ids, dates and states: it changes whenever a key is
    /// added, rotated or retired, and is equal on every node holding the same ring.
    pub fn generation(&self) -> u64 {
        let mut hash = Sha256::new();
        for k in self.list() {
            let (tag, since) = match k.state {
                KeyState::Active => (0u8, 0),
                KeyState::Verify { since } => (1, since),
                KeyState::Retired { since } => (2, since),
            };
            hash.update([k.kind as u8, tag]);
            hash.update((k.id.len() as u64).to_be_bytes());
            hash.update(k.id.as_bytes());
            hash.update(k.created.to_be_bytes());
            hash.update(since.to_be_bytes());
        }
        let digest = hash.finalize();
        u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 is 32 bytes"))
    }
}

fn check_kind<'a>(
    kind: KeyKind,
    keys: impl Iterator<Item = (&'a str, KeyState)> + Clone,
) -> Result<(), KeyRingError> {
    let active = keys.clone().filter(|(_, s)| *s == KeyState::Active).count();
    match active {
        0 => return Err(KeyRingError::NoActiveKey { kind }),
        1 => {}
        count => return Err(KeyRingError::SeveralActiveKeys { kind, count }),
    }
    let mut seen = std::collections::HashSet::new();
    for (id, _) in keys {
        if !seen.insert(id) {
            return Err(KeyRingError::DuplicateKey {
                kind,
                id: id.to_owned(),
            });
        }
    }
    Ok(())
}

fn demote_active<'a>(states: impl Iterator<Item = &'a mut KeyState>, now: i64) {
    for state in states.filter(|s| **s == KeyState::Active) {
        *state = KeyState::Verify { since: now };
    }
}

fn retire_older<'a>(
    keys: impl Iterator<Item = (&'a String, &'a mut KeyState)>,
    now: i64,
    lifetime: i64,
    retired: &mut Vec<String>,
) {
    for (id, state) in keys {
        if let KeyState::Verify { since } = *state
            && now > since.saturating_add(lifetime)
        {
            *state = KeyState::Retired { since: now };
            retired.push(id.clone());
        }
    }
}

#[cfg(test)]
mod tests;
