//! `Policy::evaluate` on a 1,000-rule policy with a valid session: the matching rule
//! first (best case) and last (every rule is tried), plus a miss and a path that needs
//! normalizing.

use std::fmt::Write;
use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_policy::{Policy, RequestFacts, SessionState};
use keyward_session::{AuthMethod, Claims};

const NOW: i64 = 1_700_000_000;
const RULES: usize = 1_000;

/// `RULES` rules, each on its own host with a few paths, methods and a CIDR; the rule for
/// `target` (0-based) matches `target.example.com` with the request below.
fn policy() -> Policy {
    let mut text = String::new();
    for i in 0..RULES {
        write!(
            text,
            r#"
[[rule]]
name = "rule {i}"
hosts = ["svc{i}.example.com", "*.svc{i}.internal"]
paths = ["/api/v1/", "/admin"]
methods = ["GET", "POST"]
sources = ["10.0.0.0/8", "2001:db8::/32"]
access = "roles"
roles = ["team{i}", "admin"]
device = "passkey"
max_auth_age = "1h"
"#
        )
        .unwrap();
    }
    Policy::from_toml(&text).unwrap()
}

fn claims() -> Claims {
    Claims {
        sid: "sid".into(),
        sub: "user".into(),
        email: None,
        roles: vec!["viewer".into(), "admin".into()],
        dev: None,
        aaguid: None,
        amr: AuthMethod::Passkey,
        auth_time: NOW - 60,
        iat: NOW - 60,
        exp: NOW + 3600,
    }
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    let claims = claims();
    let src: Option<IpAddr> = Some("10.1.2.3".parse().unwrap());
    let first_host = "svc0.example.com".to_owned();
    let last_host = format!("svc{}.example.com", RULES - 1);
    let cases = [
        ("first_rule", first_host.as_str(), "/api/v1/items/42"),
        ("last_rule", last_host.as_str(), "/api/v1/items/42"),
        ("no_match", "unknown.example.org", "/api/v1/items/42"),
        (
            "last_rule_dirty_path",
            last_host.as_str(),
            "/api/v1//x/../items/42",
        ),
    ];
    let mut group = c.benchmark_group("evaluate_1000_rules");
    for (label, host, path) in cases {
        let req = RequestFacts {
            host,
            path,
            method: "GET",
            src,
        };
        group.bench_function(label, |b| {
            b.iter(|| {
                black_box(&policy).evaluate(
                    black_box(&req),
                    SessionState::Valid(black_box(&claims)),
                    NOW,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
