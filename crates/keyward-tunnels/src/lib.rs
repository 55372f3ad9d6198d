//! Ends the tunnels of sessions that may no longer pass.
//!
//! A WebSocket (or any upgraded connection) is decided once, at its handshake; after
//! the `101` HAProxy only moves bytes and asks keyward nothing. The gate remembers each
//! tunnel it allowed with a session ([`keyward_gate::tunnels`]); the [`Reaper`] checks
//! them every `tunnels.check_interval` against the revocations, the session's expiry
//! and the key ring, and ends those that are due through HAProxy's runtime API
//! (`shutdown session`), after confirming with `show sess <ptr>` that the stream is
//! still the one the gate saw (its `id=` and client address).
//!
//! - [`sess`]: reading `show sess` answers (no IO, property-tested);
//! - [`api`]: the runtime API client (interactive: one connection a pass, every command
//!   bounded in time and size, answers checked);
//! - [`reaper`]: the loop.

pub mod api;
pub mod reaper;
pub mod sess;

pub use api::{Api, ApiError};
pub use reaper::{Reaper, TunnelMetrics};
