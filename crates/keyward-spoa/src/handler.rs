//! The seam between the protocol runtime and the logic that decides.

use std::future::Future;

use crate::message::{Actions, Request};

/// Error a handler may return; the runtime logs it (without its arguments) and ACKs
/// with [`Handler::on_failure`].
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Why a handler produced no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `handle` returned an error.
    Error,
    /// `handle` panicked.
    Panic,
    /// `handle` ran past the handler timeout.
    Timeout,
    /// The answer did not fit in the negotiated frame size.
    TooBig,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::Panic => "panic",
            Failure::Timeout => "timeout",
            Failure::TooBig => "too_big",
        }
    }
}

/// Answers NOTIFY frames. One value serves every connection, concurrently.
///
/// Every NOTIFY gets exactly one ACK: the actions `handle` returns, or the actions of
/// [`Handler::on_failure`] when it fails, panics or overruns. HAProxy therefore never
/// waits out `timeout processing` because of a handler bug.
pub trait Handler: Send + Sync + 'static {
    /// Decides on one request. Runs concurrently with other requests of the same
    /// connection; must not block the thread.
    fn handle(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Actions, HandlerError>> + Send;

    /// The ACK's actions when there is no answer from `handle`. Keep it small and
    /// fail-closed (it must never grant access).
    fn on_failure(&self, failure: Failure) -> Actions;
}
