//! The real clock and the operating system's random source: what callers pass into
//! this crate's pure functions. Kept here so the agent, the portal and the CLI share
//! one definition.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Fills `buf` from the operating system's random source.
pub fn os_random(buf: &mut [u8]) {
    if let Err(err) = getrandom::fill(buf) {
        // Without randomness no key, session id or challenge can be made safely.
        panic!("the operating system's random source failed: {err}");
    }
}
