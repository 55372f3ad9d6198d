//! keyward's durable state behind one interface.
//!
//! SQLite is the embedded default (one file, WAL, `synchronous=FULL`: a committed write
//! survives a crash). The revocation log lives here; users, credentials and invites
//! join it with the portal. Sessions themselves are stateless tokens and are never
//! stored.

pub mod revocation;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use revocation::{Kind, Revocation, Revocations};
pub use users::{Conflict, Device, Invite, NewDevice, NewUser, Source, User};

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
}

/// The store. One variant per backend; all share the same operations.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up to date.
    /// `sqlite:///var/lib/keyward/keyward.db` or `sqlite::memory:`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Url(format!("`{url}` is not a SQLite URL ({e}); e.g. sqlite:///var/lib/keyward/keyward.db")))?
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
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            return Ok(Store::Sqlite(pool));
        }
        Err(StoreError::Url(format!(
            "`{url}`: only sqlite: URLs are supported, e.g. sqlite:///var/lib/keyward/keyward.db"
        )))
    }

    /// Appends a revocation and returns it with its log id.
    pub async fn revoke(
        &self,
        kind: Kind,
        subject: &str,
        at: i64,
        until: i64,
    ) -> Result<Revocation, StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO revocations (kind, subject, at, until) VALUES (?, ?, ?, ?) RETURNING id",
                )
                .bind(kind.as_str())
                .bind(subject)
                .bind(at)
                .bind(until)
                .fetch_one(pool)
                .await?;
                Ok(Revocation {
                    id,
                    kind,
                    subject: subject.to_owned(),
                    at,
                    until,
                })
            }
        }
    }

    /// Log entries after `after_id` that are still in force at `now`, in id order.
    pub async fn revocations_since(
        &self,
        after_id: i64,
        now: i64,
    ) -> Result<Vec<Revocation>, StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT id, kind, subject, at, until FROM revocations WHERE id > ? AND until >= ? ORDER BY id",
                )
                .bind(after_id)
                .bind(now)
                .fetch_all(pool)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        let kind: String = row.try_get("kind")?;
                        Ok(Revocation {
                            id: row.try_get("id")?,
                            kind: Kind::parse(&kind).ok_or(StoreError::BadKind(kind))?,
                            subject: row.try_get("subject")?,
                            at: row.try_get("at")?,
                            until: row.try_get("until")?,
                        })
                    })
                    .collect()
            }
        }
    }

    /// Deletes entries that can no longer match a valid token. Returns how many.
    pub async fn purge_revocations(&self, now: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(pool) => Ok(sqlx::query("DELETE FROM revocations WHERE until < ?")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()),
        }
    }

    /// Closes connections (flushes the WAL on SQLite).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revocations_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let store = Store::open(&url).await.unwrap();
        let a = store.revoke(Kind::User, "alice", 100, 200).await.unwrap();
        let b = store.revoke(Kind::Session, "s1", 150, 250).await.unwrap();
        assert!(b.id > a.id);
        store.close().await;

        let store = Store::open(&url).await.unwrap();
        assert_eq!(
            store.revocations_since(0, 120).await.unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(
            store.revocations_since(a.id, 120).await.unwrap(),
            vec![b.clone()]
        );
        assert_eq!(store.revocations_since(0, 210).await.unwrap(), vec![b]);
        assert_eq!(store.purge_revocations(210).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn bad_urls_say_what_to_write() {
        let err = Store::open("postgres://x").await.unwrap_err().to_string();
        assert!(err.contains("sqlite:"), "{err}");
    }
}
