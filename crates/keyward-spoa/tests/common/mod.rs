//! A raw SPOP peer and a configurable test handler for the protocol tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keyward_spoa::peer::{self, AgentFrame};
use keyward_spoa::{
    Actions, CancellationToken, Failure, Handler, HandlerError, Limits, ListenAddr, Listener,
    Metrics, Request, Server, TypedData,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Behaviour chosen per request by the `mode` argument:
/// `echo` (default) sets `echo` to the `v` argument; `error`, `panic`, `sleep` (for `ms`
/// milliseconds, then echo), `block` (until released), `big` (an answer too large).
#[derive(Debug)]
pub struct TestHandler {
    pub started: AtomicUsize,
    pub gate: Arc<Semaphore>,
}

impl TestHandler {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: AtomicUsize::new(0),
            gate: Arc::new(Semaphore::new(0)),
        })
    }
}

impl Handler for TestHandler {
    async fn handle(&self, req: Request) -> Result<Actions, HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let msg = req.message("check").ok_or("no `check` message")?;
        let mode = msg.str("mode")?.unwrap_or("echo").to_owned();
        let v = msg.str("v")?.unwrap_or("").to_owned();
        match mode.as_str() {
            "error" => return Err("asked to fail".into()),
            "panic" => panic!("asked to panic"),
            "sleep" => {
                let ms = msg.int("ms")?.unwrap_or(10);
                tokio::time::sleep(Duration::from_millis(ms as u64)).await;
            }
            "block" => {
                self.gate
                    .acquire()
                    .await
                    .map_err(|e| e.to_string())?
                    .forget();
            }
            "big" => {
                let mut a = Actions::new();
                a.set_txn("big", "x".repeat(100_000));
                return Ok(a);
            }
            _ => {}
        }
        let mut a = Actions::new();
        a.set_txn("echo", v);
        Ok(a)
    }

    fn on_failure(&self, failure: Failure) -> Actions {
        let mut a = Actions::new();
        a.set_txn("reason", "error")
            .set_txn("failure", failure.as_str());
        a
    }
}

#[derive(Debug)]
pub struct Agent {
    pub addr: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub handler: Arc<TestHandler>,
    pub metrics: Metrics,
}

pub async fn start(limits: Limits) -> Agent {
    let handler = TestHandler::new();
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let Ok(ListenAddr::Tcp(addr)) = listener.local_addr() else {
        panic!()
    };
    let server = Server::new(handler.clone(), limits, metrics.clone());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(vec![listener], shutdown.clone()));
    Agent {
        addr,
        shutdown,
        task,
        handler,
        metrics,
    }
}

/// The HAProxy end of one connection.
#[derive(Debug)]
pub struct Peer {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub const WAIT: Duration = Duration::from_secs(5);

impl Peer {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes a HELLO, returning the agent's answer.
    pub async fn handshake(addr: std::net::SocketAddr) -> Self {
        let mut p = Self::connect(addr).await;
        p.send(&peer::hello(16_380, "pipelining,async", false))
            .await;
        assert!(matches!(p.recv().await, AgentFrame::Hello { .. }));
        p
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next agent frame; fails the test after 5 s.
    pub async fn recv(&mut self) -> AgentFrame {
        tokio::time::timeout(WAIT, self.try_recv())
            .await
            .expect("no frame within 5 s")
            .expect("connection closed")
    }

    /// The next frame, or `None` at end of stream.
    pub async fn try_recv(&mut self) -> Option<AgentFrame> {
        loop {
            if let Some((frame, fin, used)) = peer::read(&self.buf).unwrap() {
                assert!(fin, "agent frames must carry FIN");
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Asserts the agent closes the connection (after any frames still queued).
    pub async fn expect_closed(&mut self) {
        let next = tokio::time::timeout(WAIT, self.try_recv())
            .await
            .expect("connection not closed within 5 s");
        assert_eq!(next, None, "expected the connection to close");
    }

    /// Expects AGENT-DISCONNECT with `status`, then the close.
    pub async fn expect_disconnect(&mut self, status: u32) -> String {
        match self.recv().await {
            AgentFrame::Disconnect { status: s, message } => {
                assert_eq!(s, status, "disconnect status (message: {message})");
                self.expect_closed().await;
                message
            }
            other => panic!("expected AGENT-DISCONNECT {status}, got {other:?}"),
        }
    }
}

pub fn echo(stream_id: u64, frame_id: u64, v: &str) -> Vec<u8> {
    peer::notify(
        stream_id,
        frame_id,
        "check",
        &[("v", TypedData::String(v.into()))],
    )
}

pub fn with_mode(stream_id: u64, mode: &str, extra: &[(&str, TypedData)]) -> Vec<u8> {
    let mut args = vec![("mode", TypedData::String(mode.into()))];
    args.extend(extra.iter().cloned());
    peer::notify(stream_id, 1, "check", &args)
}

pub fn text(v: &TypedData) -> &str {
    match v {
        TypedData::String(s) => s,
        other => panic!("not text: {other:?}"),
    }
}
