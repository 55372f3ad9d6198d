//! What can go wrong with a key ring, each with what to do about it.

use std::path::PathBuf;

use super::KeyKind;

/// Errors from key-ring operations and from loading or saving the key-ring file.
/// Messages name the key (ids are not secret) and the fix; they never contain secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    #[error(
        "no active {kind} key: exactly one {kind} key must have state = \"active\" \
         (run `keyward keys rotate` to create one)"
    )]
    NoActiveKey { kind: KeyKind },

    #[error(
        "{count} active {kind} keys: exactly one may have state = \"active\"; \
         set the others to state = \"verify\" with `since` = the time they stopped issuing"
    )]
    SeveralActiveKeys { kind: KeyKind, count: usize },

    #[error("{kind} key {id} appears more than once: remove the repeated entry")]
    DuplicateKey { kind: KeyKind, id: String },

    #[error("no key with id {id} in the key ring (`keyward keys list` shows the ids)")]
    NoSuchKey { id: String },

    #[error(
        "key {id} is active and cannot be retired: run `keyward keys rotate` first, \
         then retire it"
    )]
    RetireActive { id: String },

    #[error(
        "the random source returned unusable bytes (repeated or out-of-range keys); \
         the system random number generator is broken"
    )]
    BrokenRandomSource,

    #[error("cannot {action} key ring {path}: {error}", path = path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(
        "key ring {path} is accessible by group or others (mode {mode:03o}); \
         it holds secrets: run `chmod 600 {path}`",
        path = path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },

    #[error("key ring {path} is not valid: {problem}", path = path.display())]
    Format { path: PathBuf, problem: String },

    #[error(
        "{kind} key {id} in {path}: the id does not match the key material (edited or \
         corrupted file); restore the file from a backup or run `keyward keys generate`",
        path = path.display()
    )]
    IdMismatch {
        path: PathBuf,
        kind: KeyKind,
        id: String,
    },

    #[error("key ring {path}: {problem}", path = path.display())]
    Invalid {
        path: PathBuf,
        problem: Box<KeyRingError>,
    },
}
