//! `keyward users …` and `keyward devices …`: local users, their one-time enrollment
//! links, and registered devices. Audited by device id; user names stay out of the
//! audit log.

use anyhow::{Context, bail};
use base64ct::{Base64UrlUnpadded, Encoding};
use keyward_config::Config;
use keyward_store::{Device, Kind, NewUser, Source, Store, User};

use crate::admin::{revoke, when};
use crate::state::{os_random, unix_now};

/// Where enrollment links point: the portal origin of `portal.login_url`.
fn enroll_base(cfg: &Config) -> anyhow::Result<String> {
    let url = url::Url::parse(&cfg.portal.login_url).context("`portal.login_url`")?;
    Ok(format!(
        "{}/.keyward/enroll",
        url.origin().ascii_serialization()
    ))
}

async fn user_named(store: &Store, name: &str) -> anyhow::Result<User> {
    match store.user_by_name(name).await? {
        Some(u) => Ok(u),
        None => bail!("no user named `{name}` (see `keyward users list`)"),
    }
}

/// `keyward users invite NAME`: creates the user when new, then prints a one-time
/// link that enrolls one device. Returns the link.
pub async fn invite(
    cfg: &Config,
    name: &str,
    roles: &[String],
    email: Option<&str>,
) -> anyhow::Result<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        bail!("give a user name of 1 to 128 printable characters");
    }
    let store = Store::open(&cfg.store.url).await?;
    let now = unix_now();
    let user = match store.user_by_name(name).await? {
        Some(u) if u.disabled => bail!("`{name}` is disabled; `keyward users enable {name}` first"),
        Some(u) => {
            if !roles.is_empty() && roles != u.roles.as_slice() {
                bail!("`{name}` exists; change roles with `keyward users roles {name} …`");
            }
            u
        }
        None => {
            let mut id = [0u8; 12];
            os_random(&mut id);
            let mut handle = [0u8; 16];
            os_random(&mut handle);
            let id = format!("local:{}", Base64UrlUnpadded::encode_string(&id));
            let new = NewUser {
                id: &id,
                handle,
                name,
                email,
                roles,
                source: Source::Local,
                now,
            };
            match store.create_user(&new).await? {
                Ok(u) => u,
                Err(conflict) => bail!("{conflict}"),
            }
        }
    };
    let mut secret = [0u8; 32];
    os_random(&mut secret);
    let secret = Base64UrlUnpadded::encode_string(&secret);
    let expires = now + cfg.portal.invite_ttl.as_secs() as i64;
    store
        .create_invite(
            &keyward_portal::invite_hash(&secret),
            &user.id,
            now,
            expires,
        )
        .await?;
    store.close().await;
    tracing::info!(target: "audit", event = "invited", expires);
    Ok(format!("{}?invite={secret}", enroll_base(cfg)?))
}

/// `keyward users list`
pub async fn list(cfg: &Config) -> anyhow::Result<()> {
    let store = Store::open(&cfg.store.url).await?;
    let users = store.users().await?;
    let devices = store.devices(None).await?;
    println!(
        "{:<24} {:<8} {:<8} {:>7}  {:<24} ID",
        "NAME", "SOURCE", "STATUS", "DEVICES", "ROLES"
    );
    for u in &users {
        let n = devices.iter().filter(|d| d.user_id == u.id).count();
        println!(
            "{:<24} {:<8} {:<8} {:>7}  {:<24} {}",
            u.name,
            match u.source {
                Source::Local => "local",
                Source::Oidc => "oidc",
            },
            if u.disabled { "disabled" } else { "active" },
            n,
            if u.roles.is_empty() {
                "-".into()
            } else {
                u.roles.join(",")
            },
            u.id
        );
    }
    store.close().await;
    Ok(())
}

/// `keyward users disable|enable NAME`: a disabled user cannot sign in or enroll, and
/// their sessions are revoked everywhere.
pub async fn set_disabled(cfg: &Config, name: &str, disabled: bool) -> anyhow::Result<()> {
    let store = Store::open(&cfg.store.url).await?;
    let user = user_named(&store, name).await?;
    store.set_disabled(&user.id, disabled, unix_now()).await?;
    if disabled {
        revoke(cfg, &store, Kind::User, &user.id).await?;
        println!("`{name}` is disabled; their sessions are revoked");
    } else {
        println!("`{name}` is enabled again");
    }
    store.close().await;
    Ok(())
}

/// `keyward users roles NAME a,b`: replaces the roles. Sessions carry roles, so when
/// any role is taken away the user's sessions are revoked (they sign in again).
pub async fn set_roles(cfg: &Config, name: &str, roles: &[String]) -> anyhow::Result<()> {
    let store = Store::open(&cfg.store.url).await?;
    let user = user_named(&store, name).await?;
    if user.source == Source::Oidc {
        bail!(
            "`{name}` comes from the identity provider; its roles follow `oidc.role_map` at each sign-in"
        );
    }
    store.set_roles(&user.id, roles).await?;
    let removed = user.roles.iter().any(|r| !roles.contains(r));
    if removed {
        revoke(cfg, &store, Kind::User, &user.id).await?;
        println!(
            "roles of `{name}`: {}; their sessions were revoked so the change applies now",
            roles.join(",")
        );
    } else {
        println!(
            "roles of `{name}`: {}; they apply from the next sign-in",
            roles.join(",")
        );
    }
    store.close().await;
    Ok(())
}

/// `keyward devices list [--user NAME]`
pub async fn devices(cfg: &Config, user: Option<&str>) -> anyhow::Result<()> {
    let store = Store::open(&cfg.store.url).await?;
    let users = store.users().await?;
    let filter = match user {
        Some(name) => Some(user_named(&store, name).await?.id),
        None => None,
    };
    let devices: Vec<Device> = store.devices(filter.as_deref()).await?;
    println!(
        "{:<25} {:<20} {:<24} {:<9} {:<21} LAST USED",
        "DEVICE", "USER", "NAME", "KIND", "CREATED"
    );
    for d in &devices {
        let owner = users
            .iter()
            .find(|u| u.id == d.user_id)
            .map_or("?", |u| u.name.as_str());
        println!(
            "{:<25} {:<20} {:<24} {:<9} {:<21} {}",
            d.device,
            owner,
            d.name,
            if d.attested { "attested" } else { "passkey" },
            when(d.created_at),
            d.last_used_at.map_or_else(|| "never".into(), when)
        );
    }
    store.close().await;
    Ok(())
}

/// `keyward devices revoke DEVICE`: the device can no longer sign in and its sessions
/// end everywhere.
pub async fn revoke_device(cfg: &Config, device: &str) -> anyhow::Result<()> {
    let store = Store::open(&cfg.store.url).await?;
    // Revoke first: should the deletion then fail, the device's sessions are already
    // gone and the command can be run again (deleting first could leave them valid
    // with no device left to name).
    if store.device(device).await?.is_none() {
        bail!("no device `{device}` (see `keyward devices list`)");
    }
    revoke(cfg, &store, Kind::Device, device).await?;
    if store.delete_device(None, device).await?.is_none() {
        bail!("device `{device}` was deleted meanwhile; its sessions are revoked");
    }
    store.close().await;
    Ok(())
}
