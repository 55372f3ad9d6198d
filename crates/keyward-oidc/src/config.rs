//! The `[oidc]` config section and its validation. No IO: [`OidcConfig::validate`] runs
//! at config load, before anything talks to the network, and again in
//! [`Provider::discover`](crate::Provider::discover).

use std::collections::BTreeMap;

use url::{Host, Url};

use crate::OidcError;

/// `[oidc]`: the OpenID Provider keyward signs people in with. `Debug` shows whether a
/// client secret is set, never the secret.
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer identifier, exactly as its discovery document states it
    /// (e.g. `https://login.example.com/realms/x`). `http://` only on loopback hosts.
    pub issuer: String,
    pub client_id: String,
    /// Set: a confidential client (`client_secret_basic`). Unset: a public client that
    /// relies on PKCE alone.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Where the provider sends the browser back to:
    /// `https://<portal host>/.keyward/oidc/callback`.
    pub redirect_url: String,
    /// Scopes to request; `openid` is always requested.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim (in the ID token or userinfo) that lists the person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// IdP group -> keyward roles. Groups not listed grant nothing.
    #[serde(default)]
    pub role_map: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("role_map", &self.role_map)
            .finish()
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

impl OidcConfig {
    /// Checks everything that can be checked without the network. Each error names the
    /// key (`oidc.issuer`, `oidc.redirect_url`, ...) and says what to write instead.
    pub fn validate(&self) -> Result<(), OidcError> {
        let issuer = parse_url("oidc.issuer", &self.issuer)?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(config(
                "oidc.issuer",
                "must not have a query or fragment; write the issuer exactly as the provider's discovery document states it",
            ));
        }
        parse_url("oidc.redirect_url", &self.redirect_url)?;
        if self.client_id.trim().is_empty() {
            return Err(config(
                "oidc.client_id",
                "is empty; write the client ID registered at the provider",
            ));
        }
        if self
            .client_secret
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(config(
                "oidc.client_secret",
                "is empty; remove the key for a public client, or write the secret",
            ));
        }
        if let Some(bad) = self.scopes.iter().find(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        }) {
            return Err(config(
                "oidc.scopes",
                &format!(
                    "{bad:?} is not a scope; write each scope as its own string, without spaces"
                ),
            ));
        }
        if self.groups_claim.trim().is_empty() {
            return Err(config(
                "oidc.groups_claim",
                "is empty; write the claim that lists groups (commonly \"groups\")",
            ));
        }
        for (group, roles) in &self.role_map {
            if roles.iter().any(|r| r.trim().is_empty()) {
                return Err(config(
                    &format!("oidc.role_map.{group}"),
                    "has an empty role name",
                ));
            }
        }
        Ok(())
    }

    /// The scopes to request besides `openid` (which is always sent), without repeats.
    pub(crate) fn extra_scopes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.scopes {
            if s != "openid" && !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
}

fn config(key: &str, what: &str) -> OidcError {
    OidcError::Config(format!("{key} {what}"))
}

/// A URL keyward will talk to (or send a browser to): `https://`, or `http://` on a
/// loopback host (for development and tests).
fn parse_url(key: &str, value: &str) -> Result<Url, OidcError> {
    let url = Url::parse(value).map_err(|e| {
        config(
            key,
            &format!(
                "is not an absolute URL ({e}): write it like https://login.example.com/realms/main"
            ),
        )
    })?;
    check_scheme(&url).map_err(|why| config(key, &why))?;
    Ok(url)
}

/// `Ok` for `https://` URLs and for `http://` on 127.0.0.1, ::1 or localhost; otherwise
/// a sentence saying what is wrong.
pub(crate) fn check_scheme(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "uses http:// on a non-loopback host ({}); use https:// (plain http is only allowed for 127.0.0.1, ::1 and localhost)",
            url.host_str().unwrap_or("")
        )),
        other => Err(format!("has scheme {other:?}; use https://")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(issuer: &str) -> OidcConfig {
        OidcConfig {
            issuer: issuer.into(),
            client_id: "keyward".into(),
            client_secret: None,
            redirect_url: "https://auth.example.com/.keyward/oidc/callback".into(),
            scopes: default_scopes(),
            groups_claim: default_groups_claim(),
            role_map: BTreeMap::new(),
        }
    }

    fn err(c: &OidcConfig) -> String {
        match c.validate() {
            Err(OidcError::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn https_and_loopback_http_are_accepted() {
        for issuer in [
            "https://login.example.com/realms/x",
            "http://127.0.0.1:8080",
            "http://[::1]:9000/issuer",
            "http://localhost:3000",
            "http://127.0.0.2",
        ] {
            cfg(issuer)
                .validate()
                .unwrap_or_else(|e| panic!("{issuer}: {e}"));
        }
    }

    #[test]
    fn http_on_a_real_host_names_the_key() {
        let m = err(&cfg("http://login.example.com"));
        assert!(m.starts_with("oidc.issuer "), "{m}");
        assert!(m.contains("https://"), "{m}");
        let m = err(&cfg("http://localhost.example.com"));
        assert!(m.starts_with("oidc.issuer "), "{m}");
    }

    #[test]
    fn other_mistakes_name_their_key() {
        assert!(err(&cfg("login.example.com")).starts_with("oidc.issuer "));
        assert!(err(&cfg("ftp://login.example.com")).starts_with("oidc.issuer "));
        assert!(err(&cfg("https://x.example.com/?a=b")).starts_with("oidc.issuer "));
        let mut c = cfg("https://x.example.com");
        c.redirect_url = "http://auth.example.com/cb".into();
        assert!(err(&c).starts_with("oidc.redirect_url "));
        let mut c = cfg("https://x.example.com");
        c.client_id = " ".into();
        assert!(err(&c).starts_with("oidc.client_id "));
        let mut c = cfg("https://x.example.com");
        c.client_secret = Some(String::new());
        assert!(err(&c).starts_with("oidc.client_secret "));
        let mut c = cfg("https://x.example.com");
        c.scopes = vec!["email profile".into()];
        assert!(err(&c).starts_with("oidc.scopes "));
        let mut c = cfg("https://x.example.com");
        c.role_map.insert("eng".into(), vec![String::new()]);
        assert!(err(&c).starts_with("oidc.role_map.eng "));
    }

    #[test]
    fn debug_redacts_the_client_secret() {
        let mut c = cfg("https://x.example.com");
        c.client_secret = Some("hunter2-secret".into());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn openid_is_not_requested_twice() {
        let mut c = cfg("https://x.example.com");
        c.scopes = ["email", "openid", "groups", "email"]
            .map(String::from)
            .to_vec();
        assert_eq!(c.extra_scopes(), ["email", "groups"]);
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let c: OidcConfig = serde_json::from_value(serde_json::json!({
            "issuer": "https://x.example.com",
            "client_id": "kw",
            "redirect_url": "https://auth.example.com/.keyward/oidc/callback",
        }))
        .expect("minimal config");
        assert_eq!(c.scopes, ["openid", "email", "profile"]);
        assert_eq!(c.groups_claim, "groups");
        assert!(c.client_secret.is_none() && c.role_map.is_empty());
        let bad = serde_json::from_value::<OidcConfig>(serde_json::json!({
            "issuer": "https://x.example.com",
            "client_id": "kw",
            "redirect_url": "https://auth.example.com/cb",
            "client_secert": "typo",
        }));
        assert!(bad.is_err());
    }
}
