//! The key-ring file: the only IO in this crate.
//!
//! TOML, versioned (`version = 1`), one `[[session]]` / `[[assertion]]` table per key.
//! Session secrets are PASERK `k4.local.` strings (base64url), assertion keys PKCS#8 DER
//! in standard base64. [`load`] refuses files readable by group or others and checks
//! that every id matches its key material; [`save`] replaces the file atomically (a
//! 0600 temporary file in the same directory, given the old file's owner, fsync,
//! rename, fsync of the directory).

use std::fs::{self, File, Permissions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};
use pasetors::keys::SymmetricKey;
use pasetors::paserk::FormatAsPaserk;
use pasetors::version4::V4;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{AssertionKey, KeyKind, KeyRing, KeyRingError, KeyState, SessionKey};

/// The file format version this code reads and writes.
pub const FORMAT_VERSION: i64 = 1;

/// Refuse files larger than this (a key ring is a few KiB).
const MAX_FILE_LEN: u64 = 1024 * 1024;

const HEADER: &str = "\
# keyward key ring: SECRET. Keep it mode 0600, owned by the user keyward runs as.
# Managed by `keyward keys generate|rotate|list|retire` (see docs/keys.md).
";

#[derive(Deserialize)]
struct Probe {
    version: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    version: i64,
    #[serde(default)]
    session: Vec<Entry>,
    #[serde(default)]
    assertion: Vec<Entry>,
}

/// One key. `secret` is set for session keys, `private_key_pkcs8` for assertion keys.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
    created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key_pkcs8: Option<String>,
}

/// Reads and validates the key ring at `path`.
pub fn load(path: &Path) -> Result<KeyRing, KeyRingError> {
    let io = |action, error| KeyRingError::Io {
        action,
        path: path.to_owned(),
        error,
    };
    let mut file = File::open(path).map_err(|e| io("open", e))?;
    let meta = file.metadata().map_err(|e| io("inspect", e))?;
    check_permissions(path, &meta)?;
    if meta.len() > MAX_FILE_LEN {
        return Err(format_error(
            path,
            "larger than 1 MiB; this is not a key-ring file",
        ));
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(|e| io("read", e))?;
    parse(path, &text)
}

/// Held while a command reads, changes and writes the key ring: two at once (an
/// operator's `retire` during a renewal hook's `rotate`, say) would otherwise each
/// write what they read, and one change, perhaps the retirement of a leaked key,
/// would be lost. An advisory lock on `<ring>.lock` beside the ring; released on drop.
#[derive(Debug)]
pub struct WriteLock {
    _file: File,
}

/// Waits for, then takes, the key ring's [`WriteLock`].
pub fn lock(path: &Path) -> Result<WriteLock, KeyRingError> {
    let io = |action, error| KeyRingError::Io {
        action,
        path: path.to_owned(),
        error,
    };
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode_owner_only()
        .open(PathBuf::from(name))
        .map_err(|e| io("create the lock file of", e))?;
    file.lock().map_err(|e| io("lock", e))?;
    Ok(WriteLock { _file: file })
}

/// `mode(0o600)` where there are modes.
trait OwnerOnly {
    fn mode_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for fs::OpenOptions {
    #[cfg(unix)]
    fn mode_owner_only(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }

    #[cfg(not(unix))]
    fn mode_owner_only(&mut self) -> &mut Self {
        self
    }
}

/// Writes `ring` to `path` atomically, with mode 0600 from the moment it exists.
pub fn save(path: &Path, ring: &KeyRing) -> Result<(), KeyRingError> {
    let io = |action, error| KeyRingError::Io {
        action,
        path: path.to_owned(),
        error,
    };
    let text = render(ring);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".keyward-keys.")
        .suffix(".tmp")
        .permissions(owner_only())
        .tempfile_in(dir)
        .map_err(|e| io("create a temporary file next to", e))?;
    if let Ok(existing) = fs::metadata(path) {
        keep_owner(tmp.as_file(), &existing).map_err(|e| io("keep the owner of", e))?;
    }
    tmp.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io("sync", e))?;
    tmp.persist(path).map_err(|e| io("replace", e.error))?;
    // Make the rename itself durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory of", e))
}

#[cfg(unix)]
fn owner_only() -> Permissions {
    use std::os::unix::fs::PermissionsExt;
    Permissions::from_mode(0o600)
}

#[cfg(not(unix))]
fn owner_only() -> Permissions {
    fs::metadata(".")
        .map(|m| m.permissions())
        .expect("current directory")
}

/// A replaced key ring keeps its owner and group (e.g. when root runs a renewal hook
/// for a ring owned by the keyward user). A no-op when they are already ours.
#[cfg(unix)]
fn keep_owner(file: &File, existing: &fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ours = file.metadata()?;
    if (ours.uid(), ours.gid()) == (existing.uid(), existing.gid()) {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(existing.uid()), Some(existing.gid()))
}

#[cfg(not(unix))]
fn keep_owner(_: &File, _: &fs::Metadata) -> std::io::Result<()> {
    Ok(())
}

/// Only its owner may read the key ring; or, read-only (0440) and owned by root, the
/// owner's group: what Kubernetes makes of a Secret volume with `fsGroup`, where the
/// group is the pod's alone.
fn private_enough(mode: u32, owner: u32) -> bool {
    mode & 0o077 == 0 || (owner == 0 && mode == 0o440)
}

#[cfg(unix)]
fn check_permissions(path: &Path, meta: &fs::Metadata) -> Result<(), KeyRingError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = meta.permissions().mode() & 0o777;
    if !private_enough(mode, meta.uid()) {
        return Err(KeyRingError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path, _: &fs::Metadata) -> Result<(), KeyRingError> {
    Ok(())
}

fn format_error(path: &Path, problem: impl Into<String>) -> KeyRingError {
    KeyRingError::Format {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// A TOML error without the source snippet (which could quote a secret).
fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> KeyRingError {
    let line = err
        .span()
        .map(|span| format!(" (line {})", text[..span.start].lines().count().max(1)))
        .unwrap_or_default();
    format_error(path, format!("{}{line}", err.message().trim_end()))
}

fn parse(path: &Path, text: &str) -> Result<KeyRing, KeyRingError> {
    let probe: Probe = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    match probe.version {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(format_error(
                path,
                format!("version = {v} is not supported (this keyward reads version = 1)"),
            ));
        }
        None => return Err(format_error(path, "missing `version = 1` at the top")),
    }
    let file: FileV1 = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    let session = file
        .session
        .iter()
        .map(|e| session_key(path, e))
        .collect::<Result<Vec<_>, _>>()?;
    let assertion = file
        .assertion
        .iter()
        .map(|e| assertion_key(path, e))
        .collect::<Result<Vec<_>, _>>()?;
    KeyRing::from_keys(session, assertion).map_err(|problem| KeyRingError::Invalid {
        path: path.to_owned(),
        problem: Box::new(problem),
    })
}

fn state(path: &Path, kind: KeyKind, e: &Entry) -> Result<KeyState, KeyRingError> {
    let id = &e.id;
    match (e.state.as_str(), e.since) {
        ("active", None) => Ok(KeyState::Active),
        ("verify", Some(since)) => Ok(KeyState::Verify { since }),
        ("retired", Some(since)) => Ok(KeyState::Retired { since }),
        ("active", Some(_)) => Err(format_error(
            path,
            format!("{kind} key {id}: an active key has no `since`; remove it"),
        )),
        ("verify" | "retired", None) => Err(format_error(
            path,
            format!(
                "{kind} key {id}: state = \"{}\" needs `since` (unix seconds)",
                e.state
            ),
        )),
        (other, _) => Err(format_error(
            path,
            format!(
                "{kind} key {id}: state = \"{other}\" is unknown; \
                 use \"active\", \"verify\" or \"retired\""
            ),
        )),
    }
}

fn session_key(path: &Path, e: &Entry) -> Result<SessionKey, KeyRingError> {
    let kind = KeyKind::Session;
    let state = state(path, kind, e)?;
    let (Some(secret), None) = (&e.secret, &e.private_key_pkcs8) else {
        return Err(format_error(
            path,
            format!(
                "session key {}: needs `secret` (and no `private_key_pkcs8`)",
                e.id
            ),
        ));
    };
    let key = SymmetricKey::<V4>::try_from(secret.as_str()).map_err(|_| {
        format_error(
            path,
            format!(
                "session key {}: `secret` is not a PASERK k4.local key",
                e.id
            ),
        )
    })?;
    let key = SessionKey::from_paseto_key(key, e.created, state);
    if key.id() != e.id {
        return Err(mismatch(path, kind, &e.id));
    }
    Ok(key)
}

fn assertion_key(path: &Path, e: &Entry) -> Result<AssertionKey, KeyRingError> {
    let kind = KeyKind::Assertion;
    let state = state(path, kind, e)?;
    let (Some(encoded), None) = (&e.private_key_pkcs8, &e.secret) else {
        return Err(format_error(
            path,
            format!(
                "assertion key {}: needs `private_key_pkcs8` (and no `secret`)",
                e.id
            ),
        ));
    };
    let der = Base64::decode_vec(encoded).map(Zeroizing::new).ok();
    let key = der
        .and_then(|der| AssertionKey::from_pkcs8_der(&der, e.created, state))
        .ok_or_else(|| {
            format_error(
                path,
                format!(
                    "assertion key {}: `private_key_pkcs8` is not a base64 PKCS#8 P-256 key",
                    e.id
                ),
            )
        })?;
    if key.id() != e.id {
        return Err(mismatch(path, kind, &e.id));
    }
    Ok(key)
}

fn mismatch(path: &Path, kind: KeyKind, id: &str) -> KeyRingError {
    KeyRingError::IdMismatch {
        path: PathBuf::from(path),
        kind,
        id: id.to_owned(),
    }
}

fn entry(id: &str, created: i64, state: KeyState) -> Entry {
    let since = match state {
        KeyState::Active => None,
        KeyState::Verify { since } | KeyState::Retired { since } => Some(since),
    };
    Entry {
        id: id.to_owned(),
        state: state.as_str().to_owned(),
        since,
        created,
        secret: None,
        private_key_pkcs8: None,
    }
}

/// The file text. Zeroized on drop: it holds every secret in the ring.
fn render(ring: &KeyRing) -> Zeroizing<String> {
    let session = ring.session_keys().iter().map(|k| {
        let mut paserk = String::new();
        k.paseto_key()
            .fmt(&mut paserk)
            .expect("writing to a String cannot fail");
        Entry {
            secret: Some(paserk),
            ..entry(k.id(), k.created(), k.state())
        }
    });
    let assertion = ring.assertion_keys().iter().map(|k| Entry {
        private_key_pkcs8: Some(Base64::encode_string(&k.to_pkcs8_der())),
        ..entry(k.id(), k.created(), k.state())
    });
    let mut file = FileV1 {
        version: FORMAT_VERSION,
        session: session.collect(),
        assertion: assertion.collect(),
    };
    let body = toml::to_string(&file).expect("the key-ring file is always valid TOML");
    for e in file.session.iter_mut().chain(file.assertion.iter_mut()) {
        zeroize::Zeroize::zeroize(&mut e.secret);
        zeroize::Zeroize::zeroize(&mut e.private_key_pkcs8);
    }
    Zeroizing::new(format!("{HEADER}{}", Zeroizing::new(body).as_str()))
}

#[cfg(test)]
mod tests;
