//! keyward-oidc against OpenID Providers on loopback: sign-ins that must work run
//! against the real npm `oidc-provider` (tests/node); ID tokens a compliant provider
//! would never issue come from the crafted provider in `keyward_tests::oidc::crafted`.
//!
//! Needs `npm ci --prefix tests/node` (the bootstrap runs it).

use std::collections::BTreeMap;

use keyward_oidc::{OidcConfig, OidcError, Provider};
use keyward_tests::oidc::crafted::{CraftedOp, Script, Signing};
use keyward_tests::oidc::{Callback, OidcProvider, sign_in};
use serde_json::{Value, json};

/// Never requested: the walk stops when the provider redirects here.
const REDIRECT: &str = "http://127.0.0.1:1/.keyward/oidc/callback";
const SECRET: &str = "test-secret-0123456789";

fn client(id: &str, alg: &str, confidential: bool) -> Value {
    let mut c = json!({
        "client_id": id,
        "redirect_uris": [REDIRECT],
        "id_token_signed_response_alg": alg,
    });
    if confidential {
        c["client_secret"] = json!(SECRET);
    } else {
        c["token_endpoint_auth_method"] = json!("none");
    }
    c
}

fn config(issuer: &str, client_id: &str, confidential: bool) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: confidential.then(|| SECRET.to_owned()),
        redirect_url: REDIRECT.to_owned(),
        scopes: ["openid", "email", "profile", "groups"]
            .map(String::from)
            .to_vec(),
        groups_claim: "groups".to_owned(),
        role_map: BTreeMap::from([
            ("eng".to_owned(), vec!["developer".to_owned()]),
            (
                "admins".to_owned(),
                vec!["admin".to_owned(), "developer".to_owned()],
            ),
            ("ops".to_owned(), vec!["operator".to_owned()]),
        ]),
    }
}

/// Begin, walk the provider as `account`, and return the pending sign-in and callback.
async fn walk(provider: &Provider, account: &str) -> (keyward_oidc::Pending, Callback) {
    let (url, pending) = provider.begin();
    let query: BTreeMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert_eq!(
        query.get("state").map(String::as_str),
        Some(pending.state())
    );
    let cb = sign_in(&url, account, REDIRECT).await;
    assert_eq!(cb.error, None, "the provider refused the sign-in: {cb:?}");
    assert_eq!(cb.state.as_deref(), Some(pending.state()));
    (pending, cb)
}

async fn sign_in_as(
    provider: &Provider,
    account: &str,
) -> Result<keyward_oidc::Identity, OidcError> {
    let (pending, cb) = walk(provider, account).await;
    let code = cb.code.expect("code in callback");
    let state = cb.state.expect("state in callback");
    provider.complete(pending, &code, &state).await
}

#[tokio::test]
async fn rs256_confidential_client_maps_groups_to_roles() {
    let op = OidcProvider::start(&json!([client("kw", "RS256", true)]).to_string()).await;
    let provider = Provider::discover(&config(&op.issuer, "kw", true))
        .await
        .expect("discovery");
    let who = sign_in_as(&provider, "alice").await.expect("sign-in");
    assert_eq!(who.sub, "alice");
    assert_eq!(who.issuer, op.issuer);
    assert_eq!(who.email.as_deref(), Some("alice@example.test"));
    assert!(who.email_verified);
    assert_eq!(who.name.as_deref(), Some("Alice Example"));
    assert_eq!(who.groups, ["admins", "eng"]);
    assert_eq!(who.roles, ["admin", "developer"]);
}

#[tokio::test]
async fn es256_public_client_with_pkce_only() {
    let op = OidcProvider::start(&json!([client("kw-public", "ES256", false)]).to_string()).await;
    let provider = Provider::discover(&config(&op.issuer, "kw-public", false))
        .await
        .expect("discovery");
    let who = sign_in_as(&provider, "bob").await.expect("sign-in");
    assert_eq!(who.sub, "bob");
    assert!(!who.email_verified, "bob's email is not verified");
    assert_eq!(who.groups, ["eng"]);
    assert_eq!(who.roles, ["developer"]);
}

#[tokio::test]
async fn groups_from_the_id_token_when_there_is_no_userinfo() {
    let op = OidcProvider::start_with(
        &json!([client("kw", "ES256", true)]).to_string(),
        &[("OIDC_CLAIMS_IN_ID_TOKEN", "1"), ("OIDC_USERINFO", "0")],
    )
    .await;
    let provider = Provider::discover(&config(&op.issuer, "kw", true))
        .await
        .expect("discovery");
    // A single string rather than an array.
    let carol = sign_in_as(&provider, "carol").await.expect("carol");
    assert_eq!(carol.groups, ["ops"]);
    assert_eq!(carol.roles, ["operator"]);
    assert_eq!(carol.email.as_deref(), Some("carol@example.test"));
    // No groups claim at all: no roles, still signed in.
    let dave = sign_in_as(&provider, "dave").await.expect("dave");
    assert!(dave.groups.is_empty() && dave.roles.is_empty());
}

#[tokio::test]
async fn unknown_groups_grant_nothing_and_huge_lists_are_refused() {
    let many: Vec<String> = (0..300).map(|i| format!("group-{i}")).collect();
    let accounts = json!({
        "erin": { "email": "erin@example.test", "groups": ["contractors", "visitors"] },
        "frank": { "email": "frank@example.test", "groups": many },
    });
    let op = OidcProvider::start_with(
        &json!([client("kw", "RS256", true)]).to_string(),
        &[("OIDC_ACCOUNTS", &accounts.to_string())],
    )
    .await;
    let provider = Provider::discover(&config(&op.issuer, "kw", true))
        .await
        .expect("discovery");
    let erin = sign_in_as(&provider, "erin").await.expect("erin");
    assert_eq!(erin.groups, ["contractors", "visitors"]);
    assert!(erin.roles.is_empty());
    match sign_in_as(&provider, "frank").await {
        Err(OidcError::Claims(why)) => assert!(why.contains("300 groups"), "{why}"),
        other => panic!("300 groups must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn forged_state_replayed_code_and_foreign_codes_are_rejected() {
    let op = OidcProvider::start(
        &json!([client("kw", "RS256", true), client("other", "RS256", true)]).to_string(),
    )
    .await;
    let provider = Provider::discover(&config(&op.issuer, "kw", true))
        .await
        .expect("discovery");

    // A callback whose state is not the pending sign-in's.
    let (pending, cb) = walk(&provider, "alice").await;
    let code = cb.code.expect("code");
    let err = provider
        .complete(pending.clone(), &code, "forged-state")
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::StateMismatch), "{err:?}");
    // The rejected callback did not spend the code; the real one works once, then not.
    provider
        .complete(pending.clone(), &code, pending.state())
        .await
        .expect("the genuine callback");
    let err = provider
        .complete(pending.clone(), &code, pending.state())
        .await
        .unwrap_err();
    assert!(
        matches!(err, OidcError::Exchange(ref m) if m.contains("invalid_grant")),
        "{err:?}"
    );

    // A code from another sign-in, presented with this sign-in's state: the PKCE
    // verifier does not fit it, so the token endpoint refuses.
    let (mine, _) = walk(&provider, "alice").await;
    let (_, theirs) = walk(&provider, "bob").await;
    let err = provider
        .complete(mine.clone(), &theirs.code.expect("code"), mine.state())
        .await
        .unwrap_err();
    assert!(
        matches!(err, OidcError::Exchange(ref m) if m.contains("invalid_grant")),
        "{err:?}"
    );

    // A code issued to another client at the same provider.
    let other = Provider::discover(&config(&op.issuer, "other", true))
        .await
        .expect("discovery");
    let (pending_other, cb_other) = walk(&other, "alice").await;
    let err = provider
        .complete(
            pending_other.clone(),
            &cb_other.code.expect("code"),
            pending_other.state(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, OidcError::Exchange(ref m) if m.contains("invalid_grant")),
        "{err:?}"
    );

    // Errors carry no secrets.
    let text = format!("{err} {err:?} {pending:?} {provider:?}");
    for secret in [SECRET, &code, pending.state()] {
        assert!(!text.contains(secret), "leaked a secret: {text}");
    }
}

#[tokio::test]
async fn plain_http_issuer_off_loopback_is_refused() {
    let cfg = config("http://login.example.com/realms/main", "kw", true);
    match Provider::discover(&cfg).await {
        Err(OidcError::Config(why)) => {
            assert!(why.starts_with("oidc.issuer"), "{why}");
            assert!(why.contains("https://"), "{why}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// Discovers the crafted provider, begins a sign-in, scripts the token endpoint with
/// `craft(honest claims for this sign-in's nonce)` and completes.
async fn crafted(
    signing: Signing,
    craft: impl FnOnce(Value) -> Value,
    userinfo: Option<Value>,
) -> Result<keyward_oidc::Identity, OidcError> {
    let op = CraftedOp::start("kw", SECRET).await;
    let provider = Provider::discover(&config(&op.issuer, "kw", true))
        .await
        .expect("discovery of the crafted provider");
    let (url, pending) = provider.begin();
    let nonce = url
        .query_pairs()
        .find(|(k, _)| k == "nonce")
        .map(|(_, v)| v.into_owned())
        .expect("nonce in the authorization URL");
    op.script(Script {
        claims: craft(op.honest_claims(&nonce)),
        signing,
        userinfo,
    });
    let state = pending.state().to_owned();
    provider.complete(pending, "any-code", &state).await
}

fn id_token_error(r: Result<keyward_oidc::Identity, OidcError>) -> String {
    match r {
        Err(OidcError::IdToken(why)) => why,
        other => panic!("expected an ID token error, got {other:?}"),
    }
}

#[tokio::test]
async fn crafted_honest_token_is_accepted() {
    // The control: the crafted provider itself is not what fails the other cases.
    let who = crafted(Signing::Good, |c| c, None)
        .await
        .expect("honest token");
    assert_eq!(who.sub, "mallory");
    assert_eq!(who.roles, ["admin", "developer"]);
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let why = id_token_error(
        crafted(
            Signing::Good,
            |mut c| {
                c["aud"] = json!("other-client");
                c
            },
            None,
        )
        .await,
    );
    assert!(why.contains("audience"), "{why}");
    let why = id_token_error(
        crafted(
            Signing::Good,
            |mut c| {
                c["aud"] = json!(["kw", "other-client"]);
                c
            },
            None,
        )
        .await,
    );
    assert!(why.contains("audience"), "{why}");
    let why = id_token_error(
        crafted(
            Signing::Good,
            |mut c| {
                c["azp"] = json!("other-client");
                c
            },
            None,
        )
        .await,
    );
    assert!(why.contains("azp"), "{why}");
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let why = id_token_error(
        crafted(
            Signing::Good,
            |mut c| {
                let iat = c["iat"].as_i64().unwrap_or_default();
                c["iat"] = json!(iat - 3600);
                c["exp"] = json!(iat - 600);
                c
            },
            None,
        )
        .await,
    );
    assert!(why.contains("expired"), "{why}");
}

#[tokio::test]
async fn bad_signatures_are_rejected() {
    for signing in [Signing::Rogue, Signing::UnknownKid, Signing::Hs256] {
        let why = id_token_error(crafted(signing, |c| c, None).await);
        assert!(why.contains("signature"), "{signing:?}: {why}");
    }
}

#[tokio::test]
async fn wrong_nonce_and_issuer_are_rejected() {
    let why = id_token_error(
        crafted(
            Signing::Good,
            |mut c| {
                c["nonce"] = json!("a-nonce-from-another-sign-in");
                c
            },
            None,
        )
        .await,
    );
    assert!(why.contains("nonce"), "{why}");
    let why = id_token_error(
        crafted(
            Signing::Good,
            |mut c| {
                c["iss"] = json!("http://127.0.0.1:1");
                c
            },
            None,
        )
        .await,
    );
    assert!(why.contains("issuer"), "{why}");
}

#[tokio::test]
async fn userinfo_for_another_subject_is_rejected() {
    let r = crafted(
        Signing::Good,
        |c| c,
        Some(json!({"sub": "admin", "groups": ["admins"]})),
    )
    .await;
    match r {
        Err(OidcError::Userinfo(why)) => assert!(why.contains("subject"), "{why}"),
        other => panic!("expected a userinfo error, got {other:?}"),
    }
}
