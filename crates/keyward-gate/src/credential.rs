//! Finding the session token in a request: the session cookie, or an
//! `Authorization: Bearer` header for API clients. Both headers are attacker-controlled:
//! parsing is linear, allocation-free, and bounded by what HAProxy accepted.

use keyward_session::token;

/// Where the token came from (for metrics and audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cookie,
    Bearer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cookie => "cookie",
            Source::Bearer => "bearer",
        }
    }
}

/// A session token found in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    pub token: &'a str,
    pub source: Source,
    /// The `Cookie` header carries another session cookie with a different value after
    /// this one: a cookie set for a longer path or another domain (a sibling site under
    /// `session.cookie_domain` can set one). Which one the user meant is unknown;
    /// [`cookie_values`] lists them.
    pub repeated: bool,
}

/// The session token in the request, if any. An `Authorization: Bearer` with a keyward
/// token wins over the cookie; any other `Authorization` (the application's own bearer
/// token, Basic) is the application's, and the cookie decides.
pub fn find<'a>(
    cookie: Option<&'a str>,
    authorization: Option<&'a str>,
    cookie_name: &str,
) -> Option<Credential<'a>> {
    if let Some(token) = authorization.and_then(bearer) {
        return Some(Credential {
            token,
            source: Source::Bearer,
            repeated: false,
        });
    }
    let mut values = cookie_values(cookie?, cookie_name);
    let token = values.next()?;
    Some(Credential {
        token,
        source: Source::Cookie,
        repeated: values.any(|v| v != token),
    })
}

/// The keyward token of an `Authorization: Bearer v4.local.…` header: the scheme in any
/// case, one space, the token. Exactly what HAProxy's rule `req.fhdr(authorization) -m
/// beg -i "Bearer v4.local."` removes before forwarding, so a token keyward used never
/// reaches the application.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_end().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && token.starts_with(token::HEADER)).then_some(token)
}

/// The value of the first cookie called `name` in a `Cookie` header
/// (`a=1; name=value; b=2`). Surrounding double quotes are removed.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    cookie_values(header, name).next()
}

/// The values of every cookie called `name` in a `Cookie` header, in order, empty ones
/// left out. Surrounding double quotes are removed.
pub fn cookie_values<'a>(header: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    header.split(';').filter_map(move |pair| {
        let (n, v) = pair.split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty()).then_some(v)
    })
}

/// The `Cookie` header the application should get: `header` without any cookie called
/// `name`, the others kept in order. `None` when `header` has no such cookie (leave
/// the header alone); `Some("")` when nothing else is left (remove the header).
pub fn without_cookie(header: &str, name: &str) -> Option<String> {
    let mut found = false;
    let mut rest = String::with_capacity(header.len());
    for pair in header.split(';').map(str::trim) {
        if pair.split_once('=').is_some_and(|(n, _)| n.trim() == name) {
            found = true;
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        if !rest.is_empty() {
            rest.push_str("; ");
        }
        rest.push_str(pair);
    }
    found.then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cookies() {
        let h = "theme=dark; keyward_session=v4.local.abc; other=1";
        assert_eq!(cookie_value(h, "keyward_session"), Some("v4.local.abc"));
        assert_eq!(cookie_value(h, "keyward"), None);
        assert_eq!(
            cookie_value("keyward_session=\"q\"", "keyward_session"),
            Some("q")
        );
        assert_eq!(cookie_value("keyward_session=", "keyward_session"), None);
        assert_eq!(cookie_value("xkeyward_session=1", "keyward_session"), None);
        // The first one comes first when a cookie is repeated; all of them are listed.
        assert_eq!(cookie_value("k=1; k=2", "k"), Some("1"));
        assert_eq!(
            cookie_values("k=1; a=k; k=; k=\"2\"", "k").collect::<Vec<_>>(),
            ["1", "2"]
        );
    }

    #[test]
    fn a_repeated_session_cookie_is_flagged_unless_the_values_agree() {
        let cookie = |h| find(Some(h), None, "k").map(|c| (c.token, c.repeated));
        assert_eq!(cookie("k=1"), Some(("1", false)));
        assert_eq!(cookie("k=1; a=2; k=1"), Some(("1", false)));
        assert_eq!(cookie("k=1; k=; a=2"), Some(("1", false)));
        assert_eq!(cookie("k=1; a=2; k=3"), Some(("1", true)));
        assert_eq!(cookie("a=2; k=; k=3"), Some(("3", false)));
        // A keyward bearer token is one credential, whatever the cookies say.
        let both = find(Some("k=1; k=3"), Some("Bearer v4.local.b"), "k").unwrap();
        assert!(!both.repeated && both.source == Source::Bearer);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer("Bearer v4.local.abc"), Some("v4.local.abc"));
        assert_eq!(bearer("bearer v4.local.abc  "), Some("v4.local.abc"));
        assert_eq!(bearer("BEARER v4.local.abc"), Some("v4.local.abc"));
        // Not what HAProxy's rule strips, so not taken (the header goes to the app).
        assert_eq!(bearer("Bearer  v4.local.abc"), None);
        assert_eq!(bearer("Bearer\tv4.local.abc"), None);
        // The application's own tokens.
        assert_eq!(bearer("Bearer eyJhbGciOi.x.y"), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn bearer_wins_over_cookie() {
        assert_eq!(
            find(Some("k=c"), Some("Bearer v4.local.b"), "k").map(|c| (c.token, c.source)),
            Some(("v4.local.b", Source::Bearer))
        );
        // The application's bearer token leaves the decision to the cookie.
        assert_eq!(
            find(Some("k=c"), Some("Bearer eyJ.app.jwt"), "k").map(|c| (c.token, c.source)),
            Some(("c", Source::Cookie))
        );
        assert_eq!(
            find(Some("k=c"), Some("Basic x"), "k").map(|c| (c.token, c.source)),
            Some(("c", Source::Cookie))
        );
        assert_eq!(find(None, None, "k"), None);
    }

    #[test]
    fn thousands_of_cookies() {
        let mut h: String = (0..5000).map(|i| format!("c{i}=v{i}; ")).collect();
        h.push_str("k=token");
        assert_eq!(cookie_value(&h, "k"), Some("token"));
    }

    proptest! {
        #[test]
        fn never_panics(header in ".{0,512}", auth in ".{0,128}") {
            let _ = find(Some(&header), Some(&auth), "keyward_session");
        }

        #[test]
        fn finds_the_named_cookie_among_others(
            before in prop::collection::vec(("[a-j]{1,8}", "[a-z0-9]{0,8}"), 0..20),
            value in "[A-Za-z0-9._-]{1,64}",
        ) {
            let mut h: String = before.iter().map(|(n, v)| format!("{n}={v}; ")).collect();
            h.push_str(&format!("keyward_session={value}"));
            prop_assert_eq!(cookie_value(&h, "keyward_session"), Some(value.as_str()));
        }

        #[test]
        fn the_session_cookie_never_reaches_the_application(
            pairs in prop::collection::vec(("(keyward_session|[a-j]{1,8})", "[a-z0-9=]{0,8}"), 0..12),
            spaces in " {0,2}",
        ) {
            let header = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(&format!(";{spaces}"));
            let ours = pairs.iter().any(|(n, _)| n == "keyward_session");
            match without_cookie(&header, "keyward_session") {
                None => prop_assert!(!ours),
                Some(rest) => {
                    prop_assert!(ours);
                    prop_assert_eq!(cookie_value(&rest, "keyward_session"), None);
                    let kept: Vec<String> = pairs.iter().filter(|(n, _)| n != "keyward_session").map(|(n, v)| format!("{n}={v}")).collect();
                    prop_assert_eq!(rest, kept.join("; "));
                }
            }
        }
    }

    #[test]
    fn stripping_the_session_cookie() {
        let f = |h| without_cookie(h, "keyward_session");
        assert_eq!(f("keyward_session=x"), Some(String::new()));
        assert_eq!(f("a=1; keyward_session=x; b=2"), Some("a=1; b=2".into()));
        assert_eq!(f("a=1;keyward_session=x"), Some("a=1".into()));
        assert_eq!(f("not_keyward_session=1"), None);
        assert_eq!(
            f("a=1; keyward_session=x; keyward_session=y"),
            Some("a=1".into())
        );
    }
}
