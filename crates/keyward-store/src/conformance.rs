//! What the store does, the same on every backend. Each case gets the URL of an empty
//! database of its own and opens it itself (some reopen it). The SQLite unit tests
//! run every case on a temp file; tests/e2e/postgres.rs runs every case on a
//! throwaway PostgreSQL cluster.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{
    CeremonyLimits, Conflict, Invite, Kind, NewDevice, NewUser, Put, Source, Store, Touch,
};

/// One case: takes the URL of an empty database.
pub type Case = fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name.
        pub const CASES: &[(&str, Case)] = &[$((stringify!($name), |url| Box::pin($name(url)))),*];

        #[cfg(test)]
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(format!("sqlite://{}", dir.path().join("k.db").display())).await;
                }
            )*
        }
    };
}

cases!(
    revocations_survive_reopening,
    concurrent_revocations_are_read_without_gaps,
    users_roundtrip_and_names_are_unique,
    an_invite_enrolls_exactly_one_device,
    a_credential_belongs_to_one_user,
    devices_are_renamed_touched_and_deleted_by_their_owner_only,
    the_device_key_is_made_once_and_kept,
    oidc_users_follow_the_idp_but_stay_disabled,
    a_ceremony_is_taken_once_and_expires,
);

async fn open(url: &str) -> Store {
    Store::open(url).await.expect("open the store")
}

async fn revocations_survive_reopening(url: String) {
    let store = open(&url).await;
    let a = store.revoke(Kind::User, "alice", 100, 200).await.unwrap();
    let b = store.revoke(Kind::Session, "s1", 150, 250).await.unwrap();
    assert!(b.id > a.id);
    store.close().await;

    let store = open(&url).await;
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
    store.close().await;
}

/// Agents read "entries after the last id I saw": writers committing out of id order
/// would make a reader skip an entry for good. Many writers at once, one reader
/// following the log the way the agents do; the reader must see every entry.
async fn concurrent_revocations_are_read_without_gaps(url: String) {
    const WRITERS: usize = 6;
    const EACH: usize = 20;
    let store = open(&url).await;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, done) = (store.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                let subject = format!("s{w}-{i}");
                ids.push(
                    store
                        .revoke(Kind::Session, &subject, 1, 10)
                        .await
                        .unwrap()
                        .id,
                );
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ids
        }));
    }
    let mut seen = Vec::new();
    let mut last = 0;
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst) == WRITERS;
        for r in store.revocations_since(last, 1).await.unwrap() {
            last = r.id;
            seen.push(r.id);
        }
        if finished {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    written.sort_unstable();
    assert_eq!(seen, written, "the reader skipped or repeated entries");
    store.close().await;
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

async fn users_roundtrip_and_names_are_unique(url: String) {
    let s = open(&url).await;
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
    assert_eq!(s.users().await.unwrap(), vec![u.clone()]);
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
    assert!(s.set_roles("local:a1", &["eng".into()]).await.unwrap());
    assert_eq!(s.user("local:a1").await.unwrap().unwrap().roles, ["eng"]);
    s.close().await;
}

async fn an_invite_enrolls_exactly_one_device(url: String) {
    let s = open(&url).await;
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
    s.set_disabled("local:a1", true, 160).await.unwrap();
    let other = [8u8; 32];
    s.create_invite(&other, "local:a1", 160, 300).await.unwrap();
    assert_eq!(s.invite(&other, 170).await.unwrap(), Invite::UserDisabled);
    s.close().await;
}

async fn a_credential_belongs_to_one_user(url: String) {
    let s = open(&url).await;
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
    assert_eq!(s.devices(None).await.unwrap(), vec![d.clone()]);
    assert_eq!(s.devices(Some("local:a1")).await.unwrap(), vec![d]);
    assert!(s.devices(Some("local:b1")).await.unwrap().is_empty());
    s.close().await;
}

async fn devices_are_renamed_touched_and_deleted_by_their_owner_only(url: String) {
    let s = open(&url).await;
    s.create_user(&alice()).await.unwrap().unwrap();
    let attested = NewDevice {
        attested: true,
        aaguid: Some("ee882879-721c-4913-9775-3dfcce97072a"),
        ..dev("d1", b"c1", "local:a1")
    };
    let d = s.add_device(&attested, None).await.unwrap().unwrap();
    assert!(d.attested);
    assert_eq!(d.aaguid.as_deref(), attested.aaguid);
    assert!(!s.rename_device("local:b1", "d1", "mine").await.unwrap());
    assert!(s.rename_device("local:a1", "d1", "YubiKey").await.unwrap());
    assert_eq!(
        s.touch_device("d1", "{\"n\":2}", 2, 300).await.unwrap(),
        Touch::Recorded
    );
    let d = s.device("d1").await.unwrap().unwrap();
    assert_eq!(
        (d.name.as_str(), d.passkey.as_str(), d.last_used_at),
        ("YubiKey", "{\"n\":2}", Some(300))
    );
    // A sign-in that finishes after its user was disabled records nothing.
    s.set_disabled("local:a1", true, 310).await.unwrap();
    assert_eq!(
        s.touch_device("d1", "{\"n\":3}", 3, 320).await.unwrap(),
        Touch::Gone
    );
    assert_eq!(
        s.device("d1").await.unwrap().unwrap().last_used_at,
        Some(300)
    );
    s.set_disabled("local:a1", false, 330).await.unwrap();
    assert_eq!(
        s.touch_device("d1", "{\"n\":5}", 5, 340).await.unwrap(),
        Touch::Recorded
    );
    // A sign-in that read counter 2 and finishes after the one that recorded 5 must
    // not set it back, nor may a counter that dropped to 0.
    for behind in [4, 5, 0] {
        assert_eq!(
            s.touch_device("d1", "{\"n\":4}", behind, 345)
                .await
                .unwrap(),
            Touch::CounterBehind
        );
    }
    assert_eq!(s.device("d1").await.unwrap().unwrap().passkey, "{\"n\":5}");
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
    assert_eq!(
        s.touch_device("d1", "{\"n\":6}", 6, 350).await.unwrap(),
        Touch::Gone
    );
    s.add_device(&dev("d2", b"c2", "local:a1"), None)
        .await
        .unwrap()
        .unwrap();
    // An authenticator without a counter reports 0 every time.
    for t in [400, 410] {
        assert_eq!(
            s.touch_device("d2", "{}", 0, t).await.unwrap(),
            Touch::Recorded
        );
    }
    assert!(s.delete_device(None, "d2").await.unwrap().is_some());
    s.close().await;
}

async fn the_device_key_is_made_once_and_kept(url: String) {
    let s = open(&url).await;
    let k1 = s.device_key().await.unwrap();
    assert_eq!(s.device_key().await.unwrap(), k1);
    s.close().await;
    let s = open(&url).await;
    assert_eq!(s.device_key().await.unwrap(), k1);
    s.close().await;
}

async fn oidc_users_follow_the_idp_but_stay_disabled(url: String) {
    let s = open(&url).await;
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
    s.close().await;
}

async fn a_ceremony_is_taken_once_and_expires(url: String) {
    let s = open(&url).await;
    let (a, b, c, d) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
    let limits = CeremonyLimits {
        per_client: 2,
        total: 3,
    };
    let put = |id, client, body, now, exp| {
        let s = s.clone();
        async move {
            s.put_ceremony(id, client, body, now, exp, limits)
                .await
                .unwrap()
        }
    };
    assert_eq!(put(&a, "192.0.2.1", "{\"a\":1}", 100, 400).await, Put::Kept);
    assert_eq!(put(&b, "192.0.2.1", "b", 100, 150).await, Put::Kept);
    // That client has two waiting: a third of its own is refused, another client's
    // is kept, and then everyone's limit is reached.
    assert_eq!(put(&c, "192.0.2.1", "c", 120, 400).await, Put::ClientFull);
    assert_eq!(put(&c, "2001:db8::/64", "c", 120, 400).await, Put::Kept);
    assert_eq!(put(&d, "198.51.100.7", "d", 120, 400).await, Put::Full);
    assert_eq!(
        s.peek_ceremony(&a, 120).await.unwrap().as_deref(),
        Some("{\"a\":1}")
    );
    assert_eq!(
        s.take_ceremony(&a, 120).await.unwrap().as_deref(),
        Some("{\"a\":1}")
    );
    assert_eq!(
        s.take_ceremony(&a, 120).await.unwrap(),
        None,
        "used once only"
    );
    assert_eq!(s.peek_ceremony(&a, 120).await.unwrap(), None);
    // Expired: neither seen nor taken, no longer counted, and purged.
    assert_eq!(s.peek_ceremony(&b, 150).await.unwrap(), None);
    assert_eq!(put(&d, "192.0.2.1", "d", 160, 400).await, Put::Kept);
    assert_eq!(s.purge_ceremonies(160).await.unwrap(), 1);
    assert_eq!(s.take_ceremony(&b, 120).await.unwrap(), None);
    assert_eq!(
        s.take_ceremony(&c, 170).await.unwrap().as_deref(),
        Some("c")
    );
    s.close().await;
}
