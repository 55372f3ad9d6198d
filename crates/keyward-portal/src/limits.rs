//! Ceremony rate limits: fixed one-minute windows per client address and per user,
//! in bounded memory (the least recently seen keys are dropped under a flood).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use moka::sync::Cache;

const WINDOW: Duration = Duration::from_secs(60);
const MAX_KEYS: u64 = 100_000;

/// Counts events per key per window.
#[derive(Debug)]
pub struct RateLimit {
    per_window: u32,
    windows: Cache<String, Arc<AtomicU32>>,
}

impl RateLimit {
    pub fn per_minute(limit: u32) -> Self {
        Self {
            per_window: limit,
            windows: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(WINDOW)
                .build(),
        }
    }

    /// Counts one event for `key`; false when the key is over its limit.
    pub fn allow(&self, key: &str) -> bool {
        let count = self
            .windows
            .get_with_by_ref(key, || Arc::new(AtomicU32::new(0)));
        count.fetch_add(1, Ordering::Relaxed) < self.per_window
    }

    /// Seconds a refused client should wait (the window length, an upper bound).
    pub fn retry_after(&self) -> u64 {
        WINDOW.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_own_budget() {
        let l = RateLimit::per_minute(3);
        assert!((0..3).all(|_| l.allow("a")));
        assert!(!l.allow("a"));
        assert!(l.allow("b"));
    }
}
