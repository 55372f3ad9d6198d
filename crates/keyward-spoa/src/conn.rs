//! Drives one connection: reads frames into the [`Machine`], runs NOTIFY handlers
//! concurrently on this task, and writes ready ACKs back in as few writes as possible.
//!
//! Backpressure: with `max_inflight` handlers running, or too many reply bytes not yet
//! taken by the peer, the connection stops reading. Memory per connection is bounded by
//! one frame of input plus the in-flight answers.
//!
//! Memory across connections: each may hold [`OWN_BUFFERS`] of read and write buffers
//! whatever the others do; growing beyond that takes from a pool shared by all of them
//! (`Limits::max_buffered`). A connection over its share with the pool spent stops
//! reading until the peer has taken its replies. The share always holds one frame and
//! its answer, so no connection ever waits on another's memory. Buffers left empty give
//! their memory back. So many peers that never read their ACKs hold at most the pool
//! plus a small amount each, and every connection keeps being served from its own share.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use spop::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::Limits;
use crate::handler::{Failure, Handler};
use crate::machine::{Close, Event, Machine};
use crate::message::{Actions, Request};
use crate::metrics::Metrics;
use crate::proto::{self, Notify};

/// Stop reading while this many reply bytes wait for the peer.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Sent bytes kept at most before the write buffer is compacted (see [`compact`]).
const COMPACT_AT: usize = 64 * 1024;

/// How long a closing connection may take to flush its last frames.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Read and write buffer bytes a connection may hold whatever the pool says (or, for a
/// larger negotiated max-frame-size, one frame and 8 KiB: every connection can always
/// read and answer one frame on its own, so connections can never wait on each other).
pub const OWN_BUFFERS: usize = 32 * 1024;

/// The size each buffer starts at, and goes back to when it is empty: at once when it
/// grew beyond [`SHRINK_ALWAYS`], and from any size once the pool is half spent. Small:
/// HAProxy 2.6 keeps many idle agent connections under HTTP/2 concurrency.
const INITIAL_BUFFER: usize = 2 * 1024;
const SHRINK_ALWAYS: usize = 64 * 1024;

/// How often a connection that found the pool spent looks again.
const POOL_RETRY: Duration = Duration::from_millis(200);

/// How a connection ended, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The peer closed the socket (or it failed).
    PeerClosed,
    /// HAProxy sent HAPROXY-DISCONNECT and got our AGENT-DISCONNECT.
    PeerDisconnect,
    /// A health-check HELLO was answered.
    HealthCheck,
    /// We disconnected with this status (protocol error, timeout, shutdown).
    Disconnected(StatusCode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Shutting down: read nothing more, answer the frames already read, then disconnect.
    Draining,
    /// Last frames are queued; close once they are written.
    Flushing,
}

struct Done {
    stream_id: u64,
    frame_id: u64,
    actions: Actions,
}

/// Serves one SPOP connection until it ends.
pub async fn serve_connection<R, W, H>(
    mut rd: R,
    mut wr: W,
    handler: &H,
    limits: &Limits,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: Handler,
{
    let mut machine = Machine::new(limits.max_frame_size, limits.pipelining);
    // Buffers grow when frames need it, and shrink back once empty.
    let mut rbuf = BytesMut::with_capacity(INITIAL_BUFFER);
    let mut out: Vec<u8> = Vec::with_capacity(INITIAL_BUFFER);
    let mut held = Held::new(metrics, rbuf.capacity() + out.capacity());
    // The read buffer's allocation: `capacity()` counts only what is left after the
    // frames already taken, so it is noted whenever the buffer is replaced.
    let mut rbuf_size = rbuf.capacity();
    let mut written = 0usize;
    let mut inflight = FuturesUnordered::new();
    let mut phase = Phase::Open;
    let mut end = End::PeerClosed;
    let mut deadline = Instant::now() + limits.hello_timeout;

    loop {
        // Take whole frames already buffered, while there is room for more work. A
        // draining connection reads nothing more, but answers what HAProxy had already
        // sent: each of those requests would otherwise fail at the AGENT-DISCONNECT.
        while matches!(phase, Phase::Open | Phase::Draining)
            && inflight.len() < limits.max_inflight
            && out.len() - written < WRITE_HIGH_WATER
        {
            let Some(event) = machine.poll(&mut rbuf, &mut out) else {
                break;
            };
            deadline = Instant::now() + limits.idle_timeout;
            match event {
                Event::Ready {
                    max_frame_size,
                    pipelining,
                    healthcheck,
                } => {
                    metrics.rx_hello.inc();
                    metrics.tx_hello.inc();
                    tracing::debug!(max_frame_size, pipelining, healthcheck, "handshake done");
                    if healthcheck {
                        end = End::HealthCheck;
                        phase = Phase::Flushing;
                        deadline = Instant::now() + FLUSH_TIMEOUT;
                    }
                }
                Event::Notify(notify) => {
                    metrics.rx_notify.inc();
                    metrics.inflight.inc();
                    inflight.push(run_handler(
                        handler,
                        notify,
                        limits.handler_timeout,
                        metrics,
                    ));
                }
                Event::Closing(close) => {
                    match close {
                        Close::Peer { status, message } => {
                            metrics.rx_disconnect.inc();
                            metrics.disconnect(StatusCode::None);
                            tracing::debug!(status, %message, "HAProxy disconnected");
                            end = End::PeerDisconnect;
                        }
                        Close::Protocol(err) => {
                            metrics.disconnect(err.status);
                            tracing::warn!(%err, "protocol error; disconnecting");
                            end = End::Disconnected(err.status);
                        }
                    }
                    // Answers to a connection that is going away would follow our
                    // AGENT-DISCONNECT, which the protocol forbids.
                    metrics.inflight.sub(inflight.len() as i64);
                    inflight.clear();
                    phase = Phase::Flushing;
                    deadline = Instant::now() + FLUSH_TIMEOUT;
                }
            }
        }

        let pending = out.len() - written;
        if phase == Phase::Flushing && pending == 0 {
            break;
        }
        // Below the high-water mark the loop above took every whole frame left.
        if phase == Phase::Draining && inflight.is_empty() && pending < WRITE_HIGH_WATER {
            if machine.is_ready() {
                machine.disconnect(StatusCode::None, "agent shutting down", &mut out);
                metrics.disconnect(StatusCode::None);
            }
            end = End::Disconnected(StatusCode::None);
            phase = Phase::Flushing;
            deadline = Instant::now() + FLUSH_TIMEOUT;
            continue;
        }

        // Empty buffers that grew give their memory back: at once when they are large,
        // and from any size once the pool is half spent. Below that, buffers that a
        // busy connection fills again with the next batch are kept.
        if rbuf.is_empty() && rbuf_size > INITIAL_BUFFER && held.shrink(rbuf_size, limits) {
            rbuf = BytesMut::with_capacity(INITIAL_BUFFER);
            rbuf_size = rbuf.capacity();
        }
        if pending == 0 && out.capacity() > INITIAL_BUFFER && held.shrink(out.capacity(), limits) {
            out = Vec::with_capacity(INITIAL_BUFFER);
            written = 0;
        }
        held.set(rbuf_size + out.capacity());

        let mut starved = false;
        let mut can_read = phase == Phase::Open
            && inflight.len() < limits.max_inflight
            && pending < WRITE_HIGH_WATER;
        if can_read {
            let own = OWN_BUFFERS.max(machine.max_frame_size() as usize + 8 * 1024);
            if pending > 0 && !held.may_grow(0, own, limits.max_buffered) {
                // Over its share with the pool spent, and replies waiting: the peer
                // takes those first (the write that sends them wakes us).
                can_read = false;
            } else {
                let grow = growth_for_next_frame(&rbuf, machine.max_frame_size());
                if grow > 0 && !rbuf.try_reclaim(grow) {
                    if held.may_grow(grow, own, limits.max_buffered) {
                        // Exactly this much: `reserve` could double the allocation.
                        let mut bigger = BytesMut::with_capacity(rbuf.len() + grow);
                        bigger.extend_from_slice(&rbuf);
                        rbuf = bigger;
                        rbuf_size = rbuf.capacity();
                        held.set(rbuf_size + out.capacity());
                    } else if rbuf.capacity() == rbuf.len() {
                        // No room, and none to be had until the pool has some again.
                        can_read = false;
                        starved = true;
                    }
                }
            }
        }

        // One timer: the deadline, or sooner for a connection waiting for the pool with
        // nothing in flight (an ACK ending would wake it otherwise).
        let wake = if starved && inflight.is_empty() {
            deadline.min(Instant::now() + POOL_RETRY)
        } else {
            deadline
        };

        tokio::select! {
            biased;
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                write_ack(done, &mut out, &machine, handler, metrics);
                // Everything else already finished goes out in the same write.
                while let Some(Some(done)) = inflight.next().now_or_never() {
                    write_ack(done, &mut out, &machine, handler, metrics);
                }
                if phase == Phase::Open {
                    deadline = Instant::now() + limits.idle_timeout;
                }
            }
            res = wr.write(&out[written..]), if pending > 0 => match res {
                Ok(n) if n > 0 => {
                    written += n;
                    compact(&mut out, &mut written);
                }
                _ => {
                    metrics.inflight.sub(inflight.len() as i64);
                    return End::PeerClosed;
                }
            },
            res = rd.read_buf(&mut rbuf), if can_read => match res {
                Ok(n) if n > 0 => {}
                // The peer is gone: answers in flight have nobody to go to.
                _ => {
                    metrics.inflight.sub(inflight.len() as i64);
                    return End::PeerClosed;
                }
            },
            () = shutdown.cancelled(), if phase == Phase::Open => {
                phase = Phase::Draining;
            }
            () = sleep_until(wake), if inflight.is_empty() || phase == Phase::Flushing => {
                if wake < deadline {
                    // Only a connection waiting for the pool wakes early: look again.
                    continue;
                }
                if phase == Phase::Flushing {
                    break;
                }
                let message = if machine.is_ready() { "idle timeout" } else { "no HELLO in time" };
                machine.disconnect(StatusCode::Timeout, message, &mut out);
                metrics.disconnect(StatusCode::Timeout);
                end = End::Disconnected(StatusCode::Timeout);
                phase = Phase::Flushing;
                deadline = Instant::now() + FLUSH_TIMEOUT;
            }
        }
    }
    metrics.inflight.sub(inflight.len() as i64);
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, wr.shutdown()).await;
    end
}

/// How many bytes to reserve before reading (0: there is room): the rest of a frame
/// whose length is known, or a chunk.
fn growth_for_next_frame(rbuf: &BytesMut, max_frame_size: u32) -> usize {
    let want = match rbuf.get(..4) {
        Some(p) => {
            let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]).min(max_frame_size) as usize;
            (4 + len).saturating_sub(rbuf.len()).max(1)
        }
        None => 4096,
    };
    if rbuf.capacity() - rbuf.len() < want.min(16 * 1024) {
        want.clamp(4096, 64 * 1024)
    } else {
        0
    }
}

/// The buffer bytes one connection holds, counted in the pool's gauge
/// (`keyward_spoa_buffer_bytes`), which is the pool: every connection adds what it
/// holds, and takes it out again when it ends.
struct Held<'a> {
    pool: &'a prometheus::IntGauge,
    bytes: usize,
}

impl<'a> Held<'a> {
    fn new(metrics: &'a Metrics, bytes: usize) -> Self {
        metrics.buffer_bytes.add(bytes as i64);
        Self {
            pool: &metrics.buffer_bytes,
            bytes,
        }
    }

    /// Records that the connection now holds `bytes`; touches the shared gauge only
    /// when that changed.
    fn set(&mut self, bytes: usize) {
        if bytes != self.bytes {
            self.pool.add(bytes as i64 - self.bytes as i64);
            self.bytes = bytes;
        }
    }

    /// Whether an empty buffer of `size` should be given back now.
    fn shrink(&self, size: usize, limits: &Limits) -> bool {
        size > SHRINK_ALWAYS
            || usize::try_from(self.pool.get()).unwrap_or(0) > limits.max_buffered / 2
    }

    /// Whether the connection may grow by `more`: within its own share (`own`), or
    /// while the pool (all connections together) stays within `max`.
    fn may_grow(&self, more: usize, own: usize, max: usize) -> bool {
        self.bytes + more <= own || usize::try_from(self.pool.get()).unwrap_or(0) + more <= max
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.pool.sub(self.bytes as i64);
    }
}

async fn run_handler<H: Handler>(
    handler: &H,
    notify: Notify,
    timeout: Duration,
    metrics: &Metrics,
) -> Done {
    let Notify {
        stream_id,
        frame_id,
        messages,
    } = notify;
    let started = Instant::now();
    // The call itself happens inside the future, so a panic before its first await is
    // caught as well.
    let call = AssertUnwindSafe(async move { handler.handle(Request { messages }).await });
    let failure = match tokio::time::timeout(timeout, call.catch_unwind()).await {
        Ok(Ok(Ok(actions))) => {
            metrics
                .handler_seconds
                .observe(started.elapsed().as_secs_f64());
            return Done {
                stream_id,
                frame_id,
                actions,
            };
        }
        Ok(Ok(Err(err))) => {
            tracing::warn!(%err, "handler failed; answering with the failure ACK");
            Failure::Error
        }
        Ok(Err(_)) => {
            tracing::error!("handler panicked; answering with the failure ACK");
            Failure::Panic
        }
        Err(_) => {
            tracing::warn!(
                ?timeout,
                "handler overran its timeout; answering with the failure ACK"
            );
            Failure::Timeout
        }
    };
    metrics
        .handler_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.failure(failure);
    Done {
        stream_id,
        frame_id,
        actions: handler.on_failure(failure),
    }
}

/// Sent bytes leave `out` once it is all sent, or once they are at least
/// [`COMPACT_AT`] and half of it: a peer that reads steadily but never quite catches up
/// would otherwise keep every byte ever sent on the connection in memory.
fn compact(out: &mut Vec<u8>, written: &mut usize) {
    if *written == out.len() {
        out.clear();
        *written = 0;
    } else if *written >= COMPACT_AT && *written * 2 >= out.len() {
        out.drain(..*written);
        *written = 0;
    }
}

fn write_ack<H: Handler>(
    done: Done,
    out: &mut Vec<u8>,
    machine: &Machine,
    handler: &H,
    metrics: &Metrics,
) {
    metrics.inflight.dec();
    metrics.tx_ack.inc();
    let limit = machine.ack_limit() as usize;
    let start = out.len();
    proto::encode_ack(done.stream_id, done.frame_id, &done.actions, out);
    if out.len() - start - 4 <= limit {
        return;
    }
    out.truncate(start);
    metrics.failure(Failure::TooBig);
    tracing::warn!(
        limit,
        "handler answer exceeds max-frame-size; answering with the failure ACK"
    );
    proto::encode_ack(
        done.stream_id,
        done.frame_id,
        &handler.on_failure(Failure::TooBig),
        out,
    );
    if out.len() - start - 4 > limit {
        // Even the failure answer does not fit: an empty ACK still releases the stream,
        // and with no variables set HAProxy does not forward.
        out.truncate(start);
        proto::encode_ack(done.stream_id, done.frame_id, &Actions::new(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection loop's shape against a peer that reads steadily but a little
    /// slower than ACKs come: ACKs are appended while fewer than WRITE_HIGH_WATER bytes
    /// wait, each write takes a part. The buffer must stay bounded.
    #[test]
    fn the_write_buffer_stays_bounded_when_the_peer_never_quite_catches_up() {
        let mut out = Vec::new();
        let mut written = 0usize;
        let mut sent = 0usize;
        let ack = [0u8; 2_000];
        while sent < 200 * 1024 * 1024 {
            while out.len() - written < WRITE_HIGH_WATER {
                out.extend_from_slice(&ack);
            }
            let n = (out.len() - written).min(64 * 1024 - 7);
            written += n;
            sent += n;
            compact(&mut out, &mut written);
            assert!(
                out.len() <= 2 * (WRITE_HIGH_WATER + COMPACT_AT),
                "{} bytes buffered after {sent} sent",
                out.len()
            );
        }
        // A buffer written out whole is emptied.
        let mut written = out.len();
        compact(&mut out, &mut written);
        assert_eq!((out.len(), written), (0, 0));
    }
}
