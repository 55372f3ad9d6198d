//! Listeners (TCP and Unix socket), the accept loops, connection caps and graceful
//! shutdown. Each connection gets one task and one tracing span.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Limits;
use crate::conn::serve_connection;
use crate::handler::Handler;
use crate::metrics::Metrics;

/// Where to listen: `127.0.0.1:12345`, `[::1]:12345` or `unix:/run/keyward/spoa.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path, e.g. unix:/run/keyward/spoa.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
            format!("`{s}` is neither IP:PORT (127.0.0.1:12345) nor unix:/path/to.sock")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`. A Unix socket path left over from an earlier run is replaced, and
    /// the new socket is made readable and writable by owner and group only.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Self::Tcp(TcpListener::bind(a).await?)),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(Self::Unix(listener, path.clone()))
            }
        }
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Self::Unix(_, p) => Ok(ListenAddr::Unix(p.clone())),
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The SPOA server: one handler, limits that can be swapped at run time, metrics.
#[derive(Debug)]
pub struct Server<H> {
    handler: Arc<H>,
    limits: Arc<ArcSwap<Limits>>,
    metrics: Metrics,
    active: Arc<AtomicUsize>,
}

/// A connection's place under `max_connections`, released on drop.
struct Slot<'a, H>(&'a Server<H>);

impl<H> Drop for Slot<'_, H> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.connections_active.dec();
    }
}

/// Changes the limits of a running server; new connections use them.
#[derive(Debug, Clone)]
pub struct LimitsHandle(Arc<ArcSwap<Limits>>);

impl LimitsHandle {
    pub fn store(&self, limits: Limits) {
        self.0.store(Arc::new(limits));
    }
    pub fn load(&self) -> Limits {
        **self.0.load()
    }
}

impl<H: Handler> Server<H> {
    pub fn new(handler: Arc<H>, limits: Limits, metrics: Metrics) -> Self {
        Self {
            handler,
            limits: Arc::new(ArcSwap::from_pointee(limits)),
            metrics,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn limits(&self) -> LimitsHandle {
        LimitsHandle(self.limits.clone())
    }

    /// Serves all `listeners` until `shutdown` is cancelled, then stops accepting, lets
    /// every connection finish the requests it has in flight and disconnect cleanly, and
    /// returns once they have, or after `drain_timeout` at the latest.
    pub async fn run(self, listeners: Vec<Listener>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let server = Arc::new(self);
        let ids = Arc::new(AtomicU64::new(0));
        for listener in listeners {
            let server = server.clone();
            let tracker2 = tracker.clone();
            let shutdown = shutdown.clone();
            let ids = ids.clone();
            tracker
                .spawn(async move { server.accept_loop(listener, tracker2, shutdown, ids).await });
        }
        shutdown.cancelled().await;
        tracker.close();
        let drain = server.limits.load().drain_timeout;
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!(
                ?drain,
                "connections still open after the drain timeout; closing them"
            );
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: Listener,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        ids: Arc<AtomicU64>,
    ) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                a = accept(&listener) => a,
            };
            match accepted {
                Ok((conn, peer)) => {
                    let limits = **self.limits.load();
                    if self.active.load(Ordering::Relaxed) >= limits.max_connections {
                        self.metrics.connections_rejected.inc();
                        tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; closing new connection");
                        drop(conn);
                        continue;
                    }
                    self.active.fetch_add(1, Ordering::Relaxed);
                    self.metrics.connections_accepted.inc();
                    self.metrics.connections_active.inc();
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!("spop", conn = id, %peer);
                    let server = self.clone();
                    let shutdown = shutdown.clone();
                    tracker.spawn(
                        async move {
                            // Given back however the task ends, a panic included.
                            let _slot = Slot(&server);
                            let end = match conn {
                                Conn::Tcp(s) => {
                                    let (r, w) = s.into_split();
                                    server.serve(r, w, &limits, &shutdown).await
                                }
                                Conn::Unix(s) => {
                                    let (r, w) = s.into_split();
                                    server.serve(r, w, &limits, &shutdown).await
                                }
                            };
                            tracing::debug!(?end, "connection closed");
                        }
                        .instrument(span),
                    );
                }
                Err(err) => {
                    // Out of file descriptors and similar: back off rather than spin.
                    tracing::error!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Listener::Unix(_, path) = &listener {
            let _ = std::fs::remove_file(path);
        }
    }

    async fn serve<R, W>(
        &self,
        r: R,
        w: W,
        limits: &Limits,
        shutdown: &CancellationToken,
    ) -> crate::End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        serve_connection(r, w, self.handler.as_ref(), limits, &self.metrics, shutdown).await
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<(Conn, String)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // ACKs are small and latency-bound.
            s.set_nodelay(true)?;
            Ok((Conn::Tcp(s), peer.to_string()))
        }
        Listener::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            Ok((Conn::Unix(s), format!("unix:{}", path.display())))
        }
    }
}
