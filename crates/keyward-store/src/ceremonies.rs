//! Ceremonies between their two halves, shared by every node on the store. Each is
//! taken once: the delete that returns it is what uses it up.

use crate::{Field, Store, StoreError, on_pool};

/// How many ceremonies may wait at once, for one client and for all.
#[derive(Debug, Clone, Copy)]
pub struct CeremonyLimits {
    pub per_client: i64,
    pub total: i64,
}

/// What [`Store::put_ceremony`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Kept,
    /// This client has `per_client` ceremonies waiting.
    ClientFull,
    /// `total` ceremonies are waiting.
    Full,
}

impl Store {
    /// Keeps `body` under `id` until `expires_at`, begun by `client`, unless that
    /// client or everyone already has as many waiting at `now` as `limits` allow (a
    /// flood of begun sign-ins): then nothing is kept. The counts are read before the
    /// insert, so racing inserts can pass a limit by a few.
    pub async fn put_ceremony(
        &self,
        id: &[u8; 32],
        client: &str,
        body: &str,
        now: i64,
        expires_at: i64,
        limits: CeremonyLimits,
    ) -> Result<Put, StoreError> {
        const MINE: &str = "SELECT COUNT(*) FROM ceremonies WHERE client = $1 AND expires_at > $2";
        const ALL: &str = "SELECT COUNT(*) FROM ceremonies WHERE expires_at > $1";
        const INSERT: &str =
            "INSERT INTO ceremonies (id, client, body, expires_at) VALUES ($1, $2, $3, $4)";
        Ok(on_pool!(self, pool => {
            let mine: i64 = sqlx::query_scalar(MINE).bind(client).bind(now).fetch_one(pool).await?;
            let all: i64 = sqlx::query_scalar(ALL).bind(now).fetch_one(pool).await?;
            if mine >= limits.per_client {
                Put::ClientFull
            } else if all >= limits.total {
                Put::Full
            } else {
                sqlx::query(INSERT)
                    .bind(&id[..])
                    .bind(client)
                    .bind(body)
                    .bind(expires_at)
                    .execute(pool)
                    .await?;
                Put::Kept
            }
        }))
    }

    /// The ceremony `id`, if it has not expired at `now`, left in place.
    pub async fn peek_ceremony(
        &self,
        id: &[u8; 32],
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT body FROM ceremonies WHERE id = $1 AND expires_at > $2";
        Ok(on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&id[..])
                .bind(now)
                .fetch_optional(pool)
                .await?
                .map(|row| row.field::<String>("body"))
                .transpose()?
        }))
    }

    /// Takes the ceremony `id` if it has not expired at `now`: of two nodes taking the
    /// same ceremony at once, one gets it.
    pub async fn take_ceremony(
        &self,
        id: &[u8; 32],
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = "DELETE FROM ceremonies WHERE id = $1 RETURNING body, expires_at";
        let row: Option<(String, i64)> = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&id[..])
                .fetch_optional(pool)
                .await?
                .map(|row| -> Result<_, sqlx::Error> { Ok((row.field("body")?, row.field("expires_at")?)) })
                .transpose()?
        });
        Ok(row.and_then(|(body, expires_at)| (expires_at > now).then_some(body)))
    }

    /// Deletes expired ceremonies. Returns how many.
    pub async fn purge_ceremonies(&self, now: i64) -> Result<u64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM ceremonies WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
