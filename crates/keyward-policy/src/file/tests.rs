//! Every way a policy file can be wrong: the message must name the rule (position and
//! name) and the field, and say what to write instead.

use crate::Policy;
use crate::error::PolicyError;
use crate::rule::{Access, Device};

/// A valid first rule, then the rule under test as rule 2.
fn load(second_rule: &str) -> Result<Policy, PolicyError> {
    Policy::from_toml(&format!(
        "[[rule]]\nname = \"ok\"\naccess = \"public\"\n\n[[rule]]\n{second_rule}\n"
    ))
}

/// Loads, expects an error in rule 2 `name` / `field`, returns its message.
fn error(second_rule: &str, name: Option<&str>, field: Option<&str>) -> String {
    let e = load(second_rule).expect_err(second_rule);
    let text = e.to_string();
    assert_eq!(e.rule_position(), Some(2), "{text}");
    assert_eq!(e.rule_name(), name, "{text}");
    assert_eq!(e.field(), field, "{text}");
    assert!(text.starts_with("policy rule 2"), "{text}");
    if let Some(name) = name {
        assert!(text.contains(&format!("({name:?})")), "{text}");
    }
    if let Some(field) = field {
        assert!(text.contains(&format!("field `{field}`")), "{text}");
    }
    text
}

fn assert_has(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
}

#[test]
fn names() {
    let t = error("access = \"public\"", None, Some("name"));
    assert_has(&t, &["no name yet", "name = \"...\"", "unique"]);
    error("name = \"  \"\naccess = \"public\"", None, Some("name"));
    let t = error("name = 7\naccess = \"public\"", None, Some("name"));
    assert_has(&t, &["the number 7", "name = \"...\""]);
    let t = error(
        "name = \"ok\"\naccess = \"public\"",
        Some("ok"),
        Some("name"),
    );
    assert_has(&t, &["rule 1 already has this name"]);
}

#[test]
fn unknown_fields_name_the_rule() {
    let t = error(
        "name = \"web\"\nhost = [\"a\"]\naccess = \"public\"",
        Some("web"),
        None,
    );
    assert_has(&t, &["unknown field `host`", "did you mean `hosts`?"]);
    let t = error("name = \"web\"\nacess = \"public\"", Some("web"), None);
    assert_has(&t, &["unknown field `acess`", "did you mean `access`?"]);
    let t = error(
        "name = \"web\"\ncolour = 1\naccess = \"public\"",
        Some("web"),
        None,
    );
    assert_has(
        &t,
        &["unknown field `colour`", "a rule may have: name, hosts"],
    );
    assert!(!t.contains("did you mean"), "{t}");
}

#[test]
fn hosts() {
    let r = |h: &str| {
        error(
            &format!("name = \"r\"\nhosts = [{h:?}]\naccess = \"public\""),
            Some("r"),
            Some("hosts"),
        )
    };
    assert_has(&r(""), &["empty host", "app.example.com"]);
    assert_has(
        &r("https://app.example.com/x"),
        &["scheme", "\"app.example.com\""],
    );
    assert_has(
        &r("app.example.com:8443"),
        &["port", "write \"app.example.com\""],
    );
    assert_has(
        &r("*.example.com:443"),
        &["port", "write \"*.example.com\""],
    );
    assert_has(&r("app.*.com"), &["leading \"*.\""]);
    assert_has(&r("*example.com"), &["leading \"*.\""]);
    assert_has(&r("*."), &["not a host name"]);
    assert_has(&r("a..b"), &["not a host name"]);
    assert_has(&r("bücher.example"), &["punycode"]);
    assert_has(&r("app.example.com/admin"), &["paths"]);
    let t = error(
        "name = \"r\"\nhosts = \"a.example.com\"\naccess = \"public\"",
        Some("r"),
        Some("hosts"),
    );
    assert_has(&t, &["write hosts = [\"a.example.com\"]"]);
    let t = error(
        "name = \"r\"\nhosts = []\naccess = \"public\"",
        Some("r"),
        Some("hosts"),
    );
    assert_has(&t, &["empty list matches nothing", "remove `hosts`"]);
    let t = error(
        "name = \"r\"\nhosts = [1]\naccess = \"public\"",
        Some("r"),
        Some("hosts"),
    );
    assert_has(&t, &["found the number 1"]);
}

#[test]
fn hosts_compile_lower_case() {
    let p = load(
        "name = \"r\"\nhosts = [\"App.Example.COM\", \"*.Svc.Example.com\", \"[::1]\"]\n\
         access = \"public\"",
    )
    .unwrap();
    let rule = &p.rules_for_tests()[1];
    assert_eq!(rule.exact_hosts, ["app.example.com", "[::1]"]);
    assert_eq!(rule.host_suffixes, [".svc.example.com"]);
}

#[test]
fn paths_methods_sources() {
    let r = |field: &'static str, v: &str| {
        error(
            &format!("name = \"r\"\n{field} = [{v:?}]\naccess = \"public\""),
            Some("r"),
            Some(field),
        )
    };
    assert_has(
        &r("paths", "admin"),
        &["must start with \"/\"", "write \"/admin\""],
    );
    assert_has(
        &r("paths", "/a/../admin"),
        &["normal form", "write \"/admin\""],
    );
    assert_has(&r("paths", "//admin"), &["write \"/admin\""]);
    assert_has(&r("paths", "/search?q=1"), &["query string"]);
    assert_has(&r("methods", "GE T"), &["not an HTTP method", "\"GET\""]);
    assert_has(&r("methods", ""), &["not an HTTP method"]);
    assert_has(
        &r("sources", "10.0.0.0/33"),
        &["not an IP network", "10.0.0.0/8"],
    );
    assert_has(&r("sources", "office"), &["not an IP network"]);
    assert_has(
        &r("sources", "10.1.2.3/8"),
        &["after the prefix length", "write \"10.0.0.0/8\""],
    );
}

#[test]
fn sources_compile() {
    let p = load(
        "name = \"r\"\nsources = [\"192.0.2.7\", \"::ffff:10.0.0.0/104\", \"2001:db8::/32\"]\n\
         access = \"public\"",
    )
    .unwrap();
    let nets: Vec<String> = p.rules_for_tests()[1]
        .sources
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["192.0.2.7/32", "10.0.0.0/8", "2001:db8::/32"]);
    let p = load("name = \"r\"\nmethods = [\"get\", \"Purge\"]\naccess = \"public\"").unwrap();
    assert_eq!(p.rules_for_tests()[1].methods, ["GET", "PURGE"]);
}

#[test]
fn access_and_roles() {
    let t = error("name = \"r\"", Some("r"), Some("access"));
    assert_has(
        &t,
        &[
            "needs `access`",
            "\"public\", \"authenticated\" or \"roles\"",
        ],
    );
    let t = error(
        "name = \"r\"\naccess = \"private\"",
        Some("r"),
        Some("access"),
    );
    assert_has(&t, &["unknown access \"private\"", "\"authenticated\""]);
    let t = error("name = \"r\"\naccess = \"roles\"", Some("r"), Some("roles"));
    assert_has(&t, &["needs `roles = [\"...\"]`"]);
    let t = error(
        "name = \"r\"\naccess = \"roles\"\nroles = []",
        Some("r"),
        Some("roles"),
    );
    assert_has(&t, &["empty list"]);
    let t = error(
        "name = \"r\"\naccess = \"authenticated\"\nroles = [\"admin\"]",
        Some("r"),
        Some("roles"),
    );
    assert_has(&t, &["only applies with access = \"roles\""]);
    let t = error(
        "name = \"r\"\naccess = \"roles\"\nroles = [\" admin\"]",
        Some("r"),
        Some("roles"),
    );
    assert_has(&t, &["write \"admin\""]);
}

#[test]
fn public_rules_take_no_session_requirements() {
    for (field, value) in [
        ("roles", "[\"admin\"]"),
        ("device", "\"passkey\""),
        ("aaguids", "[\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"]"),
        ("max_auth_age", "\"15m\""),
    ] {
        let t = error(
            &format!("name = \"r\"\naccess = \"public\"\n{field} = {value}"),
            Some("r"),
            Some(field),
        );
        assert_has(
            &t,
            &[
                "public rule",
                "access = \"authenticated\"",
                &format!("remove `{field}`"),
            ],
        );
    }
}

#[test]
fn device_aaguids_and_age() {
    let auth = "name = \"r\"\naccess = \"authenticated\"\n";
    let t = error(
        &format!("{auth}device = \"yubikey\""),
        Some("r"),
        Some("device"),
    );
    assert_has(&t, &["unknown device \"yubikey\"", "\"attested\""]);
    let t = error(
        &format!("{auth}aaguids = [\"not-a-uuid\"]"),
        Some("r"),
        Some("aaguids"),
    );
    assert_has(&t, &["not an AAGUID", "cb69481e-"]);
    let t = error(
        &format!("{auth}aaguids = [\"cb69481e8ff7403993ec0a2729a154a8\"]"),
        Some("r"),
        Some("aaguids"),
    );
    assert_has(&t, &["not an AAGUID"]);
    let key = "aaguids = [\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"]";
    let t = error(
        &format!("{auth}device = \"passkey\"\n{key}"),
        Some("r"),
        Some("device"),
    );
    assert_has(&t, &["set device = \"attested\""]);
    let t = error(
        &format!("{auth}max_auth_age = \"soon\""),
        Some("r"),
        Some("max_auth_age"),
    );
    assert_has(&t, &["not a duration", "\"15m\""]);
    let t = error(
        &format!("{auth}max_auth_age = \"0s\""),
        Some("r"),
        Some("max_auth_age"),
    );
    assert_has(&t, &["at least \"1s\""]);
    let t = error(
        &format!("{auth}max_auth_age = \"500ms\""),
        Some("r"),
        Some("max_auth_age"),
    );
    assert_has(&t, &["at least \"1s\""]);
    let t = error(
        &format!("{auth}max_auth_age = 900"),
        Some("r"),
        Some("max_auth_age"),
    );
    assert_has(&t, &["the number 900", "max_auth_age = \"...\""]);

    let p = load(&format!("{auth}{key}\nmax_auth_age = \"1h 30m\"")).unwrap();
    let Access::Session(req) = &p.rules_for_tests()[1].access else {
        panic!("not a session rule")
    };
    assert_eq!(
        (req.device, req.max_auth_age),
        (Device::Attested, Some(5400))
    );
    let p = load(&format!("{auth}device = \"attested\"\n{key}")).unwrap();
    assert!(
        matches!(&p.rules_for_tests()[1].access, Access::Session(r) if r.device == Device::Attested)
    );
}

#[test]
fn file_level_errors_keep_line_and_column() {
    let e = Policy::from_toml("[[rule]]\nname = \"a\"\naccess = \"public\n").unwrap_err();
    let t = e.to_string();
    assert_has(&t, &["not a valid policy file", "line 3"]);
    assert_eq!(e.rule_position(), None);
    let t = Policy::from_toml("[[rules]]\nname = \"a\"")
        .unwrap_err()
        .to_string();
    assert_has(&t, &["unknown field `rules`", "line 1"]);
    let t = Policy::from_toml("version = 2").unwrap_err().to_string();
    assert_has(&t, &["version = 2 is not supported", "write version = 1"]);
    let t = Policy::from_toml("[rule]\nname = \"a\"")
        .unwrap_err()
        .to_string();
    assert_has(&t, &["not a valid policy file"]);
}

#[test]
fn assertion_is_a_boolean() {
    let auth = "name = \"r\"\naccess = \"authenticated\"\n";
    let t = error(
        &format!("{auth}assertion = \"false\""),
        Some("r"),
        Some("assertion"),
    );
    assert_has(
        &t,
        &[
            "expected `true` or `false`",
            "a string",
            "assertion = false",
        ],
    );
    let t = error(
        &format!("{auth}assertion = 0"),
        Some("r"),
        Some("assertion"),
    );
    assert_has(&t, &["the number 0"]);
    let t = error(&format!("{auth}asertion = false"), Some("r"), None);
    assert_has(&t, &["did you mean `assertion`?"]);
    let p = load(&format!("{auth}assertion = false")).unwrap();
    assert!(p.rules_for_tests()[0].assertion, "on by default");
    assert!(!p.rules_for_tests()[1].assertion);
}
