//! Revocations: the records in the store, and the in-memory snapshot every request is
//! checked against (no IO on the request path).

use std::collections::HashMap;

use keyward_session::Claims;

/// What a revocation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One session, by session id.
    Session,
    /// Every session of a user issued at or before the revocation.
    User,
    /// Every session made with a device issued at or before the revocation.
    Device,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::User => "user",
            Kind::Device => "device",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "session" => Some(Kind::Session),
            "user" => Some(Kind::User),
            "device" => Some(Kind::Device),
            _ => None,
        }
    }
}

/// One entry of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Increasing; agents read the log from the last id they saw.
    pub id: i64,
    pub kind: Kind,
    pub subject: String,
    /// When it was revoked (unix seconds).
    pub at: i64,
    /// After this, nothing it matches can still be valid: it may be forgotten.
    pub until: i64,
}

/// The revocations in force, indexed for the request path.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    sessions: HashMap<String, i64>,
    users: HashMap<String, i64>,
    devices: HashMap<String, i64>,
    /// The highest log id applied.
    last_id: i64,
}

impl Revocations {
    /// Whether `claims` belongs to a revoked session.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        self.sessions.contains_key(&claims.sid)
            || self
                .users
                .get(&claims.sub)
                .is_some_and(|&at| claims.iat <= at)
            || claims
                .dev
                .as_ref()
                .and_then(|d| self.devices.get(d))
                .is_some_and(|&at| claims.iat <= at)
    }

    /// Adds log entries (in id order); entries already applied are skipped.
    pub fn apply(&mut self, entries: &[Revocation]) {
        for r in entries {
            if r.id <= self.last_id {
                continue;
            }
            let map = match r.kind {
                Kind::Session => &mut self.sessions,
                Kind::User => &mut self.users,
                Kind::Device => &mut self.devices,
            };
            let at = map.entry(r.subject.clone()).or_insert(r.at);
            *at = (*at).max(r.at);
            self.last_id = self.last_id.max(r.id);
        }
    }

    /// Forgets what can no longer match a valid token: `max_lifetime` after it was made.
    /// The latest user- or device-wide revocation among `user` and `device`: a
    /// session issued at or before it is revoked.
    pub fn latest(&self, user: &str, device: Option<&str>) -> Option<i64> {
        let u = self.users.get(user).copied();
        let d = device.and_then(|d| self.devices.get(d).copied());
        u.max(d)
    }

    pub fn forget_before(&mut self, cutoff: i64) {
        self.sessions.retain(|_, at| *at >= cutoff);
        self.users.retain(|_, at| *at >= cutoff);
        self.devices.retain(|_, at| *at >= cutoff);
    }

    pub fn last_id(&self) -> i64 {
        self.last_id
    }

    pub fn len(&self) -> usize {
        self.sessions.len() + self.users.len() + self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_session::AuthMethod;

    fn claims(sid: &str, sub: &str, dev: Option<&str>, iat: i64) -> Claims {
        Claims {
            sid: sid.into(),
            sub: sub.into(),
            email: None,
            roles: vec![],
            dev: dev.map(Into::into),
            aaguid: None,
            amr: AuthMethod::Passkey,
            auth_time: iat,
            iat,
            exp: iat + 3600,
        }
    }

    fn rev(id: i64, kind: Kind, subject: &str, at: i64) -> Revocation {
        Revocation {
            id,
            kind,
            subject: subject.into(),
            at,
            until: at + 3600,
        }
    }

    #[test]
    fn each_kind_revokes_what_it_names() {
        let mut r = Revocations::default();
        r.apply(&[
            rev(1, Kind::Session, "s1", 100),
            rev(2, Kind::User, "alice", 100),
            rev(3, Kind::Device, "d9", 100),
        ]);
        assert!(r.is_revoked(&claims("s1", "bob", None, 50)));
        assert!(r.is_revoked(&claims("s2", "alice", None, 100)));
        assert!(r.is_revoked(&claims("s3", "carol", Some("d9"), 99)));
        assert!(!r.is_revoked(&claims("s4", "bob", Some("d8"), 50)));
        assert_eq!(r.last_id(), 3);
    }

    #[test]
    fn user_and_device_revocations_spare_later_logins() {
        let mut r = Revocations::default();
        r.apply(&[
            rev(1, Kind::User, "alice", 100),
            rev(2, Kind::Device, "d9", 100),
        ]);
        assert!(!r.is_revoked(&claims("s", "alice", None, 101)));
        assert!(!r.is_revoked(&claims("s", "bob", Some("d9"), 101)));
    }

    #[test]
    fn replayed_entries_are_skipped_and_old_ones_forgotten() {
        let mut r = Revocations::default();
        r.apply(&[rev(5, Kind::User, "alice", 100)]);
        r.apply(&[
            rev(4, Kind::User, "bob", 100),
            rev(5, Kind::User, "alice", 100),
        ]);
        assert_eq!(r.len(), 1, "id 4 was older than what was applied");
        r.forget_before(101);
        assert!(r.is_empty());
    }
}
