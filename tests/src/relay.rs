//! A loopback TCP relay whose connections can be made to go silent: as when a firewall
//! or a NAT drops a connection's state, or a database fails over to another address,
//! and the packets of the connections that were open go nowhere while neither end is
//! told. New connections through the relay are carried as before.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug)]
pub struct Relay {
    /// Where clients connect instead of the target.
    pub addr: SocketAddr,
    /// Connections accepted so far (each is numbered from 1 in the order accepted).
    accepted: Arc<AtomicU64>,
    /// Connections numbered up to this one carry nothing any more.
    silenced: watch::Sender<u64>,
    _tasks: JoinSet<()>,
}

impl Relay {
    /// A relay on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let accepted = Arc::new(AtomicU64::new(0));
        let (silenced, watching) = watch::channel(0);
        let mut tasks = JoinSet::new();
        let count = accepted.clone();
        tasks.spawn(async move {
            // The connections' tasks live as long as the relay: a silenced connection
            // stays open, it only stops carrying bytes.
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                conns.spawn(carry(cr, sw, n, watching.clone()));
                conns.spawn(carry(sr, cw, n, watching.clone()));
            }
        });
        Self {
            addr,
            accepted,
            silenced,
            _tasks: tasks,
        }
    }

    /// Every connection open now stops carrying bytes, both ways, and stays open.
    /// Returns how many connections that silenced (all accepted so far).
    pub fn silence_open(&self) -> u64 {
        let upto = self.accepted.load(Ordering::SeqCst);
        self.silenced.send_replace(upto);
        upto
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either end closes, or until connection `n` is
/// silenced; then holds both ends open and reads nothing more.
async fn carry(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    n: u64,
    mut silenced: watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *silenced.borrow_and_update() >= n {
            // Neither end is told: no FIN, no RST, no byte.
            std::future::pending::<()>().await;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(len) => {
                    if *silenced.borrow() >= n {
                        continue;
                    }
                    if to.write_all(&buf[..len]).await.is_err() {
                        return;
                    }
                }
            },
            changed = silenced.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
