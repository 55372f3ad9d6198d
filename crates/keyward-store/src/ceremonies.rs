//! Ceremonies between their two halves, shared by every node on the store. Each is
//! taken once: the delete that returns it is what uses it up.

use crate::{Field, Store, StoreError, on_pool};

impl Store {
    /// Keeps `body` under `id` until `expires_at`, unless `max_live` ceremonies are
    /// already waiting at `now` (a flood of begun sign-ins): then false, nothing kept.
    pub async fn put_ceremony(
        &self,
        id: &[u8; 32],
        body: &str,
        now: i64,
        expires_at: i64,
        max_live: i64,
    ) -> Result<bool, StoreError> {
        const LIVE: &str = "SELECT COUNT(*) FROM ceremonies WHERE expires_at > $1";
        const INSERT: &str = "INSERT INTO ceremonies (id, body, expires_at) VALUES ($1, $2, $3)";
        on_pool!(self, pool => {
            let live: i64 = sqlx::query_scalar(LIVE).bind(now).fetch_one(pool).await?;
            if live >= max_live {
                return Ok(false);
            }
            sqlx::query(INSERT)
                .bind(&id[..])
                .bind(body)
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(true)
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
