//! Revocations: written to the store, then applied to this agent's gate at once;
//! other agents read them from the store (poll).

use std::sync::Arc;

use keyward_gate::Gate;
use keyward_store::{Kind, Revocation, Store, StoreError};
use tokio::sync::Mutex;

/// How long reading the revocation log may take before the attempt counts as failed.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads new revocations from the store into the gate. Shared by the poller, the
/// on-demand refresh the CLI triggers, and the portal's sign-outs.
#[derive(Debug)]
pub struct Revoker {
    pub store: Store,
    pub gate: Arc<Gate>,
    /// Seconds after which a revocation can no longer match a valid token.
    pub horizon: i64,
    lock: Mutex<()>,
}

impl Revoker {
    pub fn new(store: Store, gate: Arc<Gate>, horizon: i64) -> Self {
        Self {
            store,
            gate,
            horizon,
            lock: Mutex::new(()),
        }
    }

    /// Applies what the store has that the gate has not seen. Returns the number of new
    /// entries.
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let _one_at_a_time = self.lock.lock().await;
        let now = crate::unix_now();
        let current = self.gate.revocations();
        // A store that stops answering (a network that drops packets) must not hold
        // the lock, and with it every later refresh and sign-out, for good.
        let new = tokio::time::timeout(
            READ_TIMEOUT,
            self.store.revocations_since(current.last_id(), now),
        )
        .await
        .map_err(|_| StoreError::Timeout(READ_TIMEOUT))??;
        // What was read is in force before the read counts as fresh
        // (`store.revocations_max_age`).
        if !new.is_empty() {
            let mut next = (*current).clone();
            next.apply(&new);
            next.forget_before(now - self.horizon);
            self.gate.set_revocations(next);
        }
        self.gate.revocations_read(now);
        Ok(new.len())
    }

    /// Revokes `subject` from now on, here at once and on other agents at their next
    /// poll.
    pub async fn revoke(&self, kind: Kind, subject: &str) -> Result<Revocation, StoreError> {
        let now = crate::unix_now();
        let r = self
            .store
            .revoke(kind, subject, now, now + self.horizon)
            .await?;
        self.refresh().await?;
        Ok(r)
    }
}
