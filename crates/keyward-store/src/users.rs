//! Users, their registered authenticators and one-time enrollment links.
//!
//! The store keeps what sign-in needs and nothing it does not: no session tokens, no
//! invite secrets (only their hash), and credential ids only for lookup. Everything
//! that leaves the store for logs or sessions names a device by its pseudonymous id.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use crate::{Store, StoreError};

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
    fn pool(&self) -> &SqlitePool {
        match self {
            Store::Sqlite(pool) => pool,
        }
    }

    /// The 32-byte key device ids are derived with, made on first use and then fixed
    /// for the life of the store (so device ids stay stable across restarts and nodes).
    pub async fn device_key(&self) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| StoreError::Random(e.to_string()))?;
        sqlx::query("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)")
            .bind(DEVICE_KEY)
            .bind(&fresh[..])
            .execute(self.pool())
            .await?;
        let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(DEVICE_KEY)
            .fetch_one(self.pool())
            .await?;
        value
            .try_into()
            .map_err(|_| StoreError::Corrupt("settings.device_key is not 32 bytes".into()))
    }

    /// Creates a user; a taken name is a [`Conflict::UserName`].
    pub async fn create_user(
        &self,
        new: &NewUser<'_>,
    ) -> Result<Result<User, Conflict>, StoreError> {
        let res = sqlx::query(concat!(
            "INSERT INTO users (id, handle, name, email, roles, source, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING ",
            user_columns!()
        ))
        .bind(new.id)
        .bind(&new.handle[..])
        .bind(new.name)
        .bind(new.email)
        .bind(join_roles(new.roles))
        .bind(new.source.as_str())
        .bind(new.now)
        .fetch_one(self.pool())
        .await;
        match res {
            Ok(row) => Ok(Ok(user_from_row(&row)?)),
            Err(err) if is_unique_violation(&err) => Ok(Err(Conflict::UserName(new.name.into()))),
            Err(err) => Err(err.into()),
        }
    }

    /// Creates or refreshes a user the IdP vouched for: email and roles follow the
    /// IdP at every sign-in; a disabled user stays disabled. The name is only set on
    /// creation (if taken, the id is used as the name).
    pub async fn upsert_oidc_user(&self, new: &NewUser<'_>) -> Result<User, StoreError> {
        let updated = sqlx::query(concat!(
            "UPDATE users SET email = ?, roles = ? WHERE id = ? RETURNING ",
            user_columns!()
        ))
        .bind(new.email)
        .bind(join_roles(new.roles))
        .bind(new.id)
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = updated {
            return user_from_row(&row);
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
        self.one_user(
            concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?"),
            id,
        )
        .await
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.one_user(
            concat!("SELECT ", user_columns!(), " FROM users WHERE name = ?"),
            name,
        )
        .await
    }

    pub async fn user_by_handle(&self, handle: &[u8]) -> Result<Option<User>, StoreError> {
        self.one_user(
            concat!("SELECT ", user_columns!(), " FROM users WHERE handle = ?"),
            handle,
        )
        .await
    }

    async fn one_user<'q, T>(&self, sql: &'static str, value: T) -> Result<Option<User>, StoreError>
    where
        T: 'q + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Send,
    {
        sqlx::query(sql)
            .bind(value)
            .fetch_optional(self.pool())
            .await?
            .map(|row| user_from_row(&row))
            .transpose()
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(user_from_row)
        .collect()
    }

    /// Replaces a user's roles. False when there is no such user.
    pub async fn set_roles(&self, id: &str, roles: &[String]) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET roles = ? WHERE id = ?")
            .bind(join_roles(roles))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables (or re-enables) a user. False when there is no such user.
    pub async fn set_disabled(
        &self,
        id: &str,
        disabled: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET disabled_at = ? WHERE id = ?")
            .bind(disabled.then_some(now))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an invite by the hash of its secret.
    pub async fn create_invite(
        &self,
        hash: &[u8; 32],
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invites (hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&hash[..])
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// What the invite with this hash is worth at `now` (nothing is consumed).
    pub async fn invite(&self, hash: &[u8; 32], now: i64) -> Result<Invite, StoreError> {
        let row = sqlx::query("SELECT user_id, expires_at, used_at FROM invites WHERE hash = ?")
            .bind(&hash[..])
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else {
            return Ok(Invite::Unknown);
        };
        if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
            return Ok(Invite::Used);
        }
        if row.try_get::<i64, _>("expires_at")? <= now {
            return Ok(Invite::Expired);
        }
        let user_id: String = row.try_get("user_id")?;
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
        let mut tx = self.pool().begin().await?;
        if let Some(hash) = invite {
            let taken = sqlx::query(
                "UPDATE invites SET used_at = ? \
                 WHERE hash = ? AND user_id = ? AND used_at IS NULL AND expires_at > ?",
            )
            .bind(new.now)
            .bind(&hash[..])
            .bind(new.user_id)
            .bind(new.now)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() != 1 {
                // Roll back now, not when the transaction is dropped: a dropped one is
                // rolled back later, and until then its locks can fail the next query.
                tx.rollback().await?;
                return Ok(Err(Conflict::Invite));
            }
        }
        let res = sqlx::query(concat!("INSERT INTO credentials (device, cred_id, user_id, name, aaguid, attested, passkey, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING ", device_columns!()))
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
        let device = match res {
            Ok(row) => device_from_row(&row)?,
            Err(err) if is_unique_violation(&err) => {
                tx.rollback().await?;
                return Ok(Err(Conflict::Credential));
            }
            Err(err) => return Err(err.into()),
        };
        tx.commit().await?;
        Ok(Ok(device))
    }

    /// The device registered with this credential id.
    pub async fn device_by_credential(&self, cred_id: &[u8]) -> Result<Option<Device>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM credentials WHERE cred_id = ?"
        ))
        .bind(cred_id)
        .fetch_optional(self.pool())
        .await?
        .map(|row| device_from_row(&row))
        .transpose()
    }

    pub async fn device(&self, device: &str) -> Result<Option<Device>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            device_columns!(),
            " FROM credentials WHERE device = ?"
        ))
        .bind(device)
        .fetch_optional(self.pool())
        .await?
        .map(|row| device_from_row(&row))
        .transpose()
    }

    /// A user's devices, oldest first; every device when `user_id` is `None`.
    pub async fn devices(&self, user_id: Option<&str>) -> Result<Vec<Device>, StoreError> {
        let rows = match user_id {
            Some(id) => {
                sqlx::query(concat!(
                    "SELECT ",
                    device_columns!(),
                    " FROM credentials WHERE user_id = ? ORDER BY created_at, device"
                ))
                .bind(id)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    device_columns!(),
                    " FROM credentials ORDER BY user_id, created_at, device"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(device_from_row).collect()
    }

    /// Records a sign-in: the updated credential (counter, backup state) and the time.
    /// False, and nothing written, when the device was deleted or its user disabled
    /// since the sign-in began.
    pub async fn touch_device(
        &self,
        device: &str,
        passkey: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE credentials SET passkey = ?, last_used_at = ? WHERE device = ?",
            " AND user_id IN (SELECT id FROM users WHERE disabled_at IS NULL)"
        ))
        .bind(passkey)
        .bind(now)
        .bind(device)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Renames a device of `user_id`. False when the user has no such device.
    pub async fn rename_device(
        &self,
        user_id: &str,
        device: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE credentials SET name = ? WHERE device = ? AND user_id = ?")
            .bind(name)
            .bind(device)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a device (of `user_id` when given). Returns the deleted device.
    pub async fn delete_device(
        &self,
        user_id: Option<&str>,
        device: &str,
    ) -> Result<Option<Device>, StoreError> {
        let row = sqlx::query(concat!(
            "DELETE FROM credentials WHERE device = ? AND (? IS NULL OR user_id = ?) RETURNING ",
            device_columns!()
        ))
        .bind(device)
        .bind(user_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| device_from_row(&row)).transpose()
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

fn user_from_row(row: &SqliteRow) -> Result<User, StoreError> {
    let handle: Vec<u8> = row.try_get("handle")?;
    let source: String = row.try_get("source")?;
    Ok(User {
        id: row.try_get("id")?,
        handle: handle
            .try_into()
            .map_err(|_| StoreError::Corrupt("users.handle is not 16 bytes".into()))?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        roles: split_roles(&row.try_get::<String, _>("roles")?),
        source: match source.as_str() {
            "local" => Source::Local,
            "oidc" => Source::Oidc,
            other => return Err(StoreError::Corrupt(format!("users.source `{other}`"))),
        },
        disabled: row.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
        created_at: row.try_get("created_at")?,
    })
}

fn device_from_row(row: &SqliteRow) -> Result<Device, StoreError> {
    Ok(Device {
        device: row.try_get("device")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        aaguid: row.try_get("aaguid")?,
        attested: row.try_get("attested")?,
        passkey: row.try_get("passkey")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Store {
        Store::open("sqlite::memory:").await.unwrap()
    }

    fn alice() -> NewUser<'static> {
        NewUser {
            id: "local:a1",
            handle: [1; 16],
            name: "alice",
            email: Some("alice@example.test"),
            roles: &[],
            source: Source::Local,
            now: 100,
        }
    }

    fn dev<'a>(device: &'a str, cred: &'a [u8], user: &'a str) -> NewDevice<'a> {
        NewDevice {
            device,
            cred_id: cred,
            user_id: user,
            name: "key",
            aaguid: None,
            attested: false,
            passkey: "{}",
            now: 110,
        }
    }

    #[tokio::test]
    async fn users_roundtrip_and_names_are_unique() {
        let s = store().await;
        let roles = vec!["ops".to_string(), "admin".into(), "ops".into()];
        let u = s
            .create_user(&NewUser {
                roles: &roles,
                ..alice()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.roles, ["admin", "ops"]);
        assert_eq!(s.user_by_handle(&[1; 16]).await.unwrap(), Some(u.clone()));
        assert_eq!(s.user_by_name("alice").await.unwrap(), Some(u.clone()));
        let again = NewUser {
            id: "local:a2",
            handle: [2; 16],
            ..alice()
        };
        assert!(matches!(
            s.create_user(&again).await.unwrap(),
            Err(Conflict::UserName(_))
        ));
        assert!(s.set_disabled("local:a1", true, 200).await.unwrap());
        assert!(s.user("local:a1").await.unwrap().unwrap().disabled);
        assert!(!s.set_roles("nobody", &[]).await.unwrap());
    }

    #[tokio::test]
    async fn an_invite_enrolls_exactly_one_device() {
        let s = store().await;
        s.create_user(&alice()).await.unwrap().unwrap();
        let hash = [9u8; 32];
        s.create_invite(&hash, "local:a1", 100, 200).await.unwrap();
        assert!(matches!(
            s.invite(&hash, 150).await.unwrap(),
            Invite::Valid(_)
        ));
        assert_eq!(s.invite(&hash, 200).await.unwrap(), Invite::Expired);
        assert_eq!(s.invite(&[0; 32], 150).await.unwrap(), Invite::Unknown);

        let first = s
            .add_device(&dev("d1", b"c1", "local:a1"), Some(&hash))
            .await
            .unwrap();
        assert!(first.is_ok());
        assert_eq!(s.invite(&hash, 150).await.unwrap(), Invite::Used);
        let second = s
            .add_device(&dev("d2", b"c2", "local:a1"), Some(&hash))
            .await
            .unwrap();
        assert!(matches!(second, Err(Conflict::Invite)));
        // The refused enrollment left nothing behind.
        assert!(s.device("d2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_credential_belongs_to_one_user() {
        let s = store().await;
        s.create_user(&alice()).await.unwrap().unwrap();
        let bob = NewUser {
            id: "local:b1",
            handle: [2; 16],
            name: "bob",
            ..alice()
        };
        s.create_user(&bob).await.unwrap().unwrap();
        s.add_device(&dev("d1", b"same", "local:a1"), None)
            .await
            .unwrap()
            .unwrap();
        let stolen = s
            .add_device(&dev("d2", b"same", "local:b1"), None)
            .await
            .unwrap();
        assert!(matches!(stolen, Err(Conflict::Credential)));
        let d = s.device_by_credential(b"same").await.unwrap().unwrap();
        assert_eq!(d.user_id, "local:a1");
    }

    #[tokio::test]
    async fn devices_are_renamed_touched_and_deleted_by_their_owner_only() {
        let s = store().await;
        s.create_user(&alice()).await.unwrap().unwrap();
        s.add_device(&dev("d1", b"c1", "local:a1"), None)
            .await
            .unwrap()
            .unwrap();
        assert!(!s.rename_device("local:b1", "d1", "mine").await.unwrap());
        assert!(s.rename_device("local:a1", "d1", "YubiKey").await.unwrap());
        assert!(s.touch_device("d1", "{\"n\":2}", 300).await.unwrap());
        let d = s.device("d1").await.unwrap().unwrap();
        assert_eq!(
            (d.name.as_str(), d.passkey.as_str(), d.last_used_at),
            ("YubiKey", "{\"n\":2}", Some(300))
        );
        // A sign-in that finishes after its user was disabled records nothing.
        s.set_disabled("local:a1", true, 310).await.unwrap();
        assert!(!s.touch_device("d1", "{\"n\":3}", 320).await.unwrap());
        assert_eq!(
            s.device("d1").await.unwrap().unwrap().last_used_at,
            Some(300)
        );
        s.set_disabled("local:a1", false, 330).await.unwrap();
        assert!(s.touch_device("d1", "{\"n\":3}", 340).await.unwrap());
        assert!(
            s.delete_device(Some("local:b1"), "d1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.delete_device(Some("local:a1"), "d1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(s.devices(Some("local:a1")).await.unwrap().is_empty());
        assert!(!s.touch_device("d1", "{\"n\":4}", 350).await.unwrap());
    }

    #[tokio::test]
    async fn the_device_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let s = Store::open(&url).await.unwrap();
        let k1 = s.device_key().await.unwrap();
        assert_eq!(s.device_key().await.unwrap(), k1);
        s.close().await;
        let s = Store::open(&url).await.unwrap();
        assert_eq!(s.device_key().await.unwrap(), k1);
    }

    #[tokio::test]
    async fn oidc_users_follow_the_idp_but_stay_disabled() {
        let s = store().await;
        let r1 = vec!["eng".to_string()];
        let new = NewUser {
            id: "oidc:x#1",
            handle: [3; 16],
            name: "alice",
            source: Source::Oidc,
            roles: &r1,
            ..alice()
        };
        let u = s.upsert_oidc_user(&new).await.unwrap();
        assert_eq!(u.roles, ["eng"]);
        s.set_disabled("oidc:x#1", true, 5).await.unwrap();
        let r2 = vec!["admin".to_string()];
        let u = s
            .upsert_oidc_user(&NewUser {
                roles: &r2,
                ..new.clone()
            })
            .await
            .unwrap();
        assert_eq!(u.roles, ["admin"]);
        assert!(u.disabled);
        // A second IdP user whose preferred name is taken gets its id as name.
        let other = NewUser {
            id: "oidc:x#2",
            handle: [4; 16],
            ..new
        };
        assert_eq!(s.upsert_oidc_user(&other).await.unwrap().name, "oidc:x#2");
    }
}
