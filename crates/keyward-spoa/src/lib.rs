//! keyward's SPOP agent runtime.
//!
//! HAProxy's SPOE filter opens connections to the agent and sends one NOTIFY frame per
//! request; the agent answers each with an ACK carrying variable actions. This crate is
//! everything between the socket and the decision:
//!
//! - [`proto`]: frame decoding and encoding, no IO (on top of the `spop` codec);
//! - [`machine`]: the per-connection protocol state machine, no IO;
//! - [`conn`]: the connection driver (concurrent handlers, backpressure, timeouts);
//! - [`server`]: TCP / Unix listeners, connection cap, graceful shutdown;
//! - [`Handler`]: the trait the decision logic implements.
//!
//! Protocol choices (valid for HAProxy 2.6 through 3.x): reply version 2.0, announce only
//! `pipelining`, FIN on every frame, never fragment, treat stream and frame ids as opaque,
//! answer every NOTIFY even when the handler fails.

pub mod conn;
pub mod handler;
pub mod machine;
pub mod message;
pub mod metrics;
pub mod peer;
pub mod proto;
pub mod server;

use std::time::Duration;

pub use conn::{End, serve_connection};
pub use handler::{Failure, Handler, HandlerError};
pub use message::{Actions, ArgError, Message, Request, Value, VarValue};
pub use metrics::Metrics;
pub use server::{LimitsHandle, ListenAddr, Listener, Server};
pub use spop::{StatusCode, TypedData, VarScope};
pub use tokio_util::sync::CancellationToken;

/// Runtime limits. All of them can be changed on a running server; connections opened
/// after the change use the new values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Our max-frame-size; the negotiated one is the smaller of this and HAProxy's.
    pub max_frame_size: u32,
    /// NOTIFYs handled at once on one connection before we stop reading.
    pub max_inflight: usize,
    /// Open connections across all listeners; more are closed at once.
    pub max_connections: usize,
    /// Time allowed between accepting a connection and its HELLO.
    pub hello_timeout: Duration,
    /// A connection with no frame and nothing in flight for this long is disconnected.
    pub idle_timeout: Duration,
    /// A handler running longer is answered with its failure actions.
    pub handler_timeout: Duration,
    /// On shutdown, how long connections get to finish in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 16_384,
            max_inflight: 64,
            max_connections: 8_192,
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            handler_timeout: Duration::from_millis(400),
            drain_timeout: Duration::from_secs(10),
        }
    }
}
