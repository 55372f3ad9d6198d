//! Runtime metrics, registered under `keyward_spoa_` in a registry the caller owns.
//!
//! Label sets are small and fixed: frame types, SPOP status codes, failure kinds.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use spop::StatusCode;

use crate::handler::Failure;

/// Counters and gauges of the SPOA runtime. Children are resolved once, so the hot path
/// does no label lookups.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub connections_accepted: IntCounter,
    pub connections_rejected: IntCounter,
    pub connections_active: IntGauge,
    pub rx_hello: IntCounter,
    pub rx_notify: IntCounter,
    pub rx_disconnect: IntCounter,
    pub tx_hello: IntCounter,
    pub tx_ack: IntCounter,
    pub inflight: IntGauge,
    /// Read and write buffer bytes of all connections: the pool `max_buffered` caps.
    pub buffer_bytes: IntGauge,
    pub handler_seconds: Histogram,
    disconnects: IntCounterVec,
    failures: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::with_opts(Opts::new(name, help).namespace("keyward_spoa"))?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::with_opts(Opts::new(name, help).namespace("keyward_spoa"))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let frames = IntCounterVec::new(
            Opts::new("frames_received_total", "SPOP frames received, by type")
                .namespace("keyward_spoa"),
            &["type"],
        )?;
        registry.register(Box::new(frames.clone()))?;
        let sent = IntCounterVec::new(
            Opts::new("frames_sent_total", "SPOP frames sent, by type").namespace("keyward_spoa"),
            &["type"],
        )?;
        registry.register(Box::new(sent.clone()))?;
        let disconnects = IntCounterVec::new(
            Opts::new(
                "disconnects_total",
                "AGENT-DISCONNECT frames sent, by SPOP status code (0 = normal)",
            )
            .namespace("keyward_spoa"),
            &["status"],
        )?;
        registry.register(Box::new(disconnects.clone()))?;
        let failures = IntCounterVec::new(
            Opts::new(
                "handler_failures_total",
                "NOTIFYs answered with the failure ACK, by cause",
            )
            .namespace("keyward_spoa"),
            &["kind"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        let handler_seconds = Histogram::with_opts(
            HistogramOpts::new("handler_duration_seconds", "Time from NOTIFY to ready ACK")
                .namespace("keyward_spoa")
                .buckets(vec![
                    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5,
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
        )?;
        registry.register(Box::new(handler_seconds.clone()))?;

        let metrics = Self {
            connections_accepted: counter("connections_accepted_total", "Connections accepted")?,
            connections_rejected: counter(
                "connections_rejected_total",
                "Connections closed at once because max_connections was reached",
            )?,
            connections_active: gauge("connections_active", "Open connections")?,
            rx_hello: frames.with_label_values(&["hello"]),
            rx_notify: frames.with_label_values(&["notify"]),
            rx_disconnect: frames.with_label_values(&["disconnect"]),
            tx_hello: sent.with_label_values(&["hello"]),
            tx_ack: sent.with_label_values(&["ack"]),
            inflight: gauge("notify_inflight", "NOTIFYs being handled")?,
            buffer_bytes: gauge(
                "buffer_bytes",
                "Read and write buffer bytes held by all connections",
            )?,
            handler_seconds,
            disconnects,
            failures,
        };
        // Make the common series visible at zero before the first event.
        metrics.disconnects.with_label_values(&["0"]);
        for kind in [
            Failure::Error,
            Failure::Panic,
            Failure::Timeout,
            Failure::TooBig,
        ] {
            metrics.failures.with_label_values(&[kind.as_str()]);
        }
        Ok(metrics)
    }

    pub(crate) fn disconnect(&self, status: StatusCode) {
        self.disconnects
            .with_label_values(&[status.to_u32().to_string().as_str()])
            .inc();
    }

    pub(crate) fn failure(&self, failure: Failure) {
        self.failures.with_label_values(&[failure.as_str()]).inc();
    }
}
