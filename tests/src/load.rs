//! Client load for the fault and hardening tests: workers that loop over requests
//! through HAProxy until told to stop, and tallies of what they saw.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::http::get;

#[derive(Debug, Default)]
pub struct Tally {
    pub allowed: AtomicUsize,
    pub refused: AtomicUsize,
    /// 200s whose identity was not the one the agent set for that request.
    pub wrong: AtomicUsize,
}

/// `workers` clients looping over `/allow/w<i>-<n>` (the `test-agent` allows them with
/// user `w<i>-<n>`) until `stop`.
pub fn load(
    addr: SocketAddr,
    workers: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (stop, tally) = (stop.clone(), tally.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let user = format!("w{w}-{n}");
                    match get(addr, &format!("/allow/{user}"), &[]).await {
                        Ok(r) if r.status == 200 => {
                            tally.allowed.fetch_add(1, Ordering::SeqCst);
                            if !r.body.contains(&format!("x-keyward-user: {user}\n")) {
                                tally.wrong.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        _ => {
                            tally.refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect()
}

/// `workers` tasks each calling `step(worker, n)` for n = 1, 2, ... until `stop`.
pub fn spawn_workers<F, Fut>(workers: usize, stop: Arc<AtomicBool>, step: F) -> Vec<JoinHandle<()>>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let step = Arc::new(step);
    (0..workers)
        .map(|w| {
            let (stop, step) = (stop.clone(), step.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    step(w, n).await;
                }
            })
        })
        .collect()
}

/// Sets `stop` and waits for `workers` (panics in a worker are re-raised).
pub async fn finish(stop: &AtomicBool, workers: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("load worker");
    }
}

/// Outcomes by kind of request, and the ones that broke an invariant.
#[derive(Debug, Default)]
pub struct Ledger {
    counts: Mutex<BTreeMap<(&'static str, String), usize>>,
    violations: Mutex<Vec<String>>,
}

impl Ledger {
    /// Counts one `outcome` (a status, or "error") of a request of `kind`.
    pub fn record(&self, kind: &'static str, outcome: impl ToString) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((kind, outcome.to_string())).or_default() += 1;
    }

    /// Notes a broken invariant (the first few are kept verbatim).
    pub fn violation(&self, what: String) {
        let mut v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 20 {
            v.push(what);
        }
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many requests of `kind` ended with `outcome`.
    pub fn count(&self, kind: &str, outcome: &str) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((k, o), _)| *k == kind && o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request of `kind`.
    pub fn total(&self, kind: &str) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// `kind outcome=count` lines, for failure messages and logs.
    pub fn summary(&self) -> String {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((k, o), n)| format!("{k} {o}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
