//! The protected application: answers every request with 200 and a body listing the
//! request line and every header it received, one `name: value` per line. Upgrade
//! requests (WebSocket) get `101 Switching Protocols` and then echo bytes; an h2c upgrade
//! gets a 101 and the connection goes on serving requests, as an h2c server would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests that reached the application.
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request per connection is enough for these tests, but
                        // HAProxy may reuse the connection: serve until it closes.
                        let head_end = loop {
                            if let Some(i) = find(&buf, b"\r\n\r\n") {
                                break i;
                            }
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                        buf.drain(..head_end + 4);
                        counter.fetch_add(1, Ordering::SeqCst);
                        if offers_h2c(&head) {
                            // An h2c-capable server switches and then answers whatever
                            // arrives on the connection; HTTP/1.1 stands in for the h2
                            // frames here. A proxy that forwards this has handed the
                            // client an unchecked tunnel.
                            let resp = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let upgrade = head
                            .lines()
                            .any(|l| l.to_ascii_lowercase().starts_with("upgrade: websocket"));
                        if upgrade {
                            let key = head
                                .lines()
                                .find_map(|l| {
                                    let (n, v) = l.split_once(':')?;
                                    n.eq_ignore_ascii_case("sec-websocket-key")
                                        .then(|| v.trim().to_owned())
                                })
                                .unwrap_or_default();
                            let resp = format!(
                                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                                websocket_accept(&key)
                            );
                            let _ = s.write_all(resp.as_bytes()).await;
                            let (mut r, mut w) = s.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            return;
                        }
                        let body = head.replace("\r\n", "\n") + "\n";
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, hits, task }
    }
}

/// Whether a request head carries `Upgrade: h2c` (RFC 7540 3.2), in any case, alone or
/// in a list.
fn offers_h2c(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case("upgrade")
                && v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c"))
        })
    })
}

/// RFC 6455 4.2.2: base64(SHA-1(key + GUID)).
fn websocket_accept(key: &str) -> String {
    use base64ct::Encoding;
    use sha1::Digest;
    let digest =
        sha1::Sha1::digest(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    base64ct::Base64::encode_string(&digest)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
