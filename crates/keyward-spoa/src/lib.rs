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
//! Protocol choices (valid for HAProxy 2.6 through 3.x): reply version 2.0, announce no
//! capability but `pipelining`, and that only where it is safe ([`Pipelining`]), FIN on
//! every frame, never fragment, treat a NOTIFY's stream and frame ids as opaque (HELLO and
//! DISCONNECT must carry 0 in both), answer every NOTIFY even when the handler fails.

pub mod conn;
pub mod handler;
pub mod machine;
pub mod message;
pub mod metrics;
pub mod peer;
pub mod proto;
pub mod server;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::proto::Hello;

pub use conn::{End, OWN_BUFFERS, serve_connection};
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
    /// Read and write buffer bytes of all connections together, beyond which a
    /// connection grows no further than its own share ([`OWN_BUFFERS`], or one frame
    /// and 8 KiB if larger), and one over its share stops reading while replies wait.
    pub max_buffered: usize,
    /// Time allowed between accepting a connection and its HELLO.
    pub hello_timeout: Duration,
    /// A connection with no frame and nothing in flight for this long is disconnected.
    pub idle_timeout: Duration,
    /// A handler running longer is answered with its failure actions.
    pub handler_timeout: Duration,
    /// On shutdown, how long connections get to finish in-flight requests.
    pub drain_timeout: Duration,
    /// Whether HAProxy may send several NOTIFYs on one connection before our ACKs.
    pub pipelining: Pipelining,
}

/// Whether the AGENT-HELLO announces `pipelining`.
///
/// HAProxy 3.1 through at least 3.4 (its SPOP multiplexer) stops reading an agent
/// connection for good when one read fills its whole demux buffer (tune.bufsize, 16 KiB):
/// the flag that marks the buffer full also blocks the demultiplexer that would empty it.
/// With pipelining, up to 20 ACKs can wait in the socket; a few large ones (a request
/// with many cookies gets back a long `cookie` variable) reach 16 KiB, and every later
/// request sent on that connection waits out `timeout processing` (503). Without
/// pipelining HAProxy sends one NOTIFY at a time per connection, so at most one ACK,
/// shorter than max-frame-size, is ever waiting. HAProxy 2.x and 3.0 (the SPOE applet)
/// are not affected, and only they offer `async` in their HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pipelining {
    /// Pipelining for HAProxy peers that offer `async` (2.x, 3.0), none for 3.1+.
    #[default]
    Auto,
    /// Always announce it (a 3.1+ HAProxy known to be fixed).
    On,
    /// Never announce it.
    Off,
}

impl Pipelining {
    const ALL: [Self; 3] = [Self::Auto, Self::On, Self::Off];

    /// The word `spoa.pipelining` uses for this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }

    /// Whether to announce pipelining to the peer that sent `hello`.
    pub fn announce(self, hello: &Hello) -> bool {
        match self {
            Self::Auto => hello.offers("async"),
            Self::On => true,
            Self::Off => false,
        }
    }
}

impl FromStr for Pipelining {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not one of \"auto\", \"on\", \"off\""))
    }
}

impl fmt::Display for Pipelining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 16_384,
            max_inflight: 64,
            max_connections: 8_192,
            max_buffered: 256 * 1024 * 1024,
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            handler_timeout: Duration::from_millis(400),
            drain_timeout: Duration::from_secs(10),
            pipelining: Pipelining::Auto,
        }
    }
}
