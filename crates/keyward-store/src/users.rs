//! Users, their registered authenticators and one-time enrollment links.
//!
//! The store keeps what sign-in needs and nothing it does not: no session tokens, no
//! invite secrets (only their hash), and credential ids only for lookup. Everything
//! that leaves the store for logs or sessions names a device by its pseudonymous id.

use crate::{Field, Store, StoreError, on_pool};

// sqlx only takes static SQL: the column lists are spliced in with `concat!`.
macro_rules! user_columns {
    () => {
        "id, handle, name, email, roles, source, disabled_at, created_at"
    };
}
macro_rules! device_columns {
    () => {
        "device, user_id, name, aaguid, attested, passkey, created_at, last_used_at"
    };
}

/// Where a user comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Invited with `keyward users invite`.
    Local,
    /// Vouched for by the OIDC provider.
    Oidc,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Oidc => "oidc",
        }
    }
}

/// A person who may enroll devices and sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// The WebAuthn user handle (what a discoverable credential returns).
    pub handle: [u8; 16],
    pub name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub source: Source,
    pub disabled: bool,
    pub created_at: i64,
}

/// What [`Store::create_user`] and [`Store::upsert_oidc_user`] write.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub handle: [u8; 16],
    pub name: &'a str,
    pub email: Option<&'a str>,
    pub roles: &'a [String],
    pub source: Source,
    pub now: i64,
}

/// A registered authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Pseudonymous id (keyed hash of the credential id).
    pub device: String,
    pub user_id: String,
    /// The user's label for it.
    pub name: String,
    /// Authenticator model id, when the authenticator disclosed one.
    pub aaguid: Option<String>,
    /// Registered with a verified attestation from an allowed CA.
    pub attested: bool,
    /// webauthn-rs's serialized credential (opaque here).
    pub passkey: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// What [`Store::add_device`] writes.
#[derive(Debug, Clone)]
pub struct NewDevice<'a> {
    pub device: &'a str,
    pub cred_id: &'a [u8],
    pub user_id: &'a str,
    pub name: &'a str,
    pub aaguid: Option<&'a str>,
    pub attested: bool,
    pub passkey: &'a str,
    pub now: i64,
}

/// What an invite link is worth right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invite {
    /// Usable by this user.
    Valid(User),
    Expired,
    Used,
    /// Never issued (or its user was deleted).
    Unknown,
    /// The user was disabled after the link was made.
    UserDisabled,
}

/// What [`Store::touch_device`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    Recorded,
    /// The device was deleted, or its user disabled.
    Gone,
    /// A sign-in with a higher (or the same) signature counter was recorded meanwhile.
    CounterBehind,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    #[error("a user named `{0}` already exists")]
    UserName(String),
    #[error("this authenticator is already registered")]
    Credential,
    #[error("the enrollment link is no longer valid")]
    Invite,
}

const DEVICE_KEY: &str = "device_key";

impl Store {
    /// The 32-byte key device ids are derived with, made on first use and then fixed
    /// for the life of the store (so device ids stay stable across restarts and nodes).
    pub async fn device_key(&self) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| StoreError::Random(e.to_string()))?;
        // Nodes starting together race here: the first insert wins, all read it.
        let value: Vec<u8> = on_pool!(self, pool => {
            sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(DEVICE_KEY)
                .bind(&fresh[..])
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(DEVICE_KEY)
                .fetch_one(pool)
                .await?
        });
        value
            .try_into()
            .map_err(|_| StoreError::Corrupt("settings.device_key is not 32 bytes".into()))
    }

    /// Creates a user; a taken name is a [`Conflict::UserName`].
    pub async fn create_user(
        &self,
        new: &NewUser<'_>,
    ) -> Result<Result<User, Conflict>, StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO users (id, handle, name, email, roles, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
            user_columns!()
        );
        let res = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(new.id)
                .bind(&new.handle[..])
                .bind(new.name)
                .bind(new.email)
                .bind(join_roles(new.roles))
                .bind(new.source.as_str())
                .bind(new.now)
                .fetch_one(pool)
                .await
                .map(|row| User::from_row(&row))
        });
        match res {
            Ok(user) => Ok(Ok(user?)),
            Err(err) if is_unique_violation(&err) => Ok(Err(Conflict::UserName(new.name.into()))),
            Err(err) => Err(err.into()),
        }
    }

    /// Creates or refreshes a user the IdP vouched for: email and roles follow the
    /// IdP at every sign-in; a disabled user stays disabled. The name is only set on
    /// creation (if taken, the id is used as the name).
    pub async fn upsert_oidc_user(&self, new: &NewUser<'_>) -> Result<User, StoreError> {
        const SQL: &str = concat!(
            "UPDATE users SET email = $1, roles = $2 WHERE id = $3 RETURNING ",
            user_columns!()
        );
        let updated = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(new.email)
                .bind(join_roles(new.roles))
                .bind(new.id)
                .fetch_optional(pool)
                .await?
                .map(|row| User::from_row(&row))
        });
        if let Some(user) = updated {
            return user;
        }
        match self.create_user(new).await? {
            Ok(user) => Ok(user),
            Err(_) => {
                let by_id = NewUser {
                    name: new.id,
                    ..new.clone()
                };
                match self.create_user(&by_id).await? {
                    Ok(user) => Ok(user),
                    // Lost a race with a concurrent first sign-in: read the winner.
                    Err(_) => self
                        .user(new.id)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt(format!("user {} vanished", new.id))),
                }
            }
        }
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.one(
            concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"),
            id,
        )
        .await
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.one(
            concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1"),
            name,
        )
        .await
    }

    pub async fn user_by_handle(&self, handle: &[u8]) -> Result<Option<User>, StoreError> {
        self.one(
            concat!("SELECT ", user_columns!(), " FROM users WHERE handle = $1"),
            handle,
        )
        .await
    }

    /// The one row of `sql` (a lookup by `value`), decoded as `R`.
    async fn one<'q, R, T>(&self, sql: &'static str, value: T) -> Result<Option<R>, StoreError>
    where
        R: FromRow,
        T: 'q
            + Send
            + sqlx::Encode<'q, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>
            + sqlx::Encode<'q, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>,
    {
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(value)
                .fetch_optional(pool)
                .await?
                .map(|row| R::from_row(&row))
                .transpose()
        })
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users ORDER BY name");
        on_pool!(self, pool => {
            sqlx::query(SQL)
                .fetch_all(pool)
                .await?
                .iter()
                .map(User::from_row)
                .collect()
        })
    }

    /// Replaces a user's roles. False when there is no such user.
    pub async fn set_roles(&self, id: &str, roles: &[String]) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query("UPDATE users SET roles = $1 WHERE id = $2")
                .bind(join_roles(roles))
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Disables (or re-enables) a user. False when there is no such user.
    pub async fn set_disabled(
        &self,
        id: &str,
        disabled: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
                .bind(disabled.then_some(now))
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Records an invite by the hash of its secret.
    pub async fn create_invite(
        &self,
        hash: &[u8; 32],
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO invites (hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&hash[..])
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// What the invite with this hash is worth at `now` (nothing is consumed).
    pub async fn invite(&self, hash: &[u8; 32], now: i64) -> Result<Invite, StoreError> {
        const SQL: &str = "SELECT user_id, expires_at, used_at FROM invites WHERE hash = $1";
        let row: Option<(String, i64, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&hash[..])
                .fetch_optional(pool)
                .await?
                .map(|row| -> Result<_, sqlx::Error> {
                    Ok((row.field("user_id")?, row.field("expires_at")?, row.field("used_at")?))
                })
                .transpose()?
        });
        let Some((user_id, expires_at, used_at)) = row else {
            return Ok(Invite::Unknown);
        };
        if used_at.is_some() {
            return Ok(Invite::Used);
        }
        if expires_at <= now {
            return Ok(Invite::Expired);
        }
        Ok(match self.user(&user_id).await? {
            None => Invite::Unknown,
            Some(user) if user.disabled => Invite::UserDisabled,
            Some(user) => Invite::Valid(user),
        })
    }

    /// Registers a device. When `invite` is given, it is consumed in the same
    /// transaction: both happen or neither (a link enrolls exactly one device).
    pub async fn add_device(
        &self,
        new: &NewDevice<'_>,
        invite: Option<&[u8; 32]>,
    ) -> Result<Result<Device, Conflict>, StoreError> {
        const TAKE_INVITE: &str = "UPDATE invites SET used_at = $1 \
             WHERE hash = $2 AND user_id = $3 AND used_at IS NULL AND expires_at > $4";
        const INSERT: &str = concat!(
            "INSERT INTO credentials (device, cred_id, user_id, name, aaguid, attested, passkey, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            device_columns!()
        );
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let invite_taken = match invite {
                Some(hash) => {
                    sqlx::query(TAKE_INVITE)
                        .bind(new.now)
                        .bind(&hash[..])
                        .bind(new.user_id)
                        .bind(new.now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1
                }
                None => true,
            };
            if invite_taken {
                let res = sqlx::query(INSERT)
                    .bind(new.device)
                    .bind(new.cred_id)
                    .bind(new.user_id)
                    .bind(new.name)
                    .bind(new.aaguid)
                    .bind(new.attested)
                    .bind(new.passkey)
                    .bind(new.now)
                    .fetch_one(&mut *tx)
                    .await;
                match res {
                    Ok(row) => {
                        let device = Device::from_row(&row)?;
                        tx.commit().await?;
                        Ok(device)
                    }
                    Err(err) if is_unique_violation(&err) => {
                        tx.rollback().await?;
                        Err(Conflict::Credential)
                    }
                    Err(err) => return Err(err.into()),
                }
            } else {
                // Roll back now, not when the transaction is dropped: a dropped one is
                // rolled back later, and until then its locks can fail the next query.
                tx.rollback().await?;
                Err(Conflict::Invite)
            }
        }))
    }

    /// The device registered with this credential id.
    pub async fn device_by_credential(&self, cred_id: &[u8]) -> Result<Option<Device>, StoreError> {
        self.one(
            concat!(
                "SELECT ",
                device_columns!(),
                " FROM credentials WHERE cred_id = $1"
            ),
            cred_id,
        )
        .await
    }

    pub async fn device(&self, device: &str) -> Result<Option<Device>, StoreError> {
        self.one(
            concat!(
                "SELECT ",
                device_columns!(),
                " FROM credentials WHERE device = $1"
            ),
            device,
        )
        .await
    }

    /// A user's devices, oldest first; every device when `user_id` is `None`.
    pub async fn devices(&self, user_id: Option<&str>) -> Result<Vec<Device>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            device_columns!(),
            " FROM credentials WHERE user_id = COALESCE($1, user_id) ORDER BY user_id, created_at, device"
        );
        on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(user_id)
                .fetch_all(pool)
                .await?
                .iter()
                .map(Device::from_row)
                .collect()
        })
    }

    /// Records a sign-in: the updated credential (counter, backup state), its
    /// signature counter and the time. Nothing is written when the device was deleted or
    /// its user disabled since the sign-in began, or when another sign-in has recorded
    /// a counter at least as high meanwhile (two sign-ins finishing out of order must
    /// not set the counter back; a counter of 0 means the authenticator keeps none).
    pub async fn touch_device(
        &self,
        device: &str,
        passkey: &str,
        sign_count: u32,
        now: i64,
    ) -> Result<Touch, StoreError> {
        const SQL: &str = concat!(
            "UPDATE credentials SET passkey = $1, last_used_at = $2, sign_count = $3",
            " WHERE device = $4 AND ($3 > sign_count OR ($3 = 0 AND sign_count = 0))",
            " AND user_id IN (SELECT id FROM users WHERE disabled_at IS NULL)"
        );
        const STILL_THERE: &str = concat!(
            "SELECT COUNT(*) FROM credentials WHERE device = $1",
            " AND user_id IN (SELECT id FROM users WHERE disabled_at IS NULL)"
        );
        let count = i64::from(sign_count);
        let (done, there): (u64, i64) = on_pool!(self, pool => {
            let done = sqlx::query(SQL)
                .bind(passkey)
                .bind(now)
                .bind(count)
                .bind(device)
                .execute(pool)
                .await?
                .rows_affected();
            if done == 1 {
                (done, 1)
            } else {
                (done, sqlx::query_scalar(STILL_THERE).bind(device).fetch_one(pool).await?)
            }
        });
        Ok(match (done, there) {
            (1, _) => Touch::Recorded,
            (_, 0) => Touch::Gone,
            _ => Touch::CounterBehind,
        })
    }

    /// Renames a device of `user_id`. False when the user has no such device.
    pub async fn rename_device(
        &self,
        user_id: &str,
        device: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query("UPDATE credentials SET name = $1 WHERE device = $2 AND user_id = $3")
                .bind(name)
                .bind(device)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Deletes a device (of `user_id` when given). Returns the deleted device.
    pub async fn delete_device(
        &self,
        user_id: Option<&str>,
        device: &str,
    ) -> Result<Option<Device>, StoreError> {
        const SQL: &str = concat!(
            "DELETE FROM credentials WHERE device = $1 AND user_id = COALESCE($2, user_id) RETURNING ",
            device_columns!()
        );
        on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(device)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
                .map(|row| Device::from_row(&row))
                .transpose()
        })
    }
}

fn join_roles(roles: &[String]) -> String {
    let mut roles: Vec<&str> = roles
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort_unstable();
    roles.dedup();
    roles.join(",")
}

fn split_roles(roles: &str) -> Vec<String> {
    roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A value made from a row of either backend.
trait FromRow: Sized {
    fn from_row(row: &impl Field) -> Result<Self, StoreError>;
}

impl FromRow for User {
    fn from_row(row: &impl Field) -> Result<User, StoreError> {
        let handle: Vec<u8> = row.field("handle")?;
        let source: String = row.field("source")?;
        Ok(User {
            id: row.field("id")?,
            handle: handle
                .try_into()
                .map_err(|_| StoreError::Corrupt("users.handle is not 16 bytes".into()))?,
            name: row.field("name")?,
            email: row.field("email")?,
            roles: split_roles(&row.field::<String>("roles")?),
            source: match source.as_str() {
                "local" => Source::Local,
                "oidc" => Source::Oidc,
                other => return Err(StoreError::Corrupt(format!("users.source `{other}`"))),
            },
            disabled: row.field::<Option<i64>>("disabled_at")?.is_some(),
            created_at: row.field("created_at")?,
        })
    }
}

impl FromRow for Device {
    fn from_row(row: &impl Field) -> Result<Device, StoreError> {
        Ok(Device {
            device: row.field("device")?,
            user_id: row.field("user_id")?,
            name: row.field("name")?,
            aaguid: row.field("aaguid")?,
            attested: row.field("attested")?,
            passkey: row.field("passkey")?,
            created_at: row.field("created_at")?,
            last_used_at: row.field("last_used_at")?,
        })
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
