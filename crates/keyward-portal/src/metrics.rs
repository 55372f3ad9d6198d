//! Metrics of the portal, under `keyward_portal_`: what each route answered and how
//! long it took. Labels are the route's template (a fixed set, from the router) and
//! one of four results; never a user, a path as sent, or an address.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::Portal;

#[derive(Debug, Clone)]
pub struct PortalMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

/// What an answer says, for people watching: done, refused as asked (a bad or replayed
/// answer, an unknown invite, a failed origin check), over a rate limit, or failed on
/// keyward's side (its store, its IdP, itself).
fn result(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limited",
        400..=499 => "rejected",
        500..=599 => "error",
        _ => "ok",
    }
}

impl PortalMetrics {
    /// The portal's metrics, not yet in any registry.
    pub fn new() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Portal requests by route and result (ok, rejected, rate_limited, error)",
            )
            .namespace("keyward")
            .subsystem("portal"),
            &["route", "result"],
        )
        .expect("valid metric options");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Portal request -> response ready, by route",
            )
            .namespace("keyward")
            .subsystem("portal")
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
            ]),
            &["route"],
        )
        .expect("valid metric options");
        Self { requests, seconds }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.seconds.clone()))
    }

    /// Answers counted so far for `route` with `result` (tests).
    pub fn count(&self, route: &str, result: &str) -> u64 {
        self.requests.with_label_values(&[route, result]).get()
    }
}

impl Default for PortalMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times each answer of a route (applied as a route layer: only requests a
/// route matched, whose template is known, are counted).
pub async fn observe(State(portal): State<Arc<Portal>>, req: Request, next: Next) -> Response {
    let Some(route) = req.extensions().get::<MatchedPath>().cloned() else {
        return next.run(req).await;
    };
    let started = Instant::now();
    let res = next.run(req).await;
    let m = &portal.metrics;
    m.seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[route.as_str(), result(res.status())])
        .inc();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_one_result() {
        assert_eq!(result(StatusCode::OK), "ok");
        assert_eq!(result(StatusCode::SEE_OTHER), "ok");
        assert_eq!(result(StatusCode::BAD_REQUEST), "rejected");
        assert_eq!(result(StatusCode::FORBIDDEN), "rejected");
        assert_eq!(result(StatusCode::TOO_MANY_REQUESTS), "rate_limited");
        assert_eq!(result(StatusCode::SERVICE_UNAVAILABLE), "error");
        assert_eq!(result(StatusCode::INTERNAL_SERVER_ERROR), "error");
    }
}
