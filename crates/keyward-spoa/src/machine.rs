//! The per-connection protocol state machine: bytes in, events and reply bytes out.
//!
//! It owns the handshake rules (HELLO first, exactly once; version 2.x; frame size
//! negotiation), turns each NOTIFY into an [`Event::Notify`], and answers everything
//! that ends a connection with the right AGENT-DISCONNECT. It does no IO and keeps no
//! clock, so it can be driven byte by byte in tests and fuzzed.

use bytes::{Buf, BytesMut};
use spop::StatusCode;

use crate::Pipelining;
use crate::proto::{self, Frame, MIN_FRAME_SIZE, Notify, ProtoError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    Ready,
    Closed,
}

/// What happened after a frame was taken from the buffer.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Handshake done; an AGENT-HELLO was written. A health-check connection must be
    /// closed once that reply is flushed.
    Ready {
        max_frame_size: u32,
        /// Whether our AGENT-HELLO announced pipelining.
        pipelining: bool,
        healthcheck: bool,
    },
    /// A request for the handler.
    Notify(Notify),
    /// The connection is over. Any reply (AGENT-DISCONNECT) was written; flush, then
    /// close. No more events follow.
    Closing(Close),
}

/// Why a connection is closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// HAProxy sent HAPROXY-DISCONNECT.
    Peer { status: u32, message: String },
    /// HAProxy sent something we cannot accept.
    Protocol(ProtoError),
}

/// Protocol state of one connection.
#[derive(Debug)]
pub struct Machine {
    state: State,
    /// What we accept before the handshake, and our side of the negotiation.
    our_max_frame_size: u32,
    /// The limit in force: ours before HELLO, the negotiated one after.
    max_frame_size: u32,
    pipelining: Pipelining,
}

impl Machine {
    /// `our_max_frame_size` is clamped to at least the protocol minimum of 256.
    pub fn new(our_max_frame_size: u32, pipelining: Pipelining) -> Self {
        let ours = our_max_frame_size.max(MIN_FRAME_SIZE);
        Self {
            state: State::AwaitHello,
            our_max_frame_size: ours,
            max_frame_size: ours,
            pipelining,
        }
    }

    /// The largest frame either side may send now.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// The largest ACK payload we send: one byte under the negotiated max-frame-size.
    /// HAProxy 3.1+ advertises its buffer size minus the 4-byte length prefix, and a
    /// read that fills its whole demux buffer stops that connection for good (see
    /// [`Pipelining::Auto`]), so a frame of exactly max-frame-size must never go out.
    pub fn ack_limit(&self) -> u32 {
        self.max_frame_size - 1
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Takes at most one frame from the front of `buf`, appending any reply to `out`.
    /// `None` means "need more bytes" (or the connection is already closed).
    pub fn poll(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>) -> Option<Event> {
        if self.state == State::Closed {
            return None;
        }
        match proto::decode(buf, self.max_frame_size) {
            Ok(None) => None,
            Ok(Some((frame, used))) => {
                buf.advance(used);
                Some(self.on_frame(frame, out))
            }
            Err(err) => Some(self.fail(err, out)),
        }
    }

    fn on_frame(&mut self, frame: Frame, out: &mut Vec<u8>) -> Event {
        match (self.state, frame) {
            (_, Frame::Disconnect { status, message }) => {
                proto::encode_agent_disconnect(StatusCode::None, "bye", out);
                self.state = State::Closed;
                Event::Closing(Close::Peer { status, message })
            }
            (State::AwaitHello, Frame::Hello(hello)) => {
                if !hello.offers_v2() {
                    return self.fail(
                        ProtoError::new(
                            StatusCode::BadVersion,
                            format!(
                                "no supported version in `{}`; this agent speaks 2.0",
                                hello.supported_versions
                            ),
                        ),
                        out,
                    );
                }
                if hello.max_frame_size < MIN_FRAME_SIZE {
                    return self.fail(
                        ProtoError::new(
                            StatusCode::BadFrameSize,
                            format!(
                                "max-frame-size {} is below the minimum of {MIN_FRAME_SIZE}",
                                hello.max_frame_size
                            ),
                        ),
                        out,
                    );
                }
                let negotiated = hello.max_frame_size.min(self.our_max_frame_size);
                let pipelining = self.pipelining.announce(&hello);
                proto::encode_agent_hello(negotiated, pipelining, out);
                self.max_frame_size = negotiated;
                self.state = State::Ready;
                Event::Ready {
                    max_frame_size: negotiated,
                    pipelining,
                    healthcheck: hello.healthcheck,
                }
            }
            (State::AwaitHello, Frame::Notify(_)) => self.fail(
                ProtoError::new(StatusCode::Invalid, "NOTIFY before HELLO"),
                out,
            ),
            (State::Ready, Frame::Hello(_)) => {
                self.fail(ProtoError::new(StatusCode::Invalid, "second HELLO"), out)
            }
            (State::Ready, Frame::Notify(notify)) => Event::Notify(notify),
            (State::Closed, _) => unreachable_closed(),
        }
    }

    fn fail(&mut self, err: ProtoError, out: &mut Vec<u8>) -> Event {
        proto::encode_agent_disconnect(err.status, &err.message, out);
        self.state = State::Closed;
        Event::Closing(Close::Protocol(err))
    }

    /// Ends the connection from our side (idle timeout, shutdown) with an AGENT-DISCONNECT.
    pub fn disconnect(&mut self, status: StatusCode, message: &str, out: &mut Vec<u8>) {
        if self.state != State::Closed {
            proto::encode_agent_disconnect(status, message, out);
            self.state = State::Closed;
        }
    }
}

/// `poll` returns before reaching `on_frame` once closed; keep the match total without
/// a panic path.
fn unreachable_closed() -> Event {
    Event::Closing(Close::Protocol(ProtoError::new(
        StatusCode::Unknown,
        "frame after close",
    )))
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
