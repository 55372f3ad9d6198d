//! The `keyward` binary as an operator runs it: config validation, ops endpoints,
//! reload, graceful shutdown.

use std::process::Command;
use std::time::Duration;

use keyward_spoa::peer::{self, AgentFrame};
use keyward_tests::http::get;
use keyward_tests::keyward::Keyward;
use keyward_tests::{eventually, free_port, keyward_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn keyward() -> Command {
    Command::new(keyward_bin())
}

/// `keyward check-config --config <path>`.
fn check_config(path: &std::path::Path) -> std::process::Output {
    keyward()
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

fn config(spoa: u16, ops: u16, extra: &str) -> String {
    format!(
        "version = 1\n[spoa]\nlisten = [\"127.0.0.1:{spoa}\"]\n{extra}\n[ops]\nlisten = \"127.0.0.1:{ops}\"\n"
    )
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.toml");
    std::fs::write(&path, config(1, 2, "handler_timout = \"1s\"")).unwrap();
    let out = check_config(&path);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("handler_timout"), "{err}");

    std::fs::write(&path, config(1, 2, "")).unwrap();
    let out = check_config(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn serves_ops_reloads_and_drains_on_sigterm() {
    let mut k = Keyward::start("[[rule]]\nname = \"all\"\naccess = \"public\"\n", "").await;
    let ops = k.ops;
    assert_eq!(get(ops, "/healthz", &[]).await.unwrap().status, 200);
    assert_eq!(get(ops, "/readyz", &[]).await.unwrap().status, 200);

    // A real SPOP exchange, visible in the metrics.
    let mut s = tokio::net::TcpStream::connect(k.spoa).await.unwrap();
    let mut bytes = peer::hello(16_380, "pipelining", false);
    bytes.extend(peer::notify(1, 1, "keyward-request", &[]));
    s.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "agent closed early");
        buf.extend_from_slice(&chunk[..n]);
        while let Some((f, _, used)) = peer::read(&buf).unwrap() {
            buf.drain(..used);
            frames.push(f);
        }
    }
    assert!(matches!(
        frames[1],
        AgentFrame::Ack {
            stream_id: 1,
            frame_id: 1,
            ..
        }
    ));
    assert_eq!(
        k.metric("keyward_spoa_frames_received_total{type=\"notify\"}")
            .await,
        1.0
    );
    assert_eq!(k.metric("keyward_spoa_connections_active").await, 1.0);

    // An invalid config on SIGHUP is rejected; the agent keeps serving.
    let good = std::fs::read_to_string(&k.config).unwrap();
    std::fs::write(&k.config, good.replace("[spoa]", "[spoa]\nbogus = 1")).unwrap();
    k.proc().signal("HUP");
    let series = "keyward_config_reloads_total{result=\"error\"}";
    eventually(Duration::from_secs(10), "reload error counted", || async {
        (k.metric(series).await >= 1.0).then_some(())
    })
    .await;
    // A broken policy is rejected too, and the old one stays in force.
    std::fs::write(&k.config, &good).unwrap();
    std::fs::write(&k.policy, "[[rule]]\nname = \"x\"\naccess = \"roles\"\n").unwrap();
    k.proc().signal("HUP");
    eventually(Duration::from_secs(10), "policy error counted", || async {
        (k.metric(series).await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(k.metric("keyward_policy_rules").await, 1.0);

    // SIGTERM: the open connection gets a clean AGENT-DISCONNECT, the process exits 0.
    k.proc().signal("TERM");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    buf.extend(rest);
    let (f, _, _) = peer::read(&buf).unwrap().expect("a frame before close");
    assert_eq!(
        f,
        AgentFrame::Disconnect {
            status: 0,
            message: "agent shutting down".into()
        }
    );
    let status = k
        .proc()
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// A config in a temp dir whose key ring is `<dir>/<ring>` (not created).
fn config_with_keyring(ring: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.toml");
    let keyring = dir.path().join(ring);
    let text = format!(
        "{}[session]\nkeyring = \"{}\"\n",
        config(free_port(), free_port(), ""),
        keyring.display()
    );
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn serve_refuses_to_start_without_a_key_ring() {
    let (_dir, path) = config_with_keyring("nope.toml");
    let out = keyward()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("session.keyring") && err.contains("keyward keys generate"),
        "{err}"
    );
}

#[test]
fn minted_token_is_alone_on_stdout_when_audit_goes_to_the_default_stream() {
    let (_dir, path) = config_with_keyring("ring.toml");
    let run = |args: &[&str]| {
        keyward()
            .args(args)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    assert!(run(&["keys", "generate"]).status.success());
    let out = run(&["token", "mint", "--user", "u1", "--roles", "a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("v4.local."), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"event\":\"token_minted\""));
}

/// Key ring commands run at once (a renewal hook's rotation while an operator
/// retires a key) each see the other's change: none is lost.
#[test]
fn concurrent_key_ring_commands_lose_no_change() {
    let (_dir, path) = config_with_keyring("ring.toml");
    let cmd = |args: &[&str]| {
        let mut c = keyward();
        c.args(args).arg("--config").arg(&path);
        c
    };
    assert!(
        cmd(&["keys", "generate"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let list =
        String::from_utf8_lossy(&cmd(&["keys", "list"]).output().unwrap().stdout).into_owned();
    let first = list
        .lines()
        .find(|l| l.starts_with("session"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no session key in {list}"))
        .to_owned();
    // Only a key that no longer issues can be retired.
    assert!(
        cmd(&["keys", "rotate", "--session"])
            .output()
            .unwrap()
            .status
            .success()
    );
    const ROTATIONS: usize = 8;
    let mut running: Vec<_> = (0..ROTATIONS)
        .map(|_| {
            cmd(&["keys", "rotate", "--session"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    running.push(
        cmd(&["keys", "retire", &first])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for mut c in running {
        assert!(c.wait().unwrap().success());
    }
    let list =
        String::from_utf8_lossy(&cmd(&["keys", "list"]).output().unwrap().stdout).into_owned();
    let session: Vec<&str> = list.lines().filter(|l| l.starts_with("session")).collect();
    assert_eq!(session.len(), 2 + ROTATIONS, "{list}");
    assert!(
        session
            .iter()
            .any(|l| l.ends_with(&first) && l.contains("retired")),
        "the retirement was lost: {list}"
    );
}

/// `keyward users …` / `keyward devices …` against a running agent: invites are
/// one-time links on the portal's origin, the enrollment page accepts them once they
/// exist, disabling revokes, and unknown names are errors that say what to run.
#[tokio::test]
async fn users_and_devices_commands() {
    let k = Keyward::start("[[rule]]\nname = \"all\"\naccess = \"authenticated\"\n", "").await;
    let run = |args: &[&str]| {
        let out = k.cli(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = run(&[
        "users",
        "invite",
        "alice",
        "--roles",
        "ops,admin",
        "--email",
        "alice@example.test",
    ]);
    assert!(ok, "{err}");
    let link = out
        .split_whitespace()
        .find(|w| w.starts_with("https://auth.test/.keyward/enroll?invite="))
        .unwrap_or_else(|| panic!("no link in {out}"))
        .to_owned();
    let path = link.trim_start_matches("https://auth.test");

    // The portal knows the link: the enrollment page names the user.
    let page = get(k.portal, path, &[]).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("alice"), "{}", page.body);
    // A link that was never issued is refused with advice, not a code.
    let bogus = get(k.portal, "/.keyward/enroll?invite=AAAA", &[])
        .await
        .unwrap();
    assert_eq!(bogus.status, 404);
    assert!(bogus.body.contains("not valid"), "{}", bogus.body);

    let (ok, out, _) = run(&["users", "list"]);
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.starts_with("alice"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("local") && line.contains("active") && line.contains("admin,ops"),
        "{line}"
    );

    // Roles: taking one away revokes the sessions (they carry roles).
    let (ok, out, err) = run(&["users", "roles", "alice", "admin"]);
    assert!(ok, "{err}");
    assert!(out.contains("revoked"), "{out}");

    // Disable: the invite stops working, sessions are revoked.
    let (ok, out, err) = run(&["users", "disable", "alice"]);
    assert!(ok, "{err}");
    assert!(out.contains("in force on the local agent now"), "{out}");
    let page = get(k.portal, path, &[]).await.unwrap();
    assert_eq!(page.status, 403, "{}", page.body);
    let (ok, _, _) = run(&["users", "enable", "alice"]);
    assert!(ok);

    let (ok, out, _) = run(&["devices", "list", "--user", "alice"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    let (ok, _, err) = run(&["devices", "revoke", "d_nope"]);
    assert!(!ok);
    assert!(err.contains("keyward devices list"), "{err}");
    let (ok, _, err) = run(&["users", "disable", "nobody"]);
    assert!(!ok);
    assert!(err.contains("keyward users list"), "{err}");

    // The audit names no user.
    let audit = k.audit();
    assert!(audit.contains("\"invited\""), "{audit}");
    assert!(!audit.contains("alice"), "{audit}");
}

/// The configuration shipped in deploy/ is valid as it is.
#[test]
fn shipped_config_passes_check_config() {
    let path = keyward_tests::repo_root().join("deploy/etc/keyward.toml");
    let out = check_config(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An edit that keeps the file's modification time (same second, or a tool that
/// restores it) is still noticed: watched files are fingerprinted by content.
#[tokio::test]
async fn an_edit_that_keeps_the_mtime_is_still_reloaded() {
    let k = Keyward::start("[[rule]]\nname = \"one\"\naccess = \"public\"\n", "").await;
    let rules = || k.metric("keyward_policy_rules");
    assert_eq!(rules().await, 1.0);
    let mtime = std::fs::metadata(&k.policy).unwrap().modified().unwrap();
    std::fs::write(
        &k.policy,
        "[[rule]]\nname = \"one\"\naccess = \"public\"\n[[rule]]\nname = \"two\"\naccess = \"public\"\n",
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&k.policy)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        std::fs::metadata(&k.policy).unwrap().modified().unwrap(),
        mtime
    );
    eventually(Duration::from_secs(10), "the two-rule policy", || async {
        (rules().await == 2.0).then_some(())
    })
    .await;
}
