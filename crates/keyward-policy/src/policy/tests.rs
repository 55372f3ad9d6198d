//! `Policy::evaluate`: every reason a policy can give, the matchers as seen through a
//! whole policy, and first-match-wins ordering.

use super::*;
use crate::path::lenient_reading;
use keyward_session::{AuthMethod, Claims};
use std::net::IpAddr;

const NOW: i64 = 1_700_000_000;
const KEY: &str = "cb69481e-8ff7-4039-93ec-0a2729a154a8";

const POLICY: &str = r#"
    [[rule]]
    name = "health"
    paths = ["/healthz"]
    methods = ["get", "HEAD"]
    access = "public"

    [[rule]]
    name = "admin"
    hosts = ["app.example.com"]
    paths = ["/admin"]
    sources = ["10.0.0.0/8", "::1"]
    access = "roles"
    roles = ["admin", "ops"]
    aaguids = ["CB69481E-8FF7-4039-93EC-0A2729A154A8"]

    [[rule]]
    name = "writes"
    hosts = ["*.example.com"]
    methods = ["POST", "DELETE"]
    access = "authenticated"
    device = "passkey"
    max_auth_age = "15m"

    [[rule]]
    name = "apps"
    hosts = ["*.example.com", "example.com"]
    access = "authenticated"
"#;

fn policy() -> Policy {
    Policy::from_toml(POLICY).unwrap()
}

fn claims(roles: &[&str], amr: AuthMethod, aaguid: Option<&str>, age: i64) -> Claims {
    Claims {
        sid: "s1".into(),
        sub: "u1".into(),
        email: None,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        dev: None,
        aaguid: aaguid.map(str::to_owned),
        amr,
        auth_time: NOW - age,
        iat: NOW - age,
        exp: NOW + 3600,
    }
}

fn req<'a>(host: &'a str, path: &'a str, method: &'a str, src: &str) -> RequestFacts<'a> {
    RequestFacts {
        host,
        path,
        method,
        src: src.parse::<IpAddr>().ok(),
    }
}

fn eval(
    p: &Policy,
    r: &RequestFacts<'_>,
    s: SessionState<'_>,
) -> (Decision, Reason, Option<&'static str>) {
    let v = p.evaluate(r, s, NOW);
    let name = v.rule.map(|i| match p.rule_name(i).unwrap() {
        "health" => "health",
        "admin" => "admin",
        "writes" => "writes",
        "apps" => "apps",
        other => panic!("unexpected rule {other}"),
    });
    (v.decision, v.reason, name)
}

#[test]
fn every_policy_reason_is_reachable() {
    use Decision::*;
    let p = policy();
    let admin_key = claims(&["admin"], AuthMethod::Attested, Some(KEY), 60);
    let passkey = claims(&["dev"], AuthMethod::Passkey, None, 60);
    let a = req("app.example.com", "/admin/users", "GET", "10.1.2.3");
    let cases = [
        (SessionState::Valid(&admin_key), Allow, Reason::Ok),
        (SessionState::None, Login, Reason::NoSession),
        (SessionState::Expired, Login, Reason::Expired),
        (SessionState::Invalid, Login, Reason::Invalid),
        (SessionState::Revoked, Login, Reason::Revoked),
        (SessionState::Valid(&passkey), Deny, Reason::Forbidden),
    ];
    for (session, decision, reason) in cases {
        assert_eq!(eval(&p, &a, session), (decision, reason, Some("admin")));
    }
    let ops_passkey = claims(&["ops"], AuthMethod::Passkey, None, 60);
    assert_eq!(
        eval(&p, &a, SessionState::Valid(&ops_passkey)),
        (Deny, Reason::DeviceNotAllowed, Some("admin"))
    );
    let w = req("api.example.com", "/items", "post", "192.0.2.1");
    let old = claims(&[], AuthMethod::Passkey, None, 16 * 60);
    assert_eq!(
        eval(&p, &w, SessionState::Valid(&old)),
        (Login, Reason::StaleAuth, Some("writes"))
    );
    assert_eq!(
        eval(&p, &w, SessionState::Valid(&passkey)),
        (Allow, Reason::Ok, Some("writes"))
    );
    let none = req("other.org", "/", "GET", "192.0.2.1");
    assert_eq!(
        eval(&p, &none, SessionState::Valid(&passkey)),
        (Deny, Reason::Forbidden, None)
    );
}

#[test]
fn public_ignores_the_session() {
    let p = policy();
    let r = req("anything.test", "/healthz", "head", "");
    for s in [
        SessionState::None,
        SessionState::Expired,
        SessionState::Invalid,
        SessionState::Revoked,
    ] {
        assert_eq!(
            eval(&p, &r, s),
            (Decision::Allow, Reason::Ok, Some("health"))
        );
    }
    // Method outside the rule: falls through, and other.test matches nothing.
    let r = req("anything.test", "/healthz", "POST", "");
    assert_eq!(
        eval(&p, &r, SessionState::None),
        (Decision::Deny, Reason::Forbidden, None)
    );
}

#[test]
fn device_classes() {
    let p = policy();
    let w = req("api.example.com", "/x", "DELETE", "192.0.2.1");
    let minted = claims(&[], AuthMethod::Minted, None, 0);
    let attested = claims(&[], AuthMethod::Attested, Some(KEY), 0);
    assert_eq!(
        eval(&p, &w, SessionState::Valid(&minted)).1,
        Reason::DeviceNotAllowed
    );
    assert_eq!(eval(&p, &w, SessionState::Valid(&attested)).1, Reason::Ok);

    let a = req("app.example.com", "/admin", "GET", "::ffff:10.0.0.1");
    let other_model = claims(
        &["admin"],
        AuthMethod::Attested,
        Some("00000000-0000-0000-0000-000000000000"),
        0,
    );
    let no_model = claims(&["admin"], AuthMethod::Attested, None, 0);
    let passkey_with_model = claims(&["admin"], AuthMethod::Passkey, Some(KEY), 0);
    for c in [&other_model, &no_model, &passkey_with_model] {
        assert_eq!(
            eval(&p, &a, SessionState::Valid(c)).1,
            Reason::DeviceNotAllowed,
            "{c:?}"
        );
    }
}

#[test]
fn step_up_boundary() {
    let p = policy();
    let w = req("api.example.com", "/x", "POST", "192.0.2.1");
    let exactly = claims(&[], AuthMethod::Passkey, None, 15 * 60);
    let over = claims(&[], AuthMethod::Passkey, None, 15 * 60 + 1);
    assert_eq!(eval(&p, &w, SessionState::Valid(&exactly)).1, Reason::Ok);
    assert_eq!(
        eval(&p, &w, SessionState::Valid(&over)).1,
        Reason::StaleAuth
    );
    // Reads of the same host have no step-up.
    let r = req("api.example.com", "/x", "GET", "192.0.2.1");
    assert_eq!(
        eval(&p, &r, SessionState::Valid(&over)),
        (Decision::Allow, Reason::Ok, Some("apps"))
    );
}

#[test]
fn sources_and_wildcard_hosts() {
    let p = policy();
    let c = claims(&["admin"], AuthMethod::Attested, Some(KEY), 0);
    let ok = |host, src| {
        eval(
            &p,
            &req(host, "/admin", "GET", src),
            SessionState::Valid(&c),
        )
        .2
    };
    assert_eq!(ok("app.example.com", "10.9.9.9"), Some("admin"));
    assert_eq!(ok("app.example.com", "::1"), Some("admin"));
    // Outside the CIDRs or without a source, the admin rule does not match.
    assert_eq!(ok("app.example.com", "192.0.2.1"), Some("apps"));
    assert_eq!(ok("app.example.com", ""), Some("apps"));
    // Wildcard: any depth, not the apex (the apex is listed separately in "apps").
    assert_eq!(ok("a.b.example.com", ""), Some("apps"));
    assert_eq!(ok("example.com", ""), Some("apps"));
    assert_eq!(ok("notexample.com", ""), None);
    let only_wildcard = Policy::from_toml(
        "[[rule]]\nname = \"w\"\nhosts = [\"*.Example.COM\"]\naccess = \"public\"",
    )
    .unwrap();
    let v = |h| {
        only_wildcard
            .evaluate(&req(h, "/", "GET", ""), SessionState::None, NOW)
            .rule
    };
    assert_eq!(v("x.example.com"), Some(0));
    assert_eq!(v("x.y.example.com"), Some(0));
    assert_eq!(v("example.com"), None);
}

#[test]
fn paths_are_normalized_and_segment_aware() {
    let p = Policy::from_toml(
        r#"
        [[rule]]
        name = "public"
        paths = ["/public/", "/login"]
        access = "public"
        [[rule]]
        name = "rest"
        access = "authenticated"
        "#,
    )
    .unwrap();
    let rule = |path| {
        p.evaluate(&req("h", path, "GET", ""), SessionState::None, NOW)
            .rule
    };
    assert_eq!(rule("/public/x"), Some(0));
    assert_eq!(rule("/login"), Some(0));
    assert_eq!(rule("/login/"), Some(0));
    assert_eq!(rule("/loginx"), Some(1));
    assert_eq!(rule("/public"), Some(1));
    assert_eq!(rule("/public/../admin"), Some(1));
    assert_eq!(rule("/public/%2e%2e/admin"), Some(1));
    assert_eq!(rule("//public/x"), Some(0));
    assert_eq!(rule("/x/../public/y"), Some(0));
    // One segment under /public/ as written, but /admin to nginx: "rest" decides.
    assert_eq!(rule("/public/..%2fadmin"), Some(1));
}

/// Rule 0 public (`/public/`, `/Docs`), rule 1 needs role admin (`/admin`), rule 2 any
/// session: the policy the tests of other path readings decide against.
const READINGS_POLICY: &str = r#"
    [[rule]]
    name = "public"
    paths = ["/public/", "/Docs"]
    access = "public"
    [[rule]]
    name = "admin"
    paths = ["/admin"]
    access = "roles"
    roles = ["admin"]
    [[rule]]
    name = "rest"
    access = "authenticated"
"#;

/// The decision and rule index for `path` under [`READINGS_POLICY`].
fn decide(path: &str, s: SessionState<'_>) -> (Decision, Option<usize>) {
    let p = Policy::from_toml(READINGS_POLICY).unwrap();
    let v = p.evaluate(&req("h", path, "GET", ""), s, NOW);
    (v.decision, v.rule)
}

#[test]
fn parameters_and_backslashes_are_decided_under_both_readings() {
    use Decision::*;
    let dev = claims(&["dev"], AuthMethod::Passkey, None, 60);
    let admin = claims(&["admin"], AuthMethod::Passkey, None, 60);
    // Tomcat serves /admin/users for these; literally they fall under "rest".
    for path in ["/admin;x/users", "/admin;jsessionid=1", "/x/..;/admin/"] {
        assert_eq!(
            decide(path, SessionState::Valid(&dev)),
            (Deny, Some(1)),
            "{path}"
        );
        assert_eq!(
            decide(path, SessionState::Valid(&admin)),
            (Allow, Some(2)),
            "{path}: allowed under both, the literal reading's rule"
        );
    }
    // Literally under /public/, but /admin to Tomcat or IIS: no session gets a login.
    for path in [
        "/public/..;/admin",
        "/public/..;x/admin",
        "/public/x\\..\\..\\admin",
    ] {
        assert_eq!(decide(path, SessionState::None), (Login, Some(1)), "{path}");
    }
    // Parameters that do not change the rule change nothing.
    assert_eq!(
        decide("/public/a;v=1/b", SessionState::None),
        (Allow, Some(0))
    );
    assert_eq!(
        decide("/app;jsessionid=1", SessionState::Valid(&dev)),
        (Allow, Some(2))
    );
    // An escaped ';' is data to every server: one reading.
    assert_eq!(
        decide("/admin%3bx", SessionState::Valid(&dev)),
        (Allow, Some(2))
    );
}

#[test]
fn escaped_slashes_are_decided_as_decoding_upstreams_read_them() {
    use Decision::*;
    let dev = claims(&["dev"], AuthMethod::Passkey, None, 60);
    // Literally one segment under /public/; nginx and WSGI route /admin.
    for path in [
        "/public/..%2fadmin",
        "/public/..%2Fadmin/x",
        "/public%2f..%2f..%2fadmin",
        "/public/%2e%2e%2fadmin",
        // IIS decodes %5C and reads it as /.
        "/public/..%5cadmin",
        // Tomcat drops the parameter, then decodes.
        "/public/..;x%2f..%2fadmin",
    ] {
        assert_eq!(decide(path, SessionState::None).0, Login, "{path}");
        assert_eq!(
            decide(path, SessionState::Valid(&dev)),
            (Deny, Some(1)),
            "{path}"
        );
    }
    // IIS takes `\` (and a decoded %5C) for `/` but keeps `;`: `..;` is a segment that
    // the next `..` removes, so these are /admin/x to it.
    for path in ["/admin\\..;\\..\\x", "/admin%5C..;%5C..%5Cx"] {
        assert_eq!(
            decide(path, SessionState::Valid(&dev)),
            (Deny, Some(1)),
            "{path}"
        );
    }
    // An escaped slash that stays inside the rule changes nothing.
    assert_eq!(
        decide("/public/a%2Fb", SessionState::None),
        (Allow, Some(0))
    );
    // A double escape is data after one decoding: one segment under /public/.
    assert_eq!(
        decide("/public/..%252fadmin", SessionState::None),
        (Allow, Some(0))
    );
}

#[test]
fn paths_are_also_decided_ignoring_case() {
    use Decision::*;
    let dev = claims(&["dev"], AuthMethod::Passkey, None, 60);
    let admin = claims(&["admin"], AuthMethod::Passkey, None, 60);
    // IIS, ASP.NET Core and Express serve /admin for these.
    for path in ["/ADMIN", "/Admin/users", "/aDmIn/", "/x/../ADMIN"] {
        assert_eq!(
            decide(path, SessionState::Valid(&dev)),
            (Deny, Some(1)),
            "{path}"
        );
        assert_eq!(
            decide(path, SessionState::Valid(&admin)),
            (Allow, Some(2)),
            "{path}: allowed both ways, the rule that matches as written"
        );
    }
    // Case-insensitive upstreams do not make a stricter rule looser: /PUBLIC/x falls
    // under "rest" as written and "public" ignoring case, and "rest" stands.
    assert_eq!(decide("/PUBLIC/x", SessionState::None), (Login, Some(2)));
    // The prefix is still segment-aware, and rule paths keep their own case.
    assert_eq!(
        decide("/ADMINISTRATOR", SessionState::Valid(&dev)),
        (Allow, Some(2))
    );
    assert_eq!(decide("/Docs/x", SessionState::None), (Allow, Some(0)));
    assert_eq!(decide("/docs/x", SessionState::None), (Login, Some(2)));
    // Escapes and case together.
    assert_eq!(
        decide("/public/..%2FADMIN", SessionState::Valid(&dev)),
        (Deny, Some(1))
    );
}

#[test]
fn lenient_reading_drops_parameters_per_segment() {
    assert_eq!(lenient_reading("/a/b"), None);
    assert_eq!(lenient_reading("/a;x=1/b;y").as_deref(), Some("/a/b"));
    assert_eq!(lenient_reading("/..;/x").as_deref(), Some("/../x"));
    assert_eq!(lenient_reading("/a\\b;c\\d").as_deref(), Some("/a/b/d"));
    assert_eq!(lenient_reading(";").as_deref(), Some(""));
    assert_eq!(normalize_path(&lenient_reading(";").unwrap()), "/");
}

#[test]
fn first_match_wins() {
    let text = |first: &str, second: &str| {
        format!(
            "[[rule]]\nname = \"a\"\npaths = [\"/\"]\naccess = \"{first}\"\n\
             [[rule]]\nname = \"b\"\npaths = [\"/\"]\naccess = \"{second}\"\n"
        )
    };
    let r = req("h", "/x", "GET", "");
    let p = Policy::from_toml(&text("public", "authenticated")).unwrap();
    assert_eq!(
        p.evaluate(&r, SessionState::None, NOW),
        Verdict {
            decision: Decision::Allow,
            reason: Reason::Ok,
            rule: Some(0),
            assertion: true,
        }
    );
    let p = Policy::from_toml(&text("authenticated", "public")).unwrap();
    assert_eq!(
        p.evaluate(&r, SessionState::None, NOW),
        Verdict {
            decision: Decision::Login,
            reason: Reason::NoSession,
            rule: Some(0),
            assertion: true,
        }
    );
    assert_eq!(
        (p.len(), p.rule_name(1), p.rule_name(2)),
        (2, Some("b"), None)
    );
}

#[test]
fn assertion_follows_the_matched_rule() {
    let p = Policy::from_toml(
        "[[rule]]\nname = \"api\"\npaths = [\"/api\"]\naccess = \"authenticated\"\nassertion = false\n\
         [[rule]]\nname = \"public\"\npaths = [\"/pub\"]\naccess = \"public\"\n\
         [[rule]]\nname = \"rest\"\naccess = \"authenticated\"\nassertion = true\n",
    )
    .unwrap();
    let c = claims(&["dev"], AuthMethod::Passkey, None, 60);
    let wants = |path| p.evaluate(&req("h", path, "GET", ""), SessionState::Valid(&c), NOW);
    let api = wants("/api/v1");
    assert_eq!((api.decision, api.assertion), (Decision::Allow, false));
    assert!(wants("/pub").assertion, "on unless a rule turns it off");
    assert!(wants("/other").assertion);
    // A path that normalizes onto /api is still the api rule.
    assert!(!wants("/x/../api").assertion);
}

#[test]
fn no_rules_deny_everything() {
    for p in [
        Policy::empty(),
        Policy::from_toml("").unwrap(),
        Policy::from_toml("version = 1").unwrap(),
    ] {
        assert!(p.is_empty());
        let c = claims(&["admin"], AuthMethod::Attested, Some(KEY), 0);
        let v = p.evaluate(&req("h", "/", "GET", "::1"), SessionState::Valid(&c), NOW);
        assert_eq!(
            v,
            Verdict {
                decision: Decision::Deny,
                reason: Reason::Forbidden,
                rule: None,
                assertion: false,
            }
        );
    }
}

#[test]
fn policy_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Policy>();
    shareable::<crate::PolicyError>();
}
