//! The policies shown to operators in `docs/policy.md` must load, and the examples must
//! decide the way the text says they do.

use keyward_policy::{Decision, Policy, Reason, RequestFacts, SessionState};
use keyward_session::{AuthMethod, Claims};

const DOC: &str = include_str!("../../../docs/policy.md");
const NOW: i64 = 1_700_000_000;

/// Every ```toml block of the document, in order.
fn toml_blocks() -> Vec<&'static str> {
    DOC.split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect()
}

fn request<'a>(host: &'a str, path: &'a str, method: &'a str, src: &str) -> RequestFacts<'a> {
    RequestFacts {
        host,
        path,
        method,
        src: src.parse().ok(),
    }
}

fn passkey_session(age: i64) -> Claims {
    Claims {
        sid: "s".into(),
        sub: "u".into(),
        email: None,
        roles: vec!["admin".into()],
        dev: None,
        aaguid: None,
        amr: AuthMethod::Passkey,
        auth_time: NOW - age,
        iat: NOW - age,
        exp: NOW + 3600,
    }
}

#[test]
fn every_policy_in_the_docs_loads() {
    let blocks = toml_blocks();
    assert_eq!(blocks.len(), 4, "the reference sample and three examples");
    for block in blocks {
        let policy = Policy::from_toml(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert!(!policy.is_empty());
    }
}

#[test]
fn examples_decide_as_documented() {
    let blocks = toml_blocks();
    let (api, admin) = (
        Policy::from_toml(blocks[2]).unwrap(),
        Policy::from_toml(blocks[3]).unwrap(),
    );
    let old = passkey_session(20 * 60);
    let decide = |p: &Policy, r: &RequestFacts<'_>, s| {
        let v = p.evaluate(r, s, NOW);
        (v.decision, v.reason)
    };
    let write = request("api.example.com", "/v1/items", "POST", "192.0.2.1");
    let read = request("api.example.com", "/v1/items", "GET", "192.0.2.1");
    let docs = request("api.example.com", "/docs/index.html", "GET", "192.0.2.1");
    assert_eq!(
        decide(&api, &write, SessionState::Valid(&old)),
        (Decision::Login, Reason::StaleAuth)
    );
    assert_eq!(
        decide(&api, &read, SessionState::Valid(&old)),
        (Decision::Allow, Reason::Ok)
    );
    assert_eq!(
        decide(&api, &docs, SessionState::None),
        (Decision::Allow, Reason::Ok)
    );

    let office = request("admin.example.com", "/", "GET", "10.20.1.1");
    let outside = request("admin.example.com", "/", "GET", "192.0.2.1");
    let fresh = passkey_session(60);
    assert_eq!(
        decide(&admin, &office, SessionState::Valid(&fresh)),
        (Decision::Deny, Reason::DeviceNotAllowed)
    );
    assert_eq!(
        decide(&admin, &outside, SessionState::Valid(&fresh)),
        (Decision::Deny, Reason::Forbidden)
    );
}
