//! A client of HAProxy's runtime API (the `stats socket`): one command per connection,
//! the answer read to the end (HAProxy closes a non-interactive connection after it).
//! Every command is bounded in time and in the size of its answer.

use std::time::Duration;

use keyward_config::ApiAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest a command may take, connection included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read (`show sess` is ~250 bytes a stream: some 250,000 streams).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why a command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot reach HAProxy's runtime API at {addr}: {source}; check `tunnels.haproxy_api` against the `stats socket` line of haproxy.cfg"
    )]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HAProxy's runtime API at {addr} failed during `{command}`: {source}")]
    Io {
        addr: String,
        command: &'static str,
        source: std::io::Error,
    },
    #[error(
        "HAProxy's runtime API at {addr} did not answer `{command}` within {COMMAND_TIMEOUT:?}"
    )]
    Timeout { addr: String, command: &'static str },
    #[error(
        "HAProxy's runtime API at {addr} answered `{command}` with more than {MAX_ANSWER} bytes"
    )]
    TooLong { addr: String, command: &'static str },
    #[error(
        "HAProxy refused `{command}`: permission denied; the `stats socket` needs `level admin`"
    )]
    Denied { command: &'static str },
}

/// HAProxy's runtime API at one address.
#[derive(Debug, Clone)]
pub struct Api {
    addr: ApiAddr,
}

impl Api {
    pub fn new(addr: ApiAddr) -> Self {
        Self { addr }
    }

    pub fn addr(&self) -> &ApiAddr {
        &self.addr
    }

    /// Runs `line` (one command; `name` names it in errors) and returns the answer.
    pub async fn command(&self, name: &'static str, line: &str) -> Result<String, ApiError> {
        let addr = self.addr.to_string();
        let run = async {
            match &self.addr {
                ApiAddr::Unix(path) => {
                    let s = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|source| ApiError::Connect {
                            addr: addr.clone(),
                            source,
                        })?;
                    exchange(s, name, line, &addr).await
                }
                ApiAddr::Tcp(a) => {
                    let s = tokio::net::TcpStream::connect(a).await.map_err(|source| {
                        ApiError::Connect {
                            addr: addr.clone(),
                            source,
                        }
                    })?;
                    exchange(s, name, line, &addr).await
                }
            }
        };
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, run)
            .await
            .map_err(|_| ApiError::Timeout {
                addr: addr.clone(),
                command: name,
            })??;
        if answer.starts_with("Permission denied") {
            return Err(ApiError::Denied { command: name });
        }
        Ok(answer)
    }

    /// `show sess`: every stream, one line each.
    pub async fn list_streams(&self) -> Result<String, ApiError> {
        self.command("show sess", "show sess").await
    }

    /// `show sess <ptr>`: one stream in detail.
    pub async fn stream(&self, ptr: &str) -> Result<String, ApiError> {
        self.command("show sess <ptr>", &format!("show sess {ptr}"))
            .await
    }

    /// `shutdown session <ptr>`: `true` when HAProxy took it, `false` when the stream
    /// was already gone.
    pub async fn shutdown(&self, ptr: &str) -> Result<bool, ApiError> {
        let answer = self
            .command("shutdown session", &format!("shutdown session {ptr}"))
            .await?;
        Ok(!answer.contains("No such session"))
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    command: &'static str,
    line: &str,
    addr: &str,
) -> Result<String, ApiError> {
    let io = |source| ApiError::Io {
        addr: addr.to_owned(),
        command,
        source,
    };
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(io)?;
    let mut answer = Vec::new();
    let mut limited = (&mut s).take(MAX_ANSWER as u64 + 1);
    limited.read_to_end(&mut answer).await.map_err(io)?;
    if answer.len() > MAX_ANSWER {
        return Err(ApiError::TooLong {
            addr: addr.to_owned(),
            command,
        });
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
