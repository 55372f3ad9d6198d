//! Harness for end-to-end tests: free loopback ports, processes that are killed when
//! dropped, HAProxy started from the shipped configs in `haproxy/`, a minimal HTTP/1.1
//! client, an upstream that echoes the headers it received, and client load loops.

pub mod haproxy;
pub mod http;
pub mod keyward;
pub mod load;
pub mod oidc;
pub mod postgres;
pub mod process;
pub mod relay;
pub mod stack;
pub mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The `keyward` binary of this build (`target/<profile>/keyward`). `cargo test
/// --workspace --all-targets` builds it along with the tests.
pub fn keyward_bin() -> PathBuf {
    let bin = sibling_bin("keyward");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p keyward` (or `just test`) first",
        bin.display()
    );
    bin
}

/// A binary of this build next to the running executable: `target/<profile>/<name>`,
/// whether we are a test (in `deps/`) or a binary ourselves.
pub fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let dir = if dir.ends_with("deps") {
        dir.parent().map(PathBuf::from).unwrap_or_default()
    } else {
        dir
    };
    dir.join(name)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, what: &str) {
    eventually(Duration::from_secs(10), what, || async move {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
}
