//! Policy parsing: arbitrary text never panics; whatever parses can be evaluated.
#![no_main]

use keyward_policy::{Decision, Policy, RequestFacts, SessionState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::from_toml(text) {
        for path in ["/", "/admin", "/a/../b", "//x/%2e%2e/y"] {
            let req = RequestFacts { host: "app.test", path, method: "GET", src: None };
            let v = policy.evaluate(&req, SessionState::Invalid, 0);
            // Without a valid session only public rules can allow.
            if v.decision == Decision::Allow {
                assert!(v.rule.is_some());
            }
        }
    }
});
