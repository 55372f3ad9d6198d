use super::*;
use keyward_session::{AuthMethod, Claims};
use keyward_store::{Kind, Revocation};

const NOW: i64 = 1_800_000_000;

const POLICY: &str = r#"
[[rule]]
name = "health"
paths = ["/healthz"]
access = "public"

[[rule]]
name = "admin"
paths = ["/admin"]
access = "roles"
roles = ["admin"]

[[rule]]
name = "fresh"
paths = ["/fresh"]
access = "authenticated"
max_auth_age = "5m"

[[rule]]
name = "vault"
paths = ["/vault"]
access = "authenticated"
device = "attested"

[[rule]]
name = "headers only"
paths = ["/api"]
access = "authenticated"
assertion = false

[[rule]]
name = "app"
hosts = ["app.test"]
access = "authenticated"
"#;

fn rng(seed: u8) -> impl FnMut(&mut [u8]) {
    let mut n = 0u64;
    move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407 ^ u64::from(seed));
            *b = (n >> 33) as u8;
        }
    }
}

fn ring(seed: u8) -> KeyRing {
    KeyRing::generate(NOW - 100, &mut rng(seed)).unwrap()
}

/// The tests' gate config: assertions on, five minutes each.
fn config() -> GateConfig {
    GateConfig {
        cookie_name: "kw".into(),
        leeway: 30,
        max_lifetime: 12 * 3600,
        login_url: "https://auth.test/.keyward/login".into(),
        assertion: Some(AssertionConfig {
            issuer: "https://auth.test".into(),
            ttl_secs: 300,
        }),
        cache_capacity: 1000,
        revocations_max_age: None,
        tunnels: None,
    }
}

fn gate(cfg: GateConfig, policy: &str, ring: KeyRing) -> Gate {
    let metrics = GateMetrics::register(&prometheus::Registry::new()).unwrap();
    Gate::new(
        cfg,
        Policy::from_toml(policy).unwrap(),
        Keys::new(ring),
        metrics,
    )
}

fn gate_with(ring: KeyRing) -> Gate {
    gate(config(), POLICY, ring)
}

fn claims(sub: &str, roles: &[&str]) -> Claims {
    Claims {
        sid: format!("sid-{sub}"),
        sub: sub.into(),
        email: Some(format!("{sub}@example.test")),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        dev: Some(format!("dev-{sub}")),
        aaguid: None,
        amr: AuthMethod::Passkey,
        auth_time: NOW - 60,
        iat: NOW - 60,
        exp: NOW + 3600,
    }
}

fn req<'a>(path: &'a str, token: Option<&str>) -> AccessRequest<'a> {
    AccessRequest {
        cookie: token.map(|t| format!("a=b; kw={t}").into()),
        host: "app.test".into(),
        host_header: "app.test:8443".into(),
        path: path.into(),
        method: "GET".into(),
        tls: true,
        ..AccessRequest::default()
    }
}

fn verdict(g: &Gate, path: &str, token: Option<&str>, now: i64) -> (Decision, Reason) {
    let v = g.decide(&req(path, token), now).verdict;
    (v.decision, v.reason)
}

#[test]
fn every_reason_is_reachable() {
    let g = gate_with(ring(1));
    let keys = g.keys();
    let alice = token::seal(&claims("alice", &["dev"]), &keys.ring).unwrap();
    let mut old_login = claims("olga", &["dev"]);
    old_login.auth_time = NOW - 3600;
    let old_login = token::seal(&old_login, &keys.ring).unwrap();
    let mut short = claims("sam", &["dev"]);
    short.iat = NOW - 200;
    short.exp = NOW - 100;
    let short = token::seal(&short, &keys.ring).unwrap();

    assert_eq!(
        verdict(&g, "/", Some(&alice), NOW),
        (Decision::Allow, Reason::Ok)
    );
    assert_eq!(
        verdict(&g, "/", None, NOW),
        (Decision::Login, Reason::NoSession)
    );
    assert_eq!(
        verdict(&g, "/", Some(&short), NOW),
        (Decision::Login, Reason::Expired)
    );
    assert_eq!(
        verdict(&g, "/", Some("v4.local.forged"), NOW),
        (Decision::Login, Reason::Invalid)
    );
    assert_eq!(
        verdict(&g, "/admin", Some(&alice), NOW),
        (Decision::Deny, Reason::Forbidden)
    );
    assert_eq!(
        verdict(&g, "/fresh", Some(&old_login), NOW),
        (Decision::Login, Reason::StaleAuth)
    );
    assert_eq!(
        verdict(&g, "/vault", Some(&alice), NOW),
        (Decision::Deny, Reason::DeviceNotAllowed)
    );
    let mut revs = Revocations::default();
    revs.apply(&[Revocation {
        id: 1,
        kind: Kind::Session,
        subject: "sid-alice".into(),
        at: NOW,
        until: NOW + 10,
    }]);
    g.set_revocations(revs);
    assert_eq!(
        verdict(&g, "/", Some(&alice), NOW),
        (Decision::Login, Reason::Revoked)
    );
    // Error is the handler's failure answer.
    let failure = g.on_failure(Failure::Panic);
    assert!(failure.get("decision").is_none(), "{:?}", failure.decoded());
    assert_eq!(text(&failure, "reason").as_deref(), Some("error"));
}

/// The text `a` sets for `name`, if any.
fn text(a: &Actions, name: &str) -> Option<String> {
    match a.get(name) {
        Some(keyward_spoa::TypedData::String(s)) => Some(s),
        _ => None,
    }
}

#[test]
fn allow_carries_identity_and_login_carries_the_return_url() {
    let g = gate_with(ring(2));
    let t = token::seal(&claims("bob", &["dev", "ops"]), &g.keys().ring).unwrap();
    let r = req("/x", Some(&t));
    let out = g.decide(&r, NOW);
    let a = g.actions(&r, &out, NOW);
    assert_eq!(text(&a, "decision").as_deref(), Some("allow"));
    assert_eq!(text(&a, "user").as_deref(), Some("bob"));
    assert_eq!(text(&a, "roles").as_deref(), Some("dev,ops"));
    assert_eq!(text(&a, "device").as_deref(), Some("dev-bob"));
    assert_eq!(text(&a, "session").as_deref(), Some("sid-bob"));
    let jwt = text(&a, "assertion").unwrap();
    // Signed once per session and audience: the second answer reuses it.
    let a2 = g.actions(&r, &g.decide(&r, NOW + 10), NOW + 10);
    assert_eq!(text(&a2, "assertion").as_deref(), Some(jwt.as_str()));
    // ...and re-signed once it nears expiry.
    let a3 = g.actions(&r, &g.decide(&r, NOW + 290), NOW + 290);
    assert_ne!(text(&a3, "assertion").as_deref(), Some(jwt.as_str()));

    // Past its `exp`, within the leeway, a session is still allowed, and still with an
    // assertion: identity is never forwarded without the assertion its route asks for.
    let mut late = claims("cal", &["dev"]);
    late.exp = NOW + 5;
    let t = token::seal(&late, &g.keys().ring).unwrap();
    let r = req("/x", Some(&t));
    let a = g.actions(&r, &g.decide(&r, NOW + 20), NOW + 20);
    assert_eq!(text(&a, "decision").as_deref(), Some("allow"));
    assert_eq!(text(&a, "user").as_deref(), Some("cal"));
    assert!(text(&a, "assertion").is_some());

    let mut r = req("/reports", None);
    r.query = Some("q=1&x=<y>".into());
    let a = g.actions(&r, &g.decide(&r, NOW), NOW);
    assert_eq!(
        text(&a, "login_url").as_deref(),
        Some(
            "https://auth.test/.keyward/login?rd=https%3A%2F%2Fapp%2Etest%3A8443%2Freports%3Fq%3D1%26x%3D%3Cy%3E"
        )
    );
    assert_eq!(a.get("user"), None);
}

#[test]
fn long_return_urls_are_shortened_so_the_login_answer_always_fits_a_frame() {
    let g = gate_with(ring(2));
    let login_url = |r: &AccessRequest| {
        let a = g.actions(r, &g.decide(r, NOW), NOW);
        let mut frame = Vec::new();
        keyward_spoa::proto::encode_ack(u64::MAX, u64::MAX, &a, &mut frame);
        // HAProxy's default max-frame-size is 16,380 bytes; a frame must stay under it.
        assert!(frame.len() - 4 < 16_380, "{} bytes", frame.len() - 4);
        text(&a, "login_url").unwrap()
    };
    let base = "https://auth.test/.keyward/login";
    let mut r = req("/dash", None);
    // Every byte of the query encoded three times over, at the longest kept.
    let fits = MAX_RETURN_URL - "https://app.test:8443/dash?".len();
    r.query = Some("!".repeat(fits).into());
    assert!(login_url(&r).ends_with(&"%21".repeat(fits)));
    r.query = Some("!".repeat(fits + 1).into());
    assert_eq!(
        login_url(&r),
        format!("{base}?rd=https%3A%2F%2Fapp%2Etest%3A8443%2Fdash")
    );
    let path = format!("/{}", "!".repeat(MAX_RETURN_URL));
    let mut r = req(&path, None);
    r.query = Some("q=1".into());
    assert_eq!(
        login_url(&r),
        format!("{base}?rd=https%3A%2F%2Fapp%2Etest%3A8443%2F")
    );
    // A Host header that long is nobody's: no return URL at all.
    r.host_header = "h".repeat(MAX_RETURN_URL).into();
    assert_eq!(login_url(&r), base);
}

#[test]
fn a_route_without_assertion_gets_identity_but_no_jwt() {
    let g = gate_with(ring(4));
    let t = token::seal(&claims("bob", &["dev"]), &g.keys().ring).unwrap();
    let r = req("/api/items", Some(&t));
    let a = g.actions(&r, &g.decide(&r, NOW), NOW);
    assert_eq!(text(&a, "decision").as_deref(), Some("allow"));
    assert_eq!(text(&a, "user").as_deref(), Some("bob"));
    assert_eq!(a.get("assertion"), None);
    // Nothing was signed or kept for the session: the next route that wants one signs it.
    let session = g.sessions.get(t.as_str()).unwrap();
    assert_eq!(session.assertions_kept(), 0);
    let r = req("/x", Some(&t));
    let a = g.actions(&r, &g.decide(&r, NOW), NOW);
    assert!(text(&a, "assertion").is_some());
    assert_eq!(session.assertions_kept(), 1);
}

#[test]
fn a_revoked_session_gets_no_identity_even_on_a_public_route() {
    let g = gate_with(ring(3));
    let t = token::seal(&claims("eve", &[]), &g.keys().ring).unwrap();
    let mut revs = Revocations::default();
    revs.apply(&[Revocation {
        id: 1,
        kind: Kind::User,
        subject: "eve".into(),
        at: NOW,
        until: NOW + 10,
    }]);
    g.set_revocations(revs);
    let r = req("/healthz", Some(&t));
    let out = g.decide(&r, NOW);
    assert_eq!(
        (out.verdict.decision, out.verdict.reason),
        (Decision::Allow, Reason::Ok)
    );
    let a = g.actions(&r, &out, NOW);
    assert_eq!(a.get("user"), None);
    assert_eq!(a.get("assertion"), None);
}

#[test]
fn forged_tokens_do_not_grow_the_cache() {
    let g = gate_with(ring(4));
    for i in 0..5_000 {
        let forged = format!("v4.local.{i:0>200}");
        assert_eq!(verdict(&g, "/", Some(&forged), NOW).1, Reason::Invalid);
    }
    assert_eq!(g.cached_sessions(), 0);
    // Huge and non-UTF-8-derived cookies are refused the same way.
    let huge = format!("v4.local.{}", "A".repeat(64 * 1024));
    assert_eq!(verdict(&g, "/", Some(&huge), NOW).1, Reason::Invalid);
    let lossy = String::from_utf8_lossy(&[0xff, 0xfe, b'v', b'4']).into_owned();
    assert_eq!(verdict(&g, "/", Some(&lossy), NOW).1, Reason::Invalid);
    assert_eq!(g.cached_sessions(), 0);
}

#[test]
fn cached_sessions_still_expire_and_die_with_their_key() {
    let g = gate_with(ring(5));
    let mut c = claims("fay", &[]);
    c.exp = NOW + 10;
    let t = token::seal(&c, &g.keys().ring).unwrap();
    assert_eq!(verdict(&g, "/", Some(&t), NOW).1, Reason::Ok);
    assert_eq!(g.cached_sessions(), 1);
    assert_eq!(
        verdict(&g, "/", Some(&t), NOW + 20).1,
        Reason::Ok,
        "within leeway"
    );
    assert_eq!(
        verdict(&g, "/", Some(&t), NOW + 41).1,
        Reason::Expired,
        "cached, but past exp + leeway"
    );

    // A token sealed for longer than `max_lifetime` (12h here: sealed before the limit
    // was lowered) ends at iat + max_lifetime, cached or not.
    let mut c = claims("hob", &[]);
    c.iat = NOW;
    c.exp = NOW + 48 * 3600;
    let t = token::seal(&c, &g.keys().ring).unwrap();
    assert_eq!(verdict(&g, "/", Some(&t), NOW).1, Reason::Ok);
    let end = NOW + 12 * 3600;
    assert_eq!(verdict(&g, "/", Some(&t), end + 30).1, Reason::Ok);
    assert_eq!(verdict(&g, "/", Some(&t), end + 31).1, Reason::Expired);
    g.sessions.invalidate(t.as_str());
    assert_eq!(verdict(&g, "/", Some(&t), end + 31).1, Reason::Expired);

    // Rotate and retire the key that sealed a cached session: refused at once.
    let t = token::seal(&claims("gil", &[]), &g.keys().ring).unwrap();
    assert_eq!(verdict(&g, "/", Some(&t), NOW).1, Reason::Ok);
    let mut ring = ring(5);
    let old = ring.active_session_key().unwrap().id().to_owned();
    ring.rotate_session(NOW, &mut rng(9)).unwrap();
    ring.retire(&old, NOW).unwrap();
    g.set_keys(Keys::new(ring));
    assert_eq!(verdict(&g, "/", Some(&t), NOW).1, Reason::Invalid);
}

#[test]
fn a_host_header_that_is_not_one_host_is_denied() {
    let g = gate_with(ring(7));
    let t = token::seal(&claims("ida", &["admin"]), &g.keys().ring).unwrap();
    for host in [
        "app.test,other.test",
        "app.test app.test",
        "x@app.test",
        "[::1]x",
    ] {
        let mut r = req("/healthz", Some(&t));
        r.host_header = host.into();
        let v = g.decide(&r, NOW).verdict;
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Deny, Reason::Forbidden),
            "{host}"
        );
    }
    let mut r = req("/healthz", None);
    r.host_header = "App.Test:8443".into();
    assert_eq!(g.decide(&r, NOW).verdict.decision, Decision::Allow);
}

#[test]
fn a_session_opened_with_replaced_keys_is_not_kept() {
    // The interleaving a miss can meet: the token is opened with the ring in force,
    // set_keys retires its key, then the miss inserts what it opened.
    let g = gate_with(ring(5));
    let t = token::seal(&claims("hal", &[]), &g.keys().ring).unwrap();
    let before = g.keys();
    let mut ring = ring(5);
    let old = ring.active_session_key().unwrap().id().to_owned();
    ring.rotate_session(NOW, &mut rng(9)).unwrap();
    ring.retire(&old, NOW).unwrap();
    g.set_keys(Keys::new(ring));
    let (opened, key) = token::open_with_key(&t, &before.ring, NOW, g.validity()).unwrap();
    let stale = Session::new(opened, key.into(), before.generation());
    g.sessions.insert(t.as_str().into(), Arc::new(stale));
    assert_eq!(verdict(&g, "/", Some(&t), NOW).1, Reason::Invalid);
    assert!(
        g.sessions.get(t.as_str()).is_none(),
        "and it left the cache"
    );
}

#[test]
fn a_rotation_keeps_the_cache_and_a_retirement_ends_only_its_keys_products() {
    let g = gate_with(ring(5));
    let first = g.keys().ring.active_session_key().unwrap().id().to_owned();
    let first_signer = g
        .keys()
        .ring
        .active_assertion_key()
        .unwrap()
        .id()
        .to_owned();
    // ring(5) after `steps` of: rotate both kinds; retire the first assertion key;
    // retire the first session key.
    let ring_after = |steps: usize| {
        let mut ring = ring(5);
        if steps >= 1 {
            ring.rotate_session(NOW, &mut rng(9)).unwrap();
            ring.rotate_assertion(NOW, &mut rng(10)).unwrap();
        }
        if steps >= 2 {
            ring.retire(&first_signer, NOW).unwrap();
        }
        if steps >= 3 {
            ring.retire(&first, NOW).unwrap();
        }
        Keys::new(ring)
    };
    let jwt = |t: &str, now| {
        let r = req("/", Some(t));
        text(&g.actions(&r, &g.decide(&r, now), now), "assertion").unwrap()
    };
    let header = |j: &str| j.split('.').next().unwrap().to_owned();
    let t1 = token::seal(&claims("ivy", &[]), &g.keys().ring).unwrap();
    let a1 = jwt(&t1, NOW);
    let misses = g.metrics.cache_misses.get();

    // Rotated: the cached session and its assertion stay in use.
    g.set_keys(ring_after(1));
    assert_eq!(jwt(&t1, NOW + 1), a1, "its key is still published");
    assert_eq!(
        g.metrics.cache_misses.get(),
        misses,
        "no miss after a rotation"
    );
    let t2 = token::seal(&claims("jay", &[]), &g.keys().ring).unwrap();
    let a2 = jwt(&t2, NOW + 1);
    assert_ne!(header(&a2), header(&a1), "new assertions name the new key");

    // The first assertion key retired: the kept assertion is signed again, by the new
    // key; the session stays cached.
    g.set_keys(ring_after(2));
    assert_eq!(header(&jwt(&t1, NOW + 2)), header(&a2));
    assert_eq!(
        g.metrics.cache_misses.get(),
        misses + 1,
        "t2's first request only"
    );

    // The first session key retired: its sessions end, the new key's stay cached.
    g.set_keys(ring_after(3));
    assert_eq!(verdict(&g, "/", Some(&t1), NOW + 3).1, Reason::Invalid);
    assert_eq!(verdict(&g, "/", Some(&t2), NOW + 3).1, Reason::Ok);
    assert_eq!(
        g.metrics.cache_misses.get(),
        misses + 2,
        "t1 opened again, refused"
    );
}

#[tokio::test]
async fn handler_answers_malformed_messages_with_an_error() {
    let g = gate_with(ring(6));
    let err = g.handle(Request { messages: vec![] }).await.unwrap_err();
    assert!(err.to_string().contains(MESSAGE), "{err}");
}

proptest::proptest! {
    #[test]
    fn a_return_url_is_never_longer_than_the_limit(
        host in "[a-z.:0-9]{0,5000}",
        path in "/[ -~]{0,6000}",
        query in proptest::option::of("[ -~]{0,6000}"),
        tls: bool,
    ) {
        let r = AccessRequest {
            host_header: host.as_str().into(),
            path: path.as_str().into(),
            query: query.as_deref().map(Into::into),
            tls,
            ..AccessRequest::default()
        };
        let scheme = if tls { "https://" } else { "http://" };
        match r.return_url() {
            Some(url) => {
                proptest::prop_assert!(url.len() <= MAX_RETURN_URL);
                let rest = url.strip_prefix(scheme).and_then(|u| u.strip_prefix(host.as_str()));
                proptest::prop_assert!(rest.is_some(), "{url}");
                // The whole URL, the path alone, or the root: never a cut in the middle.
                let rest = rest.unwrap();
                let whole = match &query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                proptest::prop_assert!(rest == whole || rest == path || rest == "/", "{rest}");
            }
            None => proptest::prop_assert!(scheme.len() + host.len() >= MAX_RETURN_URL),
        }
    }
}

#[test]
fn several_session_cookies_must_agree_on_the_user() {
    let g = gate_with(ring(3));
    let keys = g.keys();
    let seal = |c: &Claims| token::seal(c, &keys.ring).unwrap();
    let victim = seal(&claims("vic", &["dev"]));
    let mut second = claims("vic", &["dev"]);
    second.sid = "sid-vic-2".into();
    let victim_too = seal(&second);
    let attacker = seal(&claims("mal", &["dev"]));
    let mut old = claims("vic", &["dev"]);
    old.iat = NOW - 200;
    old.exp = NOW - 100;
    let expired = seal(&old);
    let decide = |cookie: String| {
        let mut r = req("/", None);
        r.cookie = Some(cookie.into());
        let o = g.decide(&r, NOW);
        (
            o.verdict.reason,
            o.session.map(|s| s.claims.sid.clone()).unwrap_or_default(),
        )
    };

    // A cookie tossed in by another site (longer path first) must not pick the user.
    assert_eq!(
        decide(format!("kw={attacker}; a=1; kw={victim}")),
        (Reason::Invalid, String::new())
    );
    assert_eq!(
        decide(format!("kw={victim}; kw={attacker}")),
        (Reason::Invalid, String::new())
    );
    // Junk and expired ones are skipped; two of one user's sessions are that user.
    assert_eq!(
        decide(format!("kw=v4.local.junk; kw={victim}")),
        (Reason::Ok, "sid-vic".into())
    );
    assert_eq!(
        decide(format!("kw={expired}; kw={victim_too}")),
        (Reason::Ok, "sid-vic-2".into())
    );
    assert_eq!(
        decide(format!("kw={victim}; kw={victim_too}")),
        (Reason::Ok, "sid-vic".into())
    );
    assert_eq!(
        decide(format!("kw={expired}; kw=v4.local.junk")),
        (Reason::Expired, String::new())
    );
    // A revoked one gives way to an unrevoked one of the same user.
    let mut revs = Revocations::default();
    revs.apply(&[Revocation {
        id: 1,
        kind: Kind::Session,
        subject: "sid-vic".into(),
        at: NOW,
        until: NOW + 10,
    }]);
    g.set_revocations(revs);
    assert_eq!(
        decide(format!("kw={victim}; kw={victim_too}")),
        (Reason::Ok, "sid-vic-2".into())
    );
    assert_eq!(
        decide(format!("kw={victim}; kw=v4.local.junk")),
        (Reason::Revoked, String::new())
    );
    // More than a browser would send is refused before any is opened past the limit.
    let many = vec![format!("kw={victim_too}"); MAX_SESSION_COOKIES]
        .join("; ")
        .replacen(&victim_too, &victim, 1);
    assert_eq!(decide(many.clone()).0, Reason::Ok);
    assert_eq!(
        decide(format!("{many}; kw={victim_too}")).0,
        Reason::Invalid
    );
}

/// A route that gives its upstream an assertion gets no identity without one: when
/// signing fails (here an assertion lifetime the config would have refused), the
/// request is refused with `error` and no identity variable is set. The same session
/// on a route without an assertion is still allowed.
#[test]
fn an_allowed_request_whose_assertion_cannot_be_signed_is_refused() {
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"plain\"\nhosts = [\"plain.test\"]\naccess = \"authenticated\"\nassertion = false\n"
    );
    let cfg = GateConfig {
        assertion: Some(AssertionConfig {
            issuer: "https://auth.test".into(),
            ttl_secs: 0,
        }),
        ..config()
    };
    let g = gate(cfg, &policy, ring(9));
    let t = token::seal(&claims("bob", &["dev"]), &g.keys().ring).unwrap();
    let r = req("/x", Some(&t));
    let out = g.decide(&r, NOW);
    assert_eq!(out.verdict.decision, Decision::Allow, "the policy allows");
    let a = g.actions(&r, &out, NOW);
    assert_eq!(text(&a, "decision").as_deref(), Some("deny"));
    assert_eq!(text(&a, "reason").as_deref(), Some("error"));
    for name in [
        "user",
        "email",
        "roles",
        "device",
        "session",
        "assertion",
        "cookie",
    ] {
        assert_eq!(a.get(name), None, "{name} set on a refused request");
    }

    let mut plain = req("/x", Some(&t));
    plain.host = "plain.test".into();
    let a = g.actions(&plain, &g.decide(&plain, NOW), NOW);
    assert_eq!(text(&a, "decision").as_deref(), Some("allow"));
    assert_eq!(text(&a, "user").as_deref(), Some("bob"));
    assert_eq!(a.get("assertion"), None);
}

/// `store.revocations_max_age`: an agent whose copy of the revocation log is older than
/// that refuses sessions (it cannot know what was revoked elsewhere), with no identity,
/// and without sending anyone to sign in; public routes stay public. A read makes the
/// copy fresh again.
#[test]
fn sessions_are_refused_while_the_revocation_log_is_too_old() {
    let cfg = GateConfig {
        assertion: None,
        revocations_max_age: Some(60),
        tunnels: None,
        ..config()
    };
    let g = gate(cfg, POLICY, ring(10));
    let t = token::seal(&claims("bob", &["dev"]), &g.keys().ring).unwrap();
    // Never read: nothing to trust yet.
    assert_eq!(
        verdict(&g, "/x", Some(&t), NOW),
        (Decision::Deny, Reason::Error)
    );

    g.revocations_read(NOW);
    assert_eq!(
        verdict(&g, "/x", Some(&t), NOW + 60),
        (Decision::Allow, Reason::Ok)
    );
    let r = req("/x", Some(&t));
    let out = g.decide(&r, NOW + 61);
    assert_eq!(
        (out.verdict.decision, out.verdict.reason),
        (Decision::Deny, Reason::Error)
    );
    assert!(
        out.session.is_none(),
        "no identity from an unchecked session"
    );
    let a = g.actions(&r, &out, NOW + 61);
    assert_eq!(text(&a, "decision").as_deref(), Some("deny"));
    assert_eq!(a.get("user"), None);
    assert_eq!(a.get("login_url"), None);
    // A public route is as public as ever, without identity.
    let r = req("/healthz", Some(&t));
    let out = g.decide(&r, NOW + 61);
    assert_eq!(out.verdict.decision, Decision::Allow);
    assert!(out.session.is_none());
    // No session at all: sent to sign in as always.
    assert_eq!(
        verdict(&g, "/x", None, NOW + 61),
        (Decision::Login, Reason::NoSession)
    );
    // An older read arriving late does not move the time back.
    g.revocations_read(NOW + 100);
    g.revocations_read(NOW + 50);
    assert_eq!(
        verdict(&g, "/x", Some(&t), NOW + 160),
        (Decision::Allow, Reason::Ok)
    );
    // A revoked session is refused as revoked, whatever the age.
    let mut revs = Revocations::default();
    revs.apply(&[Revocation {
        id: 1,
        kind: Kind::User,
        subject: "bob".into(),
        at: NOW,
        until: NOW + 7200,
    }]);
    g.set_revocations(revs);
    assert_eq!(verdict(&g, "/x", Some(&t), NOW + 160).1, Reason::Revoked);
}

mod tunnels {
    use super::*;
    use crate::tunnels::{MAX_PER_SESSION, StreamRef, Why};
    use keyward_spoa::{Message, TypedData};
    use std::net::Ipv4Addr;

    fn tunnel_gate(max: usize, seed: u8) -> Gate {
        gate(
            GateConfig {
                tunnels: Some(max),
                ..config()
            },
            POLICY,
            ring(seed),
        )
    }

    /// An upgrade request as the shipped configuration sends it.
    fn upgrade(path: &str, token: Option<&str>, stream: &str, port: u32) -> Request {
        let mut args = vec![
            ("host", TypedData::String("app.test".into())),
            ("path", TypedData::String(path.into())),
            ("method", TypedData::String("GET".into())),
            ("src", TypedData::IPv4(Ipv4Addr::new(198, 51, 100, 1))),
            ("stream", TypedData::String(stream.into())),
            ("conn_src", TypedData::IPv4(Ipv4Addr::new(203, 0, 113, 7))),
            ("conn_port", TypedData::Int32(port as i32)),
        ];
        if let Some(t) = token {
            args.push(("cookie", TypedData::String(format!("kw={t}"))));
        }
        Request {
            messages: vec![Message::new(crate::tunnels::MESSAGE, &args)],
        }
    }

    fn decision_of(a: &Actions) -> Option<String> {
        match a.get("decision") {
            Some(TypedData::String(s)) => Some(s),
            _ => None,
        }
    }

    fn stream(id: u32, port: u16) -> StreamRef {
        StreamRef {
            id,
            client: (Ipv4Addr::new(203, 0, 113, 7), port).into(),
        }
    }

    fn due(g: &Gate, now: i64) -> Vec<(StreamRef, Why)> {
        let keys = g.keys();
        let mut d: Vec<_> = g
            .tunnels()
            .unwrap()
            .due(
                &g.revocations(),
                &keys.ring,
                keys.generation(),
                g.leeway(),
                now,
            )
            .into_iter()
            .map(|d| (d.stream, d.why))
            .collect();
        d.sort_by_key(|(s, _)| s.id);
        d
    }

    #[test]
    fn an_allowed_upgrade_is_remembered_until_its_session_may_no_longer_pass() {
        let g = tunnel_gate(100, 11);
        let keys = g.keys();
        let alice = token::seal(&claims("alice", &["dev"]), &keys.ring).unwrap();
        let mut short = claims("sam", &["dev"]);
        short.exp = NOW + 60;
        let sam = token::seal(&short, &keys.ring).unwrap();

        let a = g
            .answer(&upgrade("/ws", Some(&alice), "42", 50000), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("allow"));
        let a = g
            .answer(&upgrade("/ws", Some(&sam), "43", 50001), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("allow"));
        assert_eq!(g.tunnels().unwrap().len(), 2);
        assert_eq!(g.metrics.tunnels_tracked.get(), 2);

        // Nothing is due while both sessions may pass; the clock is the caller's.
        assert!(due(&g, NOW).is_empty());
        // Sam's session expires (past the leeway of 30 s): his tunnel is due.
        assert_eq!(due(&g, NOW + 91), vec![(stream(43, 50001), Why::Expired)]);
        // Alice's user is revoked: hers is due too.
        let mut r = Revocations::default();
        r.apply(&[Revocation {
            id: 1,
            kind: Kind::User,
            subject: "alice".into(),
            at: NOW,
            until: NOW + 3600,
        }]);
        g.set_revocations(r);
        assert_eq!(due(&g, NOW), vec![(stream(42, 50000), Why::Revoked)]);
        g.tunnels().unwrap().forget(&stream(42, 50000));
        g.tunnels_changed();
        assert_eq!(g.metrics.tunnels_tracked.get(), 1);
    }

    #[test]
    fn a_retired_session_key_makes_its_tunnels_due() {
        let g = tunnel_gate(100, 12);
        let keys = g.keys();
        let alice = token::seal(&claims("alice", &[]), &keys.ring).unwrap();
        g.answer(&upgrade("/ws", Some(&alice), "7", 40000), NOW)
            .unwrap();
        // The same ring again (the seed decides it), its session key rotated, then
        // retired (a suspected leak).
        let mut rotated = ring(12);
        let first = rotated
            .list()
            .into_iter()
            .find(|k| k.kind == keyward_session::keyring::KeyKind::Session)
            .unwrap()
            .id;
        rotated.rotate_session(NOW, &mut rng(99)).unwrap();
        g.set_keys(Keys::new(rotated));
        assert!(due(&g, NOW).is_empty(), "rotated, still verifying");
        let mut retired = ring(12);
        retired.rotate_session(NOW, &mut rng(99)).unwrap();
        retired.retire(&first, NOW).unwrap();
        g.set_keys(Keys::new(retired));
        assert_eq!(due(&g, NOW), vec![(stream(7, 40000), Why::KeyRetired)]);
    }

    #[test]
    fn refused_anonymous_and_plain_requests_are_not_remembered() {
        let g = tunnel_gate(100, 13);
        let keys = g.keys();
        let bob = token::seal(&claims("bob", &["dev"]), &keys.ring).unwrap();
        // Refused: not an admin.
        let a = g
            .answer(&upgrade("/admin/ws", Some(&bob), "1", 1), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("deny"));
        // Public, no session: nothing to end it with.
        let a = g.answer(&upgrade("/healthz", None, "2", 2), NOW).unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("allow"));
        // Sign-in needed.
        let a = g.answer(&upgrade("/ws", None, "3", 3), NOW).unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("login"));
        assert!(g.tunnels().unwrap().is_empty());

        // With tunnels off the upgrade is decided and not remembered.
        let off = gate_with(ring(13));
        let a = off
            .answer(&upgrade("/ws", Some(&bob), "4", 4), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("allow"));
        assert!(off.tunnels().is_none());
    }

    #[test]
    fn upgrades_that_cannot_be_remembered_are_refused() {
        let g = tunnel_gate(MAX_PER_SESSION as usize + 1, 14);
        let keys = g.keys();
        let alice = token::seal(&claims("alice", &["dev"]), &keys.ring).unwrap();
        let bob = token::seal(&claims("bob", &["dev"]), &keys.ring).unwrap();
        for i in 0..MAX_PER_SESSION {
            let a = g
                .answer(&upgrade("/ws", Some(&alice), &i.to_string(), 1000 + i), NOW)
                .unwrap();
            assert_eq!(decision_of(&a).as_deref(), Some("allow"), "{i}");
        }
        // Alice's share is spent; Bob still gets the last place in the table.
        let a = g
            .answer(&upgrade("/ws", Some(&alice), "500", 9000), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("deny"));
        assert!(a.get("user").is_none(), "no identity with a refusal");
        let a = g
            .answer(&upgrade("/ws", Some(&bob), "501", 9001), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("allow"));
        // The table is full.
        let carol = token::seal(&claims("carol", &["dev"]), &keys.ring).unwrap();
        let a = g
            .answer(&upgrade("/ws", Some(&carol), "502", 9002), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("deny"));
        assert_eq!(g.metrics.tunnels_refused.get(), 2);
        // A tunnel that ends frees its place.
        g.tunnels().unwrap().forget(&stream(0, 1000));
        let a = g
            .answer(&upgrade("/ws", Some(&carol), "502", 9002), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("allow"));
        // The same stream again (its id reused) replaces, not adds.
        let a = g
            .answer(&upgrade("/ws", Some(&carol), "502", 9002), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("allow"));
        assert_eq!(g.tunnels().unwrap().len(), MAX_PER_SESSION as usize + 1);
    }

    #[test]
    fn a_malformed_tunnel_message_fails_closed() {
        let g = tunnel_gate(100, 15);
        let keys = g.keys();
        let alice = token::seal(&claims("alice", &[]), &keys.ring).unwrap();
        for (stream, port) in [
            ("", 1),
            ("x", 1),
            ("4294967296", 1),
            ("1", 70000),
            ("1", -1),
        ] {
            let err = g
                .answer(&upgrade("/ws", Some(&alice), stream, port as u32), NOW)
                .unwrap_err();
            assert!(err.to_string().contains(crate::tunnels::MESSAGE), "{err}");
        }
        assert!(g.tunnels().unwrap().is_empty());
        // Read only when a tunnel would be remembered: with tunnels off, or for a request
        // that is not allowed with a session, the stream is not looked at.
        let off = gate_with(ring(15));
        let a = off
            .answer(&upgrade("/ws", Some(&alice), "x", 1), NOW)
            .unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("allow"));
        let a = g.answer(&upgrade("/ws", None, "x", 1), NOW).unwrap();
        assert_eq!(decision_of(&a).as_deref(), Some("login"));
    }
}
