//! keyward's durable state behind one interface.
//!
//! SQLite is the embedded default (one file, WAL, `synchronous=FULL`: a committed write
//! survives a crash). PostgreSQL is the shared store of many nodes: every agent reads
//! the same revocation log, and a committed revocation wakes them all at once
//! (LISTEN/NOTIFY, [`Store::wakeups`]) with polling as the fallback. Both backends run
//! the same SQL (`$1` placeholders; standard statements both accept) against schemas
//! kept column for column alike (`migrations/sqlite`, `migrations/postgres`).
//! Sessions themselves are stateless tokens and are never stored.

mod ceremonies;
pub mod revocation;
pub mod users;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Decode, Row, Type};

pub use ceremonies::{CeremonyLimits, Put};
pub use revocation::{Kind, Revocation, Revocations};
pub use users::{Conflict, Device, Invite, NewDevice, NewUser, Source, Touch, User};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`store.url`: {0}")]
    Url(String),
    #[error("cannot open the store at {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("migrating the store schema failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("unknown revocation kind `{0}` in the store")]
    BadKind(String),
    #[error("the store holds an impossible value: {0}")]
    Corrupt(String),
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("the store connection listening for revocations was lost")]
    ListenerLost,
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
}

/// The store. One variant per backend; all share the same operations.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$pool` bound to that backend's pool: the body is
/// written once and compiled for each (sqlx infers the database from the executor).
/// The whole operation is bounded by [`OPERATION_TIMEOUT`]; `?` in the body ends the
/// operation, and the macro's value is the body's.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        $crate::bounded(async {
            Ok::<_, $crate::StoreError>(match $store {
                $crate::Store::Sqlite($pool) => $body,
                $crate::Store::Postgres($pool) => $body,
            })
        })
        .await?
    };
}

/// How long one store operation may take, end to end (acquiring a connection and every
/// statement), before it fails with [`StoreError::Timeout`]. The server bounds each
/// slow statement (`statement_timeout`); this bounds a connection that died without a
/// word (a firewall that dropped its state, a failover to another address), whose
/// answer never comes and which the kernel gives up on only after some fifteen minutes.
/// An operation cut off while its COMMIT was on the way may have committed: every
/// operation is safe to retry (a revocation made twice is one revocation; an enrollment
/// whose invite was used says so).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a pooled connection has to answer a ping before it is closed and another
/// made: sqlx pings a connection before lending it and after it comes back, and waits
/// on its own without a bound.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `op`, failed with [`StoreError::Timeout`] after [`OPERATION_TIMEOUT`].
pub(crate) async fn bounded<T>(
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, op)
        .await
        .map_err(|_| StoreError::Timeout(OPERATION_TIMEOUT))?
}

/// Whether a pooled connection answers a ping within [`PING_TIMEOUT`]; an error closes
/// it at once, without the goodbye a silent connection would never carry.
async fn answers(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    match tokio::time::timeout(PING_TIMEOUT, conn.ping()).await {
        Ok(pinged) => pinged.map(|()| true),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the connection did not answer a ping within {PING_TIMEOUT:?}"),
        ))),
    }
}
pub(crate) use on_pool;

/// The schema migrations of a backend. Migrations only ever add (tables, columns with
/// defaults), and a migration this build does not know is not an error: during a
/// rolling upgrade, or after a rollback, an older node keeps working on a store a
/// newer one has migrated.
macro_rules! migrator {
    ($dir:literal) => {{
        let mut m = sqlx::migrate!($dir);
        m.set_ignore_missing(true);
        m
    }};
}

/// Reading a column of either backend's rows, for values both backends decode.
pub(crate) trait Field {
    fn field<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>;
}

impl Field for SqliteRow {
    fn field<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>,
    {
        self.try_get(column)
    }
}

impl Field for PgRow {
    fn field<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>,
    {
        self.try_get(column)
    }
}

/// The channel a committed revocation is announced on (see migrations/postgres).
const REVOCATIONS_CHANNEL: &str = "keyward_revocations";
/// The advisory lock revocation writers queue on ("keyward" in ASCII).
const REVOCATION_WRITERS_LOCK: i64 = 0x006b_6579_7761_7264;
/// The channel heartbeats are announced on ([`Store::heartbeat`]). Payloads are never
/// read: any role may NOTIFY anything, and the channel alone says what woke us.
const HEARTBEAT_CHANNEL: &str = "keyward_heartbeat";

const STORE_URL_EXAMPLES: &str =
    "e.g. sqlite:///var/lib/keyward/keyward.db or postgres://keyward@db.internal/keyward";

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up to date.
    /// `sqlite:///var/lib/keyward/keyward.db`, `sqlite::memory:` (tests), or
    /// `postgres://user:password@host:5432/database?sslmode=verify-full`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| {
                    StoreError::Url(format!(
                        "`{url}` is not a SQLite URL ({e}); {STORE_URL_EXAMPLES}"
                    ))
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(|source| StoreError::Open {
                    url: url.to_owned(),
                    source,
                })?;
            migrator!("./migrations/sqlite").run(&pool).await?;
            return Ok(Store::Sqlite(pool));
        }
        if is_postgres_url(url) {
            let shown = redact_url(url);
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| {
                    StoreError::Url(format!(
                        "`{shown}` is not a PostgreSQL URL ({e}); {STORE_URL_EXAMPLES}"
                    ))
                })?
                .application_name("keyward")
                // The server ends any statement that runs this long (a lock held by a
                // stuck writer, say) instead of letting it hang a sign-in.
                .options([("statement_timeout", "10s")]);
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(5))
                // sqlx's own pings wait without a bound. Before lending, a silent
                // connection would use up the whole acquire timeout (and the acquire
                // fail); after return, it would keep its slot for as long as the kernel
                // takes to give it up. Bounded pings close it within seconds, and the
                // acquire goes on with a new connection. (sqlx still pings once more,
                // unbounded, after a release that answered ours: one more round trip
                // per operation, and a window of one round trip.)
                .test_before_acquire(false)
                .before_acquire(|conn, _| Box::pin(answers(conn)))
                .after_release(|conn, _| Box::pin(answers(conn)))
                .connect_with(opts)
                .await
                .map_err(|source| StoreError::Open { url: shown, source })?;
            // Nodes starting together against a new database: sqlx holds an advisory
            // lock while it migrates, so one migrates and the others wait.
            migrator!("./migrations/postgres").run(&pool).await?;
            return Ok(Store::Postgres(pool));
        }
        Err(StoreError::Url(format!(
            "`{}`: only sqlite: and postgres:// URLs are supported; {STORE_URL_EXAMPLES}",
            redact_url(url)
        )))
    }

    /// Which backend, for logs: "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Appends a revocation and returns it with its log id.
    pub async fn revoke(
        &self,
        kind: Kind,
        subject: &str,
        at: i64,
        until: i64,
    ) -> Result<Revocation, StoreError> {
        let id: i64 = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Store::Postgres(_) = self {
                // Readers ask for "ids after the last one I saw": two writers that
                // commit out of id order would hide the earlier id from a reader that
                // saw the later one. Writers queue here instead, on a lock only they
                // take (readers, vacuum and the purge do not wait for it), held until
                // commit.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(REVOCATION_WRITERS_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let id = sqlx::query_scalar(
                "INSERT INTO revocations (kind, subject, at, until) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(kind.as_str())
            .bind(subject)
            .bind(at)
            .bind(until)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            id
        });
        Ok(Revocation {
            id,
            kind,
            subject: subject.to_owned(),
            at,
            until,
        })
    }

    /// Log entries after `after_id` that are still in force at `now`, in id order.
    pub async fn revocations_since(
        &self,
        after_id: i64,
        now: i64,
    ) -> Result<Vec<Revocation>, StoreError> {
        const SQL: &str = "SELECT id, kind, subject, at, until FROM revocations WHERE id > $1 AND until >= $2 ORDER BY id";
        on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(after_id)
                .bind(now)
                .fetch_all(pool)
                .await?
                .iter()
                .map(revocation_from_row)
                .collect()
        })
    }

    /// Deletes entries that can no longer match a valid token. Returns how many.
    pub async fn purge_revocations(&self, now: i64) -> Result<u64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM revocations WHERE until < $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// A subscription that wakes on every revocation another process commits, and on
    /// every heartbeat: PostgreSQL's LISTEN. `None` on SQLite (one node: the CLI tells
    /// its agent itself). It has a connection of its own, outside the store's pool, so
    /// that a connection that died silently (and takes minutes to be given up) holds
    /// none of the pool's.
    pub async fn wakeups(&self) -> Result<Option<Wakeups>, StoreError> {
        let Store::Postgres(pool) = self else {
            return Ok(None);
        };
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with((*pool.connect_options()).clone())
            .await?;
        let mut listener = PgListener::connect_with(&own).await?;
        listener
            .listen_all([REVOCATIONS_CHANNEL, HEARTBEAT_CHANNEL])
            .await?;
        Ok(Some(Wakeups {
            listener,
            _pool: own,
        }))
    }

    /// Announces a heartbeat to every listener (this node's included): a listener that
    /// hears nothing for long has lost the store without being told (a connection
    /// dropped silently by a firewall or a failover). A no-op on SQLite.
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        if let Store::Postgres(pool) = self {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(HEARTBEAT_CHANNEL)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Closes connections (flushes the WAL on SQLite).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

/// See [`Store::wakeups`].
#[derive(Debug)]
pub struct Wakeups {
    listener: PgListener,
    _pool: PgPool,
}

impl Wakeups {
    /// Waits for the next announcement: a committed revocation, or a heartbeat
    /// ([`Store::heartbeat`]). An error means the listening connection was lost, and
    /// with it what was announced meanwhile: drop this, make a new one with
    /// [`Store::wakeups`], and read the log once it is made.
    pub async fn next(&mut self) -> Result<Wakeup, StoreError> {
        match self.listener.try_recv().await? {
            // Only the channels listened to arrive, and their names are ours.
            Some(n) if n.channel() == HEARTBEAT_CHANNEL => Ok(Wakeup::Heartbeat),
            Some(_) => Ok(Wakeup::Revocation),
            None => Err(StoreError::ListenerLost),
        }
    }
}

/// What woke a [`Wakeups`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// A revocation was committed.
    Revocation,
    /// A heartbeat, from this node or another.
    Heartbeat,
}

fn revocation_from_row(row: &impl Field) -> Result<Revocation, StoreError> {
    let kind: String = row.field("kind")?;
    Ok(Revocation {
        id: row.field("id")?,
        kind: Kind::parse(&kind).ok_or(StoreError::BadKind(kind))?,
        subject: row.field("subject")?,
        at: row.field("at")?,
        until: row.field("until")?,
    })
}

/// `postgres://` or `postgresql://`, the schemes libpq and sqlx accept.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` fit for logs and errors. A PostgreSQL URL is shown as what it connects to
/// (user, host, port, database), rebuilt from its parsed form: no password, no query
/// string, however they were written. A SQLite URL (a path) is shown as it is;
/// anything else by its scheme alone.
pub fn redact_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    if is_postgres_url(url) {
        return match PgConnectOptions::from_str(url) {
            Ok(o) => format!(
                "postgres://{}@{}:{}/{}",
                o.get_username(),
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or_default()
            ),
            Err(_) => "postgres://… (not a valid URL)".to_owned(),
        };
    }
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => "…".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_say_what_to_write() {
        let err = Store::open("mysql://x").await.unwrap_err().to_string();
        assert!(
            err.contains("sqlite:") && err.contains("postgres://"),
            "{err}"
        );
        let err = Store::open("postgres://kw:hunter2@127.0.0.1:1/kw?password=hunter3")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("kw@127.0.0.1:1/kw"), "{err}");
        assert!(!err.contains("hunter"), "{err}");
    }

    #[test]
    fn passwords_never_reach_a_log() {
        for (url, shown) in [
            ("postgres://u:s3cret@h/db", "postgres://u@h:5432/db"),
            (
                "postgres://u:s3cret@h:5/db?sslmode=require",
                "postgres://u@h:5/db",
            ),
            ("postgresql://u@h/db", "postgres://u@h:5432/db"),
            (
                "postgres://u@h/db?options=a@b&password=s3cret",
                "postgres://u@h:5432/db",
            ),
            ("postgres://u:s3c%40ret@h/db", "postgres://u@h:5432/db"),
            ("sqlite:///var/lib/k.db", "sqlite:///var/lib/k.db"),
            ("mysql://u:s3cret@h/db", "mysql://…"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        for url in [
            "postgres://u:a/s3cret@h/db",
            "postgres://h/db?password=s3cr@t",
            "s3cret",
        ] {
            assert!(
                !redact_url(url).contains("s3cr"),
                "{url}: {}",
                redact_url(url)
            );
        }
    }
}
