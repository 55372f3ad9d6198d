//! A client of HAProxy's runtime API (the `stats socket`), in interactive mode: one
//! connection carries a pass's commands, so that confirming a stream and shutting it
//! down follow each other on one connection, with no reconnection in between. Every
//! command is bounded in time and in the size of its answer, and answers are checked
//! for what HAProxy's CLI says when it refuses one.

use std::time::Duration;

use keyward_config::ApiAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest one command may take (connecting included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read (`show sess` is ~250 bytes a stream: some 250,000 streams).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// What HAProxy prints after each answer in interactive mode.
const PROMPT: &[u8] = b"\n> ";

/// Why a command got no usable answer.
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
    #[error("HAProxy's runtime API at {addr} closed the connection during `{command}`")]
    Closed { addr: String, command: &'static str },
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
    #[error(
        "`{command}` got an answer that is not HAProxy's runtime API at level admin ({answer:?}); check that `tunnels.haproxy_api` is the `stats socket` of the HAProxy this agent serves (not the master CLI)"
    )]
    Unexpected {
        command: &'static str,
        answer: String,
    },
}

impl ApiError {
    /// An [`ApiError::Unexpected`] quoting the start of `answer`.
    pub fn unexpected(command: &'static str, answer: &str) -> Self {
        ApiError::Unexpected {
            command,
            answer: answer.chars().take(120).collect(),
        }
    }
}

/// HAProxy's runtime API at one address.
#[derive(Debug, Clone)]
pub struct Api {
    addr: ApiAddr,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One interactive connection to the API.
pub struct Cli {
    io: Box<dyn Io>,
    addr: String,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli").field("addr", &self.addr).finish()
    }
}

impl Api {
    pub fn new(addr: ApiAddr) -> Self {
        Self { addr }
    }

    pub fn addr(&self) -> &ApiAddr {
        &self.addr
    }

    /// Connects and switches to interactive mode (`prompt`).
    pub async fn connect(&self) -> Result<Cli, ApiError> {
        let addr = self.addr.to_string();
        let connect = async {
            let connected: std::io::Result<Box<dyn Io>> = match &self.addr {
                ApiAddr::Unix(path) => tokio::net::UnixStream::connect(path)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Io>),
                ApiAddr::Tcp(a) => tokio::net::TcpStream::connect(a)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Io>),
            };
            connected.map_err(|source| ApiError::Connect {
                addr: addr.clone(),
                source,
            })
        };
        let io = tokio::time::timeout(COMMAND_TIMEOUT, connect)
            .await
            .map_err(|_| ApiError::Timeout {
                addr: addr.clone(),
                command: "connect",
            })??;
        let mut cli = Cli {
            io,
            addr,
            buf: Vec::new(),
        };
        let hello = cli.run("prompt", "prompt").await?;
        if !hello.trim().is_empty() {
            return Err(ApiError::unexpected("prompt", &hello));
        }
        Ok(cli)
    }
}

impl Cli {
    /// Runs one command line (`name` names it in errors) and returns its answer,
    /// without the prompt that ends it.
    pub async fn run(&mut self, name: &'static str, line: &str) -> Result<String, ApiError> {
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, self.exchange(name, line))
            .await
            .map_err(|_| ApiError::Timeout {
                addr: self.addr.clone(),
                command: name,
            })??;
        if answer.starts_with("Permission denied") {
            return Err(ApiError::Denied { command: name });
        }
        Ok(answer)
    }

    async fn exchange(&mut self, command: &'static str, line: &str) -> Result<String, ApiError> {
        let io_err = |addr: &str, source| ApiError::Io {
            addr: addr.to_owned(),
            command,
            source,
        };
        self.io
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| io_err(&self.addr, e))?;
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        while !self.buf.ends_with(PROMPT) {
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|e| io_err(&self.addr, e))?;
            if n == 0 {
                return Err(ApiError::Closed {
                    addr: self.addr.clone(),
                    command,
                });
            }
            if self.buf.len() + n > MAX_ANSWER {
                return Err(ApiError::TooLong {
                    addr: self.addr.clone(),
                    command,
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let answer = &self.buf[..self.buf.len() - PROMPT.len()];
        Ok(String::from_utf8_lossy(answer).into_owned())
    }

    /// `show sess`: every stream, one line each. The CLI's own stream is always among
    /// them, so an answer without any stream line is not HAProxy's.
    pub async fn list_streams(&mut self) -> Result<String, ApiError> {
        let answer = self.run("show sess", "show sess").await?;
        if crate::sess::parse_list(&answer).next().is_none() {
            return Err(ApiError::unexpected("show sess", &answer));
        }
        Ok(answer)
    }

    /// `show sess <ptr>`: one stream in detail (`Session not found.` when it is gone).
    pub async fn stream(&mut self, ptr: &str) -> Result<String, ApiError> {
        self.run("show sess <ptr>", &format!("show sess {ptr}"))
            .await
    }

    /// Whether this connection may shut streams down (level admin), without touching
    /// any: `shutdown session 0` is refused for the level first, then for the pointer.
    pub async fn check_admin(&mut self) -> Result<(), ApiError> {
        let answer = self.run("shutdown session", "shutdown session 0").await?;
        if answer.starts_with("Session pointer expected") {
            Ok(())
        } else {
            Err(ApiError::unexpected("shutdown session 0", &answer))
        }
    }

    /// `shutdown session <ptr>`: `true` when HAProxy took it (it answers nothing),
    /// `false` when the stream was already gone.
    pub async fn shutdown(&mut self, ptr: &str) -> Result<bool, ApiError> {
        let answer = self
            .run("shutdown session", &format!("shutdown session {ptr}"))
            .await?;
        if answer.trim().is_empty() {
            Ok(true)
        } else if answer.starts_with("No such session") {
            Ok(false)
        } else {
            Err(ApiError::unexpected("shutdown session", &answer))
        }
    }
}
