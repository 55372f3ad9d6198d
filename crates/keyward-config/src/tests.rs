#![allow(clippy::result_large_err)] // figment::Jail returns figment::Error

use super::*;
use figment::Jail;

fn load(toml: &str) -> Result<Config, String> {
    let mut out = Err(String::new());
    Jail::expect_with(|jail| {
        jail.create_file("keyward.toml", toml)?;
        out = Config::load(Path::new("keyward.toml")).map_err(|e| e.to_string());
        Ok(())
    });
    out
}

#[test]
fn minimal_file_gets_defaults() {
    let c = load("version = 1").unwrap();
    assert_eq!(c.spoa.listen, vec!["127.0.0.1:12345"]);
    assert_eq!(c.spoa.limits(), Limits::default());
    assert_eq!(c.ops.listen.port(), 9181);
}

#[test]
fn durations_are_text() {
    let c =
        load("version = 1\n[spoa]\nhandler_timeout = \"250ms\"\nidle_timeout = \"2m\"").unwrap();
    assert_eq!(c.spoa.handler_timeout, Duration::from_millis(250));
    assert_eq!(c.spoa.idle_timeout, Duration::from_secs(120));
}

#[test]
fn pipelining_is_a_word() {
    assert_eq!(
        load("version = 1").unwrap().spoa.pipelining,
        Pipelining::Auto
    );
    for (word, want) in [
        ("auto", Pipelining::Auto),
        ("on", Pipelining::On),
        ("off", Pipelining::Off),
    ] {
        let c = load(&format!("version = 1\n[spoa]\npipelining = \"{word}\"")).unwrap();
        assert_eq!(c.spoa.pipelining, want);
        assert_eq!(c.spoa.limits().pipelining, want);
    }
    let err = load("version = 1\n[spoa]\npipelining = \"yes\"").unwrap_err();
    assert!(
        err.contains("pipelining") && err.contains("\"auto\", \"on\", \"off\""),
        "{err}"
    );
    let err = load("version = 1\n[spoa]\npipelining = true").unwrap_err();
    assert!(err.contains("pipelining"), "{err}");
}

#[test]
fn unknown_keys_are_named() {
    let err = load("version = 1\n[spoa]\nhandler_timout = \"1s\"").unwrap_err();
    assert!(err.contains("handler_timout"), "{err}");
    let err = load("version = 1\n[spooa]\n").unwrap_err();
    assert!(err.contains("spooa"), "{err}");
}

#[test]
fn bad_values_name_the_key_and_the_fix() {
    let err = load("version = 1\n[spoa]\nlisten = [\"localhost\"]").unwrap_err();
    assert!(
        err.contains("spoa.listen") && err.contains("unix:"),
        "{err}"
    );
    let err = load("version = 1\n[spoa]\nmax_frame_size = 100").unwrap_err();
    assert!(err.contains("spoa.max_frame_size"), "{err}");
    let err = load("version = 1\n[spoa]\nhandler_timeout = \"0s\"").unwrap_err();
    assert!(err.contains("spoa.handler_timeout"), "{err}");
    let err = load("version = 2").unwrap_err();
    assert!(err.contains("version"), "{err}");
    let err = load("").unwrap_err();
    assert!(err.contains("version"), "{err}");
}

#[test]
fn environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "keyward.toml",
            "version = 1\n[spoa]\nhandler_timeout = \"1s\"",
        )?;
        jail.set_env("KEYWARD_SPOA__HANDLER_TIMEOUT", "300ms");
        jail.set_env("KEYWARD_LOG__FORMAT", "json");
        jail.set_env("KEYWARD_CONFIG", "/ignored/by/the/loader");
        let c = Config::load(Path::new("keyward.toml")).unwrap();
        assert_eq!(c.spoa.handler_timeout, Duration::from_millis(300));
        assert_eq!(c.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn missing_file_says_so() {
    let err = Config::load(Path::new("/nonexistent/keyward.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/keyward.toml"), "{err}");
}

#[test]
fn session_and_portal_sections_are_validated() {
    let c = load("version = 1\n[session]\nmax_lifetime = \"8h\"\ncookie_name = \"kw\"").unwrap();
    assert_eq!(c.session.max_lifetime, Duration::from_secs(8 * 3600));
    assert_eq!(c.session.cookie_name, "kw");
    let err = load("version = 1\n[session]\ncookie_name = \"a;b\"").unwrap_err();
    assert!(err.contains("session.cookie_name"), "{err}");
    let err = load("version = 1\n[portal]\nlogin_url = \"/login\"").unwrap_err();
    assert!(err.contains("portal.login_url"), "{err}");
    let err = load("version = 1\n[store]\nurl = \"mysql://x\"").unwrap_err();
    assert!(err.contains("store.url"), "{err}");
    let err = load("version = 1\n[assertion]\nttl = \"2h\"").unwrap_err();
    assert!(err.contains("assertion.ttl"), "{err}");
}

#[test]
fn portal_origins_rp_id_and_cookie_domain_must_fit_together() {
    let ok = "version = 1\n[session]\ncookie_domain = \"example.com\"\n[portal]\nrp_id = \"example.com\"\n\
              origins = [\"https://auth.example.com\", \"https://app.example.com:8443\"]\n\
              login_url = \"https://auth.example.com/.keyward/login\"\nreturn_hosts = [\"*.example.com\"]";
    let c = load(ok).unwrap();
    assert_eq!(c.portal.origins.len(), 2);
    assert_eq!(c.session_lifetime(), Duration::from_secs(12 * 3600));

    for (bad, key, hint) in [
        (
            "origins = [\"https://auth.other.com\"]",
            "portal.origins",
            "rp_id",
        ),
        (
            "origins = [\"http://auth.example.com\"]",
            "portal.origins",
            "https",
        ),
        (
            "origins = [\"https://auth.example.com/login\"]",
            "portal.origins",
            "no path",
        ),
        (
            "login_url = \"https://evil.example.com/.keyward/login\"",
            "portal.login_url",
            "portal.origins",
        ),
        ("rp_id = \"ex ample\"", "portal.rp_id", "domain"),
        (
            "return_hosts = [\"a b\"]",
            "portal.return_hosts",
            "*.domain",
        ),
        ("identity = \"oidc\"", "portal.identity", "[oidc]"),
        (
            "attestation = { required = true }",
            "portal.attestation.required",
            "ca_files",
        ),
        (
            "attestation = { aaguids = [\"xyz\"], ca_files = [\"/x.pem\"] }",
            "portal.attestation.aaguids",
            "AAGUID",
        ),
    ] {
        let toml = ok.replace("return_hosts = [\"*.example.com\"]", "") + "\n" + bad;
        // A later key replaces an earlier one only for distinct keys; rebuild instead.
        let toml = dedupe_keys(&toml);
        let err = load(&toml).unwrap_err();
        assert!(err.contains(key) && err.contains(hint), "{bad}: {err}");
    }
    let err = load(&ok.replace("example.com\"\n[portal]", "other.com\"\n[portal]")).unwrap_err();
    assert!(err.contains("session.cookie_domain"), "{err}");
}

/// Keeps the last of repeated `key = ...` lines in the `[portal]` table.
fn dedupe_keys(toml: &str) -> String {
    let lines: Vec<&str> = toml.lines().collect();
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_owned();
    lines
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            !l.contains('=')
                || !lines[i + 1..]
                    .iter()
                    .any(|m| m.contains('=') && key(m) == key(l))
        })
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn unsafe_state_and_lifetimes_are_refused() {
    for (toml, key) in [
        ("[store]\nurl = \"sqlite::memory:\"", "store.url"),
        ("[store]\nurl = \"mysql://kw@db/kw\"", "store.url"),
        (
            "[store]\nurl = \"sqlite://file:kw?mode=memory&cache=shared\"",
            "store.url",
        ),
        (
            "[store]\nrevocation_poll = \"10m\"",
            "store.revocation_poll",
        ),
        ("[store]\nheartbeat = \"10ms\"", "store.heartbeat"),
        (
            "[store]\nrevocation_poll = \"1m\"\nrevocations_max_age = \"2m\"",
            "store.revocations_max_age",
        ),
        (
            "[store]\nrevocations_max_age = \"500ms\"",
            "store.revocations_max_age",
        ),
        ("[session]\nmax_lifetime = \"31d\"", "session.max_lifetime"),
        (
            "[session]\nmax_lifetime = \"500000000y\"",
            "session.max_lifetime",
        ),
    ] {
        let err = load(&format!("version = 1\n{toml}")).unwrap_err();
        assert!(err.contains(key), "{toml}: {err}");
    }
    let c =
        load("version = 1\n[session]\nmax_lifetime = \"30d\"\n[store]\nrevocation_poll = \"5m\"")
            .unwrap();
    assert_eq!(c.session_horizon_secs(), 30 * 86_400 + 60);
    assert_eq!(c.store.revocations_max_age, None);
    let c = load("version = 1\n[store]\nrevocations_max_age = \"5m\"").unwrap();
    assert_eq!(c.store.revocations_max_age, Some(Duration::from_secs(300)));
    for url in [
        "postgres://kw@db.internal/kw",
        "postgresql://kw@[::1]:5432/kw?sslmode=verify-full",
    ] {
        let c = load(&format!("version = 1\n[store]\nurl = \"{url}\"")).unwrap();
        assert_eq!(c.store.url, url);
    }
}

#[test]
fn an_idp_needs_an_identity_mode_that_uses_it() {
    let base = "version = 1\n[portal]\nrp_id = \"example.com\"\norigins = [\"https://auth.example.com\"]\n\
                login_url = \"https://auth.example.com/.keyward/login\"\n";
    let oidc = "[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"keyward\"\n\
                redirect_url = \"https://auth.example.com/.keyward/oidc/callback\"\n";
    // Invites only (the default), yet an IdP: anyone it knows could enroll.
    let err = load(&format!("{base}{oidc}")).unwrap_err();
    assert!(
        err.contains("portal.identity") && err.contains("[oidc]"),
        "{err}"
    );
    for mode in ["oidc", "oidc-enroll"] {
        let c = load(&format!("{base}identity = \"{mode}\"\n{oidc}"));
        assert!(c.is_ok(), "{mode}: {c:?}");
    }
}
