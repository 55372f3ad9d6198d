//! Property tests: the loader never panics, path normalization is idempotent and leaves
//! no dot segments or empty segments, and evaluation of random policies picks the first
//! matching rule, never lets a request through a non-public rule without a valid
//! session, and never decides a path more loosely than an upstream that reads it another
//! way would need.

use std::net::IpAddr;

use keyward_policy::{
    Decision, Policy, Reason, RequestFacts, SessionState, lenient_reading, normalize_path,
    other_readings,
};
use keyward_session::{AuthMethod, Claims};
use proptest::prelude::*;
use proptest::sample::select;

const NOW: i64 = 1_700_000_000;

/// TOML-ish fragments, so that random files often get past the syntax check.
fn policy_text() -> impl Strategy<Value = String> {
    let fragment = select(vec![
        "[[rule]]\n",
        "[rule]\n",
        "name = \"a\"\n",
        "name = \"b\"\n",
        "name = 1\n",
        "hosts = [\"*.x.org\", \"A.b\"]\n",
        "hosts = [\"*\"]\n",
        "hosts = []\n",
        "paths = [\"/a\", \"/b/\"]\n",
        "paths = [\"a/..\"]\n",
        "methods = [\"GET\"]\n",
        "sources = [\"10.0.0.0/8\", \"::1\"]\n",
        "sources = [\"1.2.3.4/99\"]\n",
        "access = \"public\"\n",
        "access = \"roles\"\n",
        "access = \"authenticated\"\n",
        "roles = [\"r\"]\n",
        "device = \"attested\"\n",
        "device = \"passkey\"\n",
        "aaguids = [\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"]\n",
        "max_auth_age = \"1m\"\n",
        "max_auth_age = \"0s\"\n",
        "version = 1\n",
        "version = 9\n",
        "x = [\n",
        "\"",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(fragment, 0..16).prop_map(|parts| parts.concat())
}

/// Paths built from the pieces that matter to normalization.
fn path_pieces() -> impl Strategy<Value = String> {
    let piece = select(vec!["/", ".", "..", "%2e", "%2E", "a", "b", "%2f", "é"]);
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn loader_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = Policy::from_toml(&text);
    }

    #[test]
    fn loader_never_panics_on_near_policies(text in policy_text()) {
        if let Err(e) = Policy::from_toml(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn normalize_is_idempotent_and_clean(
        raw in prop_oneof![
            path_pieces(),
            any::<String>(),
        ]
    ) {
        let once = normalize_path(&raw);
        let twice = normalize_path(&once);
        prop_assert_eq!(&*twice, &*once);
        prop_assert!(matches!(twice, std::borrow::Cow::Borrowed(_)));
        prop_assert!(once.starts_with('/'));
        for bad in ["//", "/./", "/../"] {
            prop_assert!(!once.contains(bad), "{:?} -> {:?}", raw, once);
        }
        for segment in once.split('/') {
            let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
            prop_assert!(decoded != "." && decoded != "..", "{:?} -> {:?}", raw, once);
        }
        // Unchanged input is handed back without copying.
        if *once == *raw {
            prop_assert!(matches!(normalize_path(&raw), std::borrow::Cow::Borrowed(_)));
        }
    }
}

#[derive(Debug, Clone)]
struct GenRule {
    hosts: Option<Vec<&'static str>>,
    paths: Option<Vec<&'static str>>,
    methods: Option<Vec<&'static str>>,
    sources: Option<Vec<&'static str>>,
    /// "public", "authenticated" or "roles"
    access: &'static str,
    device: Option<&'static str>,
    max_auth_age: bool,
}

fn opt_list(pool: Vec<&'static str>) -> impl Strategy<Value = Option<Vec<&'static str>>> {
    prop::option::of(prop::sample::subsequence(pool.clone(), 1..=pool.len()))
}

fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        opt_list(vec![
            "example.com",
            "*.example.com",
            "a.example.com",
            "*.a.example.com",
            "other.org",
        ]),
        opt_list(vec!["/", "/admin", "/admin/", "/public/", "/api/v1"]),
        opt_list(vec!["GET", "post", "DELETE"]),
        opt_list(vec!["10.0.0.0/8", "::1/128", "192.0.2.0/24"]),
        select(vec!["public", "authenticated", "roles"]),
        prop::option::of(select(vec!["any", "passkey", "attested"])),
        any::<bool>(),
    )
        .prop_map(
            |(hosts, paths, methods, sources, access, device, max_auth_age)| GenRule {
                hosts,
                paths,
                methods,
                sources,
                access,
                device: if access == "public" { None } else { device },
                max_auth_age: max_auth_age && access != "public",
            },
        )
}

fn to_toml(rules: &[GenRule]) -> String {
    let list = |key: &str, v: &Option<Vec<&str>>| match v {
        Some(items) => format!("{key} = {items:?}\n"),
        None => String::new(),
    };
    let mut text = String::new();
    for (i, r) in rules.iter().enumerate() {
        text += &format!("[[rule]]\nname = \"r{i}\"\naccess = \"{}\"\n", r.access);
        text += &list("hosts", &r.hosts);
        text += &list("paths", &r.paths);
        text += &list("methods", &r.methods);
        text += &list("sources", &r.sources);
        if r.access == "roles" {
            text += "roles = [\"admin\"]\n";
        }
        if let Some(d) = r.device {
            text += &format!("device = \"{d}\"\n");
        }
        if r.max_auth_age {
            text += "max_auth_age = \"10m\"\n";
        }
    }
    text
}

/// A plain re-statement of the matching rules, to check which rule the policy picks.
fn reference_match(r: &GenRule, host: &str, path: &str, method: &str, src: Option<IpAddr>) -> bool {
    let host_ok = r.hosts.as_ref().is_none_or(|hs| {
        hs.iter().any(|h| match h.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => *h == host,
        })
    });
    let path = normalize_path(path);
    let path_ok = r.paths.as_ref().is_none_or(|ps| {
        ps.iter().any(|p| {
            *p == path
                || (path.starts_with(p) && (p.ends_with('/') || path[p.len()..].starts_with('/')))
        })
    });
    let method_ok = r
        .methods
        .as_ref()
        .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)));
    let src = src.map(|ip| ip.to_canonical());
    let source_ok = r.sources.as_ref().is_none_or(|ss| {
        ss.iter().any(|s| {
            let net: ipnet::IpNet = s.parse().unwrap();
            src.is_some_and(|ip| net.contains(&ip))
        })
    });
    host_ok && path_ok && method_ok && source_ok
}

fn request_host() -> impl Strategy<Value = &'static str> {
    select(vec![
        "example.com",
        "a.example.com",
        "b.a.example.com",
        "other.org",
        "x.other.org",
    ])
}

fn request_src() -> impl Strategy<Value = Option<&'static str>> {
    let addrs = vec![
        "10.1.2.3",
        "::1",
        "192.0.2.9",
        "::ffff:10.0.0.1",
        "203.0.113.1",
    ];
    prop::option::of(select(addrs))
}

fn request_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        select(vec![
            "admin",
            "administrator",
            "public",
            "api",
            "v1",
            "..",
            ".",
            "%2e%2e",
            "",
            "x",
        ]),
        0..6,
    )
    .prop_map(|segments| format!("/{}", segments.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_policies_follow_first_match_and_fail_closed(
        rules in prop::collection::vec(gen_rule(), 0..8),
        host in request_host(),
        path in request_path(),
        method in select(vec!["GET", "get", "POST", "DELETE", "PUT"]),
        src in request_src(),
        session in 0..5u8,
        roles in prop::sample::subsequence(vec!["admin", "dev"], 0..=2),
        amr in select(vec![AuthMethod::Passkey, AuthMethod::Attested, AuthMethod::Minted]),
        age in 0..3600i64,
    ) {
        let policy = Policy::from_toml(&to_toml(&rules)).expect("generated policies are valid");
        prop_assert_eq!(policy.len(), rules.len());
        let claims = Claims {
            sid: "s".into(), sub: "u".into(), email: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            dev: None, aaguid: None, amr, auth_time: NOW - age, iat: NOW - age, exp: NOW + 60,
        };
        let state = match session {
            0 => SessionState::None,
            1 => SessionState::Expired,
            2 => SessionState::Invalid,
            3 => SessionState::Revoked,
            _ => SessionState::Valid(&claims),
        };
        let src: Option<IpAddr> = src.map(|s| s.parse().unwrap());
        let req = RequestFacts { host, path: &path, method, src };
        let verdict = policy.evaluate(&req, state, NOW);
        let outcome = (verdict.decision, verdict.reason);

        let expected = rules.iter().position(|r| reference_match(r, host, &path, method, src));
        prop_assert_eq!(verdict.rule, expected);
        match expected {
            None => prop_assert_eq!(outcome, (Decision::Deny, Reason::Forbidden)),
            Some(i) => {
                let rule = &rules[i];
                let name = format!("r{i}");
                prop_assert_eq!(policy.rule_name(i), Some(name.as_str()));
                if rule.access == "public" {
                    prop_assert_eq!(outcome, (Decision::Allow, Reason::Ok));
                } else if !matches!(state, SessionState::Valid(_)) {
                    prop_assert_eq!(verdict.decision, Decision::Login);
                } else if verdict.decision == Decision::Allow {
                    prop_assert!(rule.access != "roles" || roles.contains(&"admin"));
                    prop_assert!(rule.device != Some("attested") || amr == AuthMethod::Attested);
                    prop_assert!(rule.device != Some("passkey") || amr != AuthMethod::Minted);
                    prop_assert!(!rule.max_auth_age || age <= 600);
                }
            }
        }
        prop_assert!(verdict.reason != Reason::Error);
    }

    /// Each model is a kind of upstream: the path it routes on. The request as sent
    /// must be decided at least as strictly as the path that upstream ends up serving,
    /// sent plainly (rule paths are lower case, so a lower-case path has one reading).
    #[test]
    fn no_upstream_reading_loosens_a_decision(
        rules in prop::collection::vec(gen_rule(), 0..8),
        host in request_host(),
        pieces in prop::collection::vec(
            select(vec![
                "admin", "public", "api", "ADMIN", "Public", "..", ".", ";", ";x=1", "..;",
                "\\", "%3b", "%2f", "%2F", "..%2fadmin", "%5c", "%252f", "%2e%2e", "",
                "admin\\..;", "\\..", "..;\\..", "%5c..;", "x\\..\\..",
            ]),
            0..8,
        ),
        session in 0..2u8,
        roles in prop::sample::subsequence(vec!["admin", "dev"], 0..=2),
    ) {
        let path = format!("/{}", pieces.join("/"));
        let policy = Policy::from_toml(&to_toml(&rules)).expect("generated policies are valid");
        let claims = Claims {
            sid: "s".into(), sub: "u".into(), email: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            dev: None, aaguid: None, amr: AuthMethod::Attested, auth_time: NOW, iat: NOW,
            exp: NOW + 60,
        };
        let state = if session == 0 { SessionState::None } else { SessionState::Valid(&claims) };
        let decide = |path: &str| {
            let req = RequestFacts { host, path, method: "GET", src: None };
            match policy.evaluate(&req, state, NOW).decision {
                Decision::Allow => 0,
                Decision::Login => 1,
                Decision::Deny => 2,
            }
        };
        // The upstreams' habits, written here independently of keyward's own code.
        let params = |p: &str| {
            p.split('/').map(|seg| seg.split(';').next().unwrap_or("")).collect::<Vec<_>>().join("/")
        };
        let backslashes = |p: &str| p.replace('\\', "/");
        let decoded = |p: &str| {
            p.replace("%2F", "/").replace("%2f", "/").replace("%5C", "\\").replace("%5c", "\\")
        };
        let lower = |p: String| normalize_path(&p).to_ascii_lowercase();
        let upstreams = [
            ("RFC 3986, case-insensitive", lower(path.clone())),
            ("Jetty (parameters)", lower(params(&path))),
            ("servlet on Windows (parameters, backslashes)", lower(params(&backslashes(&path)))),
            ("IIS (backslashes, ; kept)", lower(backslashes(&decoded(&path)))),
            ("nginx, WSGI (escaped slashes)", lower(decoded(&path))),
            ("Tomcat decoding %2F", lower(decoded(&params(&path)))),
            ("servlet on IIS", lower(params(&backslashes(&decoded(&path))))),
        ];
        for (upstream, routed) in upstreams {
            // A path the upstream serves, sent plainly, so that it has one reading.
            if !other_readings(&routed).is_empty() {
                continue;
            }
            prop_assert!(
                decide(&path) >= decide(&routed),
                "{} is {} for {}, {} as sent", routed, decide(&routed), upstream, decide(&path)
            );
        }
        // The servlet reading never has parameters or backslashes left.
        if let Some(lenient) = lenient_reading(&path) {
            prop_assert!(lenient_reading(&normalize_path(&lenient)).is_none());
        }
    }
}
