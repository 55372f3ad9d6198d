//! Ceremony state, kept server-side in the store: short-lived, bound to the browser by
//! a random id in an HttpOnly cookie (the store keys it by a hash of that id), single
//! use (taking it deletes it), and shared by every node on the store, so a ceremony
//! begun on one node finishes on any other.

use std::net::IpAddr;
use std::time::Duration;

use keyward_store::{CeremonyLimits, Put, Store};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AttestedPasskeyRegistration, DiscoverableAuthentication, PasskeyAuthentication,
    PasskeyRegistration,
};

/// How long a started ceremony may take to finish.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// How many ceremonies may wait at once (begun, neither finished nor expired) for
/// everyone on the store: a flood is refused past it rather than filling the store.
const MAX_TOTAL: i64 = 100_000;

/// Why a ceremony was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKept {
    /// This client has too many waiting: 429.
    TooMany,
    /// The store failed, or everyone's limit is reached: 503.
    Unavailable,
}

/// A ceremony waiting for its second half.
#[derive(Debug, Serialize, Deserialize)]
pub enum Pending {
    Enroll(Enrollment),
    SignIn(SignIn),
    /// Sent to the IdP; waiting for its callback.
    Oidc(OidcPending),
    /// The IdP vouched for this user; a passkey ceremony (sign-in or enrollment)
    /// completes it.
    Identified {
        user_id: String,
        rd: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Enrollment {
    pub user_id: String,
    pub device_name: String,
    /// The invite it consumes, by hash.
    pub invite: Option<[u8; 32]>,
    pub state: Registration,
    pub rd: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Registration {
    Passkey(PasskeyRegistration),
    /// A security key whose attestation must chain to a configured CA.
    Attested(AttestedPasskeyRegistration),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SignIn {
    pub state: Authentication,
    pub rd: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Authentication {
    /// Usernameless: the authenticator says whose credential it is.
    Discoverable(DiscoverableAuthentication),
    /// For one user's credentials (named user, or after the IdP said who it is).
    ForUser {
        user_id: String,
        state: PasskeyAuthentication,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OidcPending {
    pub pending: keyward_oidc::Pending,
    pub rd: String,
    /// Enroll a device after the IdP (rather than sign in).
    pub enroll: bool,
}

/// The pending ceremonies.
#[derive(Debug, Clone)]
pub struct Ceremonies {
    store: Store,
    limits: CeremonyLimits,
}

impl Ceremonies {
    /// Per client (as the rate limits count them: an IPv4 address or an IPv6 /64), as
    /// many may wait as `rate_per_ip` lets one node start in [`CEREMONY_TTL`]: however
    /// many nodes share the store, one client holds no more than one node would let it.
    pub fn new(store: Store, rate_per_ip: u32) -> Self {
        let minutes = CEREMONY_TTL.as_secs().div_ceil(60) as i64;
        Self {
            store,
            limits: CeremonyLimits {
                per_client: i64::from(rate_per_ip.max(1)) * minutes,
                total: MAX_TOTAL,
            },
        }
    }

    /// Keeps `pending`, begun by `client`, under a fresh random id and returns the id.
    /// `replaces` is the ceremony the browser's cookie names, if any: the new one takes
    /// its cookie, so it can no longer be finished and is dropped (a person who gave up
    /// on the authenticator's prompt and starts again holds one, not many).
    pub async fn put(
        &self,
        client: IpAddr,
        replaces: Option<&str>,
        pending: Pending,
    ) -> Result<String, NotKept> {
        if let Some(old) = replaces {
            self.take(old).await;
        }
        let id = crate::random_id();
        let body = serde_json::to_string(&pending).map_err(|err| {
            tracing::error!(%err, "cannot serialize a ceremony");
            NotKept::Unavailable
        })?;
        let now = crate::unix_now();
        let ttl = CEREMONY_TTL.as_secs() as i64;
        let client = crate::rate_key(client);
        match self
            .store
            .put_ceremony(&key(&id), &client, &body, now, now + ttl, self.limits)
            .await
        {
            Ok(Put::Kept) => Ok(id),
            Ok(Put::ClientFull) => Err(NotKept::TooMany),
            Ok(Put::Full) => {
                tracing::warn!(
                    max = MAX_TOTAL,
                    "too many ceremonies in progress; refusing new ones"
                );
                Err(NotKept::Unavailable)
            }
            Err(err) => {
                tracing::error!(%err, "store failed keeping a ceremony");
                Err(NotKept::Unavailable)
            }
        }
    }

    /// Looks at ceremony `id` without using it up.
    pub async fn peek(&self, id: &str) -> Option<Pending> {
        if id.len() > 64 {
            return None;
        }
        let found = self.store.peek_ceremony(&key(id), crate::unix_now()).await;
        decode(found)
    }

    /// Takes the ceremony `id` (it cannot be finished twice, on any node).
    pub async fn take(&self, id: &str) -> Option<Pending> {
        if id.len() > 64 {
            return None;
        }
        let found = self.store.take_ceremony(&key(id), crate::unix_now()).await;
        decode(found)
    }
}

/// The store's key for a ceremony id: whoever reads the store cannot finish it.
fn key(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

/// A ceremony that cannot be read (the store failed, or another version wrote it) is
/// treated as absent: the person is asked to start again.
fn decode(found: Result<Option<String>, keyward_store::StoreError>) -> Option<Pending> {
    match found {
        Ok(body) => serde_json::from_str(&body?)
            .inspect_err(|err| tracing::warn!(%err, "unreadable ceremony in the store"))
            .ok(),
        Err(err) => {
            tracing::error!(%err, "store failed reading a ceremony");
            None
        }
    }
}
