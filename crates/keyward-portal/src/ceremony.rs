//! Ceremony state, kept server-side: short-lived, bound to the browser by a random id
//! in an HttpOnly cookie, and single use (taking it removes it).

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use webauthn_rs::prelude::{
    AttestedPasskeyRegistration, DiscoverableAuthentication, PasskeyAuthentication,
    PasskeyRegistration,
};

/// How long a started ceremony may take to finish.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// What the pending ceremonies may hold, in (estimated) bytes: ~16,000 ceremonies
/// with long return URLs, ~30,000 typical ones.
const MAX_PENDING_BYTES: u64 = 64 << 20;

/// A ceremony waiting for its second half.
#[derive(Debug)]
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

#[derive(Debug)]
pub struct Enrollment {
    pub user_id: String,
    pub device_name: String,
    /// The invite it consumes, by hash.
    pub invite: Option<[u8; 32]>,
    pub state: Registration,
    pub rd: String,
}

#[derive(Debug)]
pub enum Registration {
    Passkey(PasskeyRegistration),
    /// A security key whose attestation must chain to a configured CA.
    Attested(AttestedPasskeyRegistration),
}

#[derive(Debug)]
pub struct SignIn {
    pub state: Authentication,
    pub rd: String,
}

#[derive(Debug)]
pub enum Authentication {
    /// Usernameless: the authenticator says whose credential it is.
    Discoverable(DiscoverableAuthentication),
    /// For one user's credentials (named user, or after the IdP said who it is).
    ForUser {
        user_id: String,
        state: PasskeyAuthentication,
    },
}

#[derive(Debug)]
pub struct OidcPending {
    pub pending: keyward_oidc::Pending,
    pub rd: String,
    /// Enroll a device after the IdP (rather than sign in).
    pub enroll: bool,
}

impl Pending {
    /// Roughly what it holds in memory: WebAuthn state (a challenge, and for a named
    /// user their credentials) is ~1-2 KiB; the return URL is up to 4 KiB.
    fn estimated_size(&self) -> usize {
        const STATE: usize = 2048;
        STATE
            + match self {
                Pending::Enroll(e) => e.rd.len() + e.device_name.len() + e.user_id.len(),
                Pending::SignIn(s) => s.rd.len(),
                Pending::Oidc(o) => o.rd.len(),
                Pending::Identified { user_id, rd } => user_id.len() + rd.len(),
            }
    }
}

/// The pending ceremonies.
#[derive(Debug)]
pub struct Ceremonies {
    pending: Cache<String, Arc<Pending>>,
}

impl Default for Ceremonies {
    fn default() -> Self {
        Self {
            pending: Cache::builder()
                .weigher(|id: &String, p: &Arc<Pending>| {
                    u32::try_from(id.len() + p.estimated_size()).unwrap_or(u32::MAX)
                })
                .max_capacity(MAX_PENDING_BYTES)
                .time_to_live(CEREMONY_TTL)
                .build(),
        }
    }
}

impl Ceremonies {
    /// Stores `pending` under a fresh random id and returns the id.
    pub fn put(&self, pending: Pending) -> String {
        let id = crate::random_id();
        self.pending.insert(id.clone(), Arc::new(pending));
        id
    }

    /// Looks at ceremony `id` without using it up.
    pub fn peek(&self, id: &str) -> Option<Arc<Pending>> {
        if id.len() > 64 {
            return None;
        }
        self.pending.get(id)
    }

    /// Takes the ceremony `id` (it cannot be finished twice).
    pub fn take(&self, id: &str) -> Option<Arc<Pending>> {
        if id.len() > 64 {
            return None;
        }
        self.pending.remove(id)
    }
}
