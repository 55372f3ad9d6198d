//! Tunnels opened with a session: WebSocket (and any other `Upgrade`) handshakes that
//! were allowed.
//!
//! After the application's `101`, HAProxy only moves bytes: no request follows, so no
//! decision does either, and a revoked or expired session would keep its tunnel for as
//! long as it stays busy. The shipped configuration therefore sends upgrade requests
//! (and CONNECT) as message `keyward-upgrade`: `keyward-request`'s arguments plus the
//! HAProxy stream that carries the tunnel, its `uniq_id` (log-format `%rt`) and the
//! client connection's address. The gate remembers the
//! stream with its session here; the agent's reaper (crate `keyward-tunnels`) asks which
//! are [`due`](Tunnels::due) and ends them over HAProxy's runtime API.
//!
//! No IO: the clock, the revocations and the key ring come in as parameters. The table
//! is bounded ([`Tunnels::new`]): a tunnel that could not be remembered could not be
//! ended, so past the bound the upgrade is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use keyward_session::KeyRing;
use keyward_spoa::{ArgError, Request};
use keyward_store::Revocations;

use crate::cache::Session;

/// Name of the SPOE message the shipped configuration sends for upgrade requests
/// instead of `keyward-request` (HAProxy lets a message belong to one group only).
pub const MESSAGE: &str = "keyward-upgrade";

/// One HAProxy stream, as its runtime API shows it: `id=` (the stream's `uniq_id`,
/// log-format `%rt`) and `source=` (the address and port of the client connection, which
/// `http-request set-src` does not change). The id alone is per process and wraps; with
/// the connection's address a stale entry cannot name another client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamRef {
    pub id: u32,
    pub client: SocketAddr,
}

/// The `keyward-upgrade` message is not what the shipped configuration sends.
#[derive(Debug, thiserror::Error)]
pub enum TunnelArgError {
    #[error("`{MESSAGE}`: argument `stream` must be the decimal `%rt` of the stream")]
    Stream,
    #[error(
        "`{MESSAGE}`: arguments `conn_src` and `conn_port` must be the client connection's address and port (`fc_src`, `fc_src_port`); a Unix-socket `bind` has none, so its tunnels cannot be ended: set `[tunnels] enabled = false` or bind to TCP"
    )]
    Connection,
    #[error(transparent)]
    Arg(#[from] ArgError),
}

impl StreamRef {
    /// The stream named by the NOTIFY's `keyward-upgrade` message (`None`: the request
    /// is not an upgrade).
    pub fn from_spoe(req: &Request) -> Result<Option<Self>, TunnelArgError> {
        let Some(m) = req.message(MESSAGE) else {
            return Ok(None);
        };
        let id = m
            .str("stream")?
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or(TunnelArgError::Stream)?;
        let ip = m.ip("conn_src")?.ok_or(TunnelArgError::Connection)?;
        let port = m
            .int("conn_port")?
            .and_then(|p| u16::try_from(p).ok())
            .ok_or(TunnelArgError::Connection)?;
        Ok(Some(Self {
            id,
            client: SocketAddr::new(ip, port),
        }))
    }
}

/// Why a tunnel is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Why {
    /// Its session, user or device was revoked.
    Revoked,
    /// Its session expired.
    Expired,
    /// The key that sealed its session token was retired from the ring.
    KeyRetired,
}

impl Why {
    pub const ALL: [Why; 3] = [Why::Revoked, Why::Expired, Why::KeyRetired];

    pub fn as_str(self) -> &'static str {
        match self {
            Why::Revoked => "revoked",
            Why::Expired => "expired",
            Why::KeyRetired => "key_retired",
        }
    }
}

/// A tunnel to end, and why.
#[derive(Debug, Clone)]
pub struct Due {
    pub stream: StreamRef,
    pub session: Arc<Session>,
    pub why: Why,
}

/// The most tunnels one session may hold at once. Any allowed request with an `Upgrade`
/// header is remembered until the reaper finds its stream gone (whether or not the
/// application switched protocols), so without this one session could fill the table.
pub const MAX_PER_SESSION: u32 = 64;

/// Why a tunnel was not remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `tunnels.max_tracked` are open.
    Table,
    /// The session holds [`MAX_PER_SESSION`].
    Session,
}

impl Full {
    pub fn as_str(self) -> &'static str {
        match self {
            Full::Table => "table_full",
            Full::Session => "session_full",
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    by_stream: HashMap<StreamRef, Arc<Session>>,
    /// Tunnels per session id.
    per_session: HashMap<Box<str>, u32>,
}

impl Open {
    fn remove(&mut self, stream: &StreamRef) {
        if let Some(s) = self.by_stream.remove(stream) {
            let sid = s.claims.sid.as_str();
            if let Some(n) = self.per_session.get_mut(sid) {
                *n -= 1;
                if *n == 0 {
                    self.per_session.remove(sid);
                }
            }
        }
    }
}

/// The open tunnels this agent allowed, by stream.
#[derive(Debug)]
pub struct Tunnels {
    max: usize,
    open: Mutex<Open>,
}

impl Tunnels {
    /// A table of at most `max` tunnels.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(Open::default()),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that `stream` carries `session`; refused when the table, or the
    /// session's share of it, is full (the upgrade must then be refused: its tunnel
    /// could not be ended). A stream seen again (its id reused after a HAProxy
    /// restart) is replaced.
    pub fn track(&self, stream: StreamRef, session: Arc<Session>) -> Result<(), Full> {
        let mut open = self.open();
        open.remove(&stream);
        if open.by_stream.len() >= self.max {
            return Err(Full::Table);
        }
        let sid = session.claims.sid.as_str();
        let n = open.per_session.get(sid).copied().unwrap_or(0);
        if n >= MAX_PER_SESSION {
            return Err(Full::Session);
        }
        open.per_session.insert(sid.into(), n + 1);
        open.by_stream.insert(stream, session);
        Ok(())
    }

    /// The tunnels whose session must no longer pass at `now` (unix seconds): revoked,
    /// expired past `leeway` seconds, or sealed by a key `ring` no longer trusts.
    pub fn due(
        &self,
        revocations: &Revocations,
        ring: &KeyRing,
        generation: u64,
        leeway: i64,
        now: i64,
    ) -> Vec<Due> {
        self.open()
            .by_stream
            .iter()
            .filter_map(|(stream, session)| {
                let why = if revocations.is_revoked(&session.claims) {
                    Why::Revoked
                } else if now > session.claims.exp.saturating_add(leeway) {
                    Why::Expired
                } else if !session.trusted_under(ring, generation) {
                    Why::KeyRetired
                } else {
                    return None;
                };
                Some(Due {
                    stream: *stream,
                    session: session.clone(),
                    why,
                })
            })
            .collect()
    }

    /// Forgets `stream` (ended, or found gone).
    pub fn forget(&self, stream: &StreamRef) {
        self.open().remove(stream);
    }

    /// Keeps only the tunnels `keep` says are still open.
    pub fn retain(&self, mut keep: impl FnMut(&StreamRef) -> bool) {
        let mut open = self.open();
        let gone: Vec<StreamRef> = open
            .by_stream
            .keys()
            .filter(|s| !keep(s))
            .copied()
            .collect();
        for s in &gone {
            open.remove(s);
        }
    }

    /// Whether the table, or one session's share of it, is full: then stale entries
    /// (upgrades the application refused, tunnels closed on a connection that stays
    /// open) are worth looking for at every check.
    pub fn crowded(&self) -> bool {
        let open = self.open();
        open.by_stream.len() >= self.max || open.per_session.values().any(|&n| n >= MAX_PER_SESSION)
    }

    /// The streams remembered.
    pub fn streams(&self) -> Vec<StreamRef> {
        self.open().by_stream.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.open().by_stream.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
