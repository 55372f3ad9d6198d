//! The protocol runtime's own costs, without HAProxy or a socket: decoding the NOTIFY
//! keyward's SPOE config sends, encoding the ACK it answers with, and a whole
//! NOTIFY -> ACK through the connection driver over an in-memory pipe.
//!
//! `cargo bench -p keyward-spoa --bench spop`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_spoa::peer::{self, ACK, AGENT_HELLO};
use keyward_spoa::proto::{self, Frame};
use keyward_spoa::{
    Actions, CancellationToken, Failure, Handler, HandlerError, Limits, Metrics, Request,
    TypedData, serve_connection,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const MAX_FRAME: u32 = 16_380;
/// NOTIFYs in flight at once in the pipelined bench (the default `max_inflight`).
const BATCH: usize = 64;

/// `n` characters of the base64url alphabet, deterministic.
fn b64(n: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ALPHABET[(x >> 58) as usize] as char
        })
        .collect()
}

/// The cookie header of a browser with a keyward session and a few other cookies.
fn cookie() -> String {
    format!(
        "_ga=GA1.2.1374922211.1764070000; theme=dark; lang=en; keyward_session=v4.local.{}",
        b64(316, 1)
    )
}

/// The `keyward-request` message with the args of haproxy/keyward-spoe.conf, as HAProxy
/// sends it for a GET with a session cookie and no `Authorization` header.
fn keyward_request(stream_id: u64, frame_id: u64, cookie: &str) -> Vec<u8> {
    peer::notify(
        stream_id,
        frame_id,
        "keyward-request",
        &[
            ("cookie", TypedData::String(cookie.into())),
            ("authorization", TypedData::Null),
            ("host", TypedData::String("app.example.com".into())),
            ("path", TypedData::String("/projects/42/settings".into())),
            ("query", TypedData::String("tab=members&page=2".into())),
            ("method", TypedData::String("GET".into())),
            ("src", TypedData::IPv4(Ipv4Addr::new(203, 0, 113, 7))),
            ("tls", TypedData::Bool(true)),
            (
                "origin",
                TypedData::String("https://app.example.com".into()),
            ),
            ("sec_fetch_site", TypedData::String("same-origin".into())),
        ],
    )
}

/// The ACK keyward sends on allow for a cache hit with an upstream assertion.
fn allow() -> Actions {
    let assertion = format!("eyJ{}.eyJ{}.{}", b64(33, 2), b64(376, 3), b64(86, 4));
    let mut a = Actions::new();
    a.set_txn("decision", "allow")
        .set_txn("reason", "ok")
        .set_txn("user", "user-8c1f2e4a")
        .set_txn("roles", "dev,ops")
        .set_txn("session", "session-00000042-abcdefghij")
        .set_txn("email", "ada.lovelace@example.com")
        .set_txn("device", "device-3f9b7c21")
        .set_txn("assertion", assertion);
    a
}

fn minimal() -> Actions {
    let mut a = Actions::new();
    a.set_txn("decision", "allow");
    a
}

fn decode(c: &mut Criterion) {
    let cookie = cookie();
    let notify = keyward_request(1_234_567, 1, &cookie);
    let hello = peer::hello(MAX_FRAME, "pipelining,async", false);
    let mut g = c.benchmark_group("decode");
    g.bench_function("notify", |b| {
        b.iter(|| {
            let decoded = proto::decode(black_box(&notify), MAX_FRAME);
            assert!(matches!(decoded, Ok(Some((Frame::Notify(_), _)))));
            decoded
        })
    });
    g.bench_function("hello", |b| {
        b.iter(|| {
            let decoded = proto::decode(black_box(&hello), MAX_FRAME);
            assert!(matches!(decoded, Ok(Some((Frame::Hello(_), _)))));
            decoded
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (name, build) in [
        ("ack", allow as fn() -> Actions),
        ("ack_minimal", minimal as fn() -> Actions),
    ] {
        let mut out = Vec::with_capacity(4096);
        g.bench_function(name, |b| {
            // Actions are encoded as the handler sets them, so building them is part of
            // the measurement; then the frame around them.
            b.iter(|| {
                let actions = build();
                out.clear();
                proto::encode_ack(black_box(1_234_567), black_box(1), &actions, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// Answers every NOTIFY at once with fixed actions.
struct Fixed(Actions);

impl Handler for Fixed {
    async fn handle(&self, _request: Request) -> Result<Actions, HandlerError> {
        Ok(self.0.clone())
    }

    fn on_failure(&self, _failure: Failure) -> Actions {
        Actions::new()
    }
}

/// The HAProxy end of one in-memory connection, after the HELLO.
struct Pipe {
    stream: DuplexStream,
    buf: Vec<u8>,
}

impl Pipe {
    async fn open(handler: Fixed) -> Self {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            let (rd, wr) = tokio::io::split(theirs);
            let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
            let shutdown = CancellationToken::new();
            serve_connection(rd, wr, &handler, &Limits::default(), &metrics, &shutdown).await
        });
        let mut pipe = Self {
            stream: ours,
            buf: Vec::with_capacity(256 * 1024),
        };
        pipe.stream
            .write_all(&peer::hello(MAX_FRAME, "pipelining,async", false))
            .await
            .expect("send HELLO");
        assert_eq!(pipe.frames(1).await, AGENT_HELLO);
        pipe
    }

    /// Reads `n` agent frames, returning the type of the last. Only the length prefixes
    /// are walked, so the peer's share of the time stays small.
    async fn frames(&mut self, mut n: usize) -> u8 {
        let mut last = 0;
        let mut at = 0;
        while n > 0 {
            if let Some(prefix) = self.buf.get(at..at + 4) {
                let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                let end = at + 4 + len as usize;
                if end <= self.buf.len() {
                    last = self.buf[at + 4];
                    at = end;
                    n -= 1;
                    continue;
                }
            }
            self.buf.drain(..at);
            at = 0;
            let read = self.stream.read_buf(&mut self.buf).await.expect("read");
            assert!(read > 0, "the agent closed the connection");
        }
        self.buf.drain(..at);
        last
    }

    /// Sends `frames` (`count` NOTIFYs back to back) and waits for every ACK.
    async fn round_trip(&mut self, frames: &[u8], count: usize) {
        self.stream.write_all(frames).await.expect("send NOTIFYs");
        assert_eq!(self.frames(count).await, ACK);
    }
}

/// NOTIFY -> handler -> ACK through `serve_connection` on a single-threaded runtime. The
/// peer's writes and its walk over the ACKs run on the same thread and are included.
fn notify_to_ack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut pipe = rt.block_on(Pipe::open(Fixed(allow())));
    let cookie = cookie();
    let mut g = c.benchmark_group("notify_to_ack");
    for (name, count) in [("in_process", BATCH), ("in_process_single", 1)] {
        let frames: Vec<u8> = (0..count as u64)
            .flat_map(|i| keyward_request(1_000 + i, 1, &cookie))
            .collect();
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        pipe.round_trip(&frames, count).await;
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode, notify_to_ack);
criterion_main!(benches);
