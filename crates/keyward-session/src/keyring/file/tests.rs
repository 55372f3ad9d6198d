//! Key-ring file tests: round trip, permissions, and every refusal with its message.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::testutil::{NOW, claims, ring, rng, within};
use crate::token::{open, seal};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A saved ring with a verify-only and a retired key of each kind.
fn saved() -> (tempfile::TempDir, PathBuf, KeyRing) {
    let mut ring = ring(1);
    let first_session = ring.active_session_key().unwrap().id().to_owned();
    let first_assertion = ring.active_assertion_key().unwrap().id().to_owned();
    ring.rotate_session(NOW + 1, &mut rng(2)).unwrap();
    ring.rotate_assertion(NOW + 1, &mut rng(3)).unwrap();
    ring.retire(&first_session, NOW + 2).unwrap();
    ring.retire(&first_assertion, NOW + 2).unwrap();
    ring.rotate_session(NOW + 3, &mut rng(4)).unwrap();
    ring.rotate_assertion(NOW + 3, &mut rng(5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    save(&path, &ring).unwrap();
    (dir, path, ring)
}

/// Rewrites the file with `edit` applied, keeping mode 0600.
fn edit(path: &Path, edit: impl FnOnce(String) -> String) {
    let text = edit(fs::read_to_string(path).unwrap());
    fs::write(path, text).unwrap();
    fs::set_permissions(path, Permissions::from_mode(0o600)).unwrap();
}

fn load_err(path: &Path) -> String {
    load(path).unwrap_err().to_string()
}

#[test]
fn save_then_load_is_the_same_ring() {
    let (_dir, path, ring) = saved();
    let back = load(&path).unwrap();
    assert_eq!(back.list(), ring.list());
    assert_eq!(back.generation(), ring.generation());
    let token = seal(&claims(), &ring).unwrap();
    assert_eq!(open(&token, &back, NOW, within(0)), Ok(claims()));
    let again = tempfile::tempdir().unwrap().keep().join("k.toml");
    save(&again, &back).unwrap();
    assert_eq!(
        fs::read_to_string(&again).unwrap(),
        fs::read_to_string(&path).unwrap()
    );
    fs::remove_dir_all(again.parent().unwrap()).unwrap();
}

#[test]
fn the_file_looks_as_documented() {
    let (_dir, path, _ring) = saved();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# keyward key ring"), "{text}");
    assert!(text.contains("version = 1\n"));
    assert_eq!(text.matches("[[session]]").count(), 3);
    assert_eq!(text.matches("[[assertion]]").count(), 3);
    assert_eq!(text.matches("secret = \"k4.local.").count(), 3);
    assert_eq!(text.matches("private_key_pkcs8 = \"MIG").count(), 3);
    assert_eq!(text.matches("state = \"retired\"").count(), 2);
    assert_eq!(text.matches("state = \"verify\"").count(), 2);
}

#[test]
fn saved_file_is_mode_0600_even_over_a_wider_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    fs::write(&path, "old").unwrap();
    fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
    save(&path, &ring(1)).unwrap();
    assert_eq!(mode(&path), 0o600);
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    // A relative path in the current directory has no parent to speak of.
    assert_eq!(Path::new("keys.toml").parent(), Some(Path::new("")));
}

#[test]
fn group_or_world_accessible_file_is_refused() {
    let (_dir, path, _) = saved();
    for bad in [0o640, 0o604, 0o620, 0o660, 0o644] {
        fs::set_permissions(&path, Permissions::from_mode(bad)).unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            matches!(err, KeyRingError::Permissions { mode, .. } if mode == bad),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
    }
    fs::set_permissions(&path, Permissions::from_mode(0o400)).unwrap();
    assert!(load(&path).is_ok(), "owner read-only is fine");
}

#[test]
fn a_read_only_root_owned_group_readable_ring_is_a_kubernetes_secret() {
    assert!(private_enough(0o600, 1000) && private_enough(0o400, 0));
    assert!(private_enough(0o440, 0));
    for (mode, owner) in [
        (0o440, 1000),
        (0o640, 0),
        (0o444, 0),
        (0o460, 0),
        (0o604, 0),
    ] {
        assert!(!private_enough(mode, owner), "{mode:o} owned by {owner}");
    }
}

#[test]
fn tampered_id_is_refused() {
    let (_dir, path, ring) = saved();
    let id = ring.active_session_key().unwrap().id().to_owned();
    let mut forged = id.clone();
    forged.replace_range(10..11, if &id[10..11] == "A" { "B" } else { "A" });
    edit(&path, |t| t.replace(&id, &forged));
    let err = load(&path).unwrap_err();
    assert!(
        matches!(
            err,
            KeyRingError::IdMismatch {
                kind: KeyKind::Session,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&forged) && err.to_string().contains("backup"));

    let (_dir, path, ring) = saved();
    let kid = ring.active_assertion_key().unwrap().id().to_owned();
    edit(&path, |t| t.replace(&kid, &kid.to_lowercase()));
    let err = load(&path).unwrap_err();
    assert!(
        matches!(
            err,
            KeyRingError::IdMismatch {
                kind: KeyKind::Assertion,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn swapped_secrets_are_refused() {
    let (_dir, path, _) = saved();
    let text = fs::read_to_string(&path).unwrap();
    let secrets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("secret = "))
        .collect();
    let swapped = text
        .replace(secrets[0], "@@")
        .replace(secrets[1], secrets[0])
        .replace("@@", secrets[1]);
    edit(&path, |_| swapped);
    assert!(matches!(load(&path), Err(KeyRingError::IdMismatch { .. })));
}

#[test]
fn exactly_one_active_key_is_enforced() {
    let (_dir, path, _) = saved();
    // Make the verify-only session key active as well.
    edit(&path, |t| {
        t.replacen(
            "state = \"verify\"\nsince = 1767225603",
            "state = \"active\"",
            1,
        )
    });
    let err = load_err(&path);
    assert!(err.contains("2 active session keys"), "{err}");

    let (_dir, path, _) = saved();
    edit(&path, |t| {
        t.replace("state = \"active\"", "state = \"verify\"\nsince = 5")
    });
    let err = load_err(&path);
    assert!(
        err.contains("no active session key") && err.contains("keyward keys rotate"),
        "{err}"
    );
}

#[test]
fn duplicate_entries_are_refused() {
    let (_dir, path, _) = saved();
    let text = fs::read_to_string(&path).unwrap();
    let start = text.find("[[session]]").unwrap();
    let end = text[start + 1..].find("[[session]]").unwrap() + start + 1;
    let first = text[start..end].to_owned();
    edit(&path, |t| format!("{t}\n{first}"));
    let err = load_err(&path);
    assert!(err.contains("appears more than once"), "{err}");
}

#[test]
fn format_problems_name_the_fix() {
    type Case = (&'static str, fn(String) -> String, &'static str);
    let cases: [Case; 7] = [
        (
            "version 2",
            |t| t.replace("version = 1", "version = 2"),
            "version = 2 is not supported",
        ),
        (
            "no version",
            |t| t.replace("version = 1", ""),
            "missing `version = 1`",
        ),
        (
            "unknown key",
            |t| t.replace("version = 1", "version = 1\ncolour = \"red\""),
            "unknown field",
        ),
        (
            "bad state",
            |t| t.replacen("state = \"retired\"", "state = \"old\"", 1),
            "\"active\", \"verify\" or \"retired\"",
        ),
        (
            "no since",
            |t| t.replacen("since = 1767225602\n", "", 1),
            "needs `since`",
        ),
        (
            "bad secret",
            |t| t.replacen("secret = \"k4.local.", "secret = \"k4.public.", 1),
            "not a PASERK k4.local key",
        ),
        (
            "bad pkcs8",
            |t| t.replacen("private_key_pkcs8 = \"MIG", "private_key_pkcs8 = \"XIG", 1),
            "not a base64 PKCS#8 P-256 key",
        ),
    ];
    for (name, change, expected) in cases {
        let (_dir, path, _) = saved();
        edit(&path, change);
        let err = load_err(&path);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "{name}: names the file: {err}"
        );
    }
}

#[test]
fn syntax_errors_do_not_echo_secrets() {
    let (_dir, path, _) = saved();
    let text = fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("secret = "))
        .unwrap()
        .to_owned();
    let secret = line
        .trim_start_matches("secret = \"")
        .trim_end_matches('"')
        .to_owned();
    edit(&path, |t| t.replace(&line, &format!("secret = \"{secret}")));
    let err = load_err(&path);
    assert!(err.contains("line "), "{err}");
    assert!(!err.contains(&secret[9..30]), "{err}");
}

#[test]
fn missing_or_oversized_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = load(&path).unwrap_err();
    assert!(
        matches!(err, KeyRingError::Io { action: "open", .. }),
        "{err}"
    );
    let big = dir.path().join("big.toml");
    fs::write(&big, vec![b'#'; MAX_FILE_LEN as usize + 1]).unwrap();
    fs::set_permissions(&big, Permissions::from_mode(0o600)).unwrap();
    assert!(load_err(&big).contains("larger than 1 MiB"));
    let err = save(&dir.path().join("no/such/dir/keys.toml"), &ring(1)).unwrap_err();
    assert!(
        err.to_string().contains("cannot create a temporary file"),
        "{err}"
    );
}

#[test]
fn replacing_keeps_the_owner() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    save(&path, &ring(1)).unwrap();
    if fs::metadata(&path).unwrap().uid() != 0 {
        return; // only root can give a file away (as a renewal hook does)
    }
    std::os::unix::fs::chown(&path, Some(4242), Some(4243)).unwrap();
    save(&path, &ring(2)).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (4242, 4243, 0o600)
    );
}
