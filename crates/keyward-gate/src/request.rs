//! The request as HAProxy describes it in the `keyward-request` SPOE message.

use std::borrow::Cow;
use std::net::IpAddr;

use keyward_spoa::{ArgError, Request};

/// Name of the SPOE message the shipped haproxy/ config sends once per request.
pub const MESSAGE: &str = "keyward-request";

/// Longest return URL (bytes, before percent-encoding) carried to the portal and back.
pub const MAX_RETURN_URL: usize = 4096;

/// What HAProxy tells us about one HTTP request. Attacker-controlled except `src`
/// (and `client_cert`, which HAProxy verified).
///
/// Read from the SPOE message, the text borrows the NOTIFY's bytes (no copy on the
/// request path); tests and tools may own it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessRequest<'a> {
    /// The whole `Cookie` header(s), if any.
    pub cookie: Option<Cow<'a, str>>,
    /// The `Authorization` header, if any.
    pub authorization: Option<Cow<'a, str>>,
    /// `Host`, lower-cased, without port: what policy matches and assertions name.
    pub host: Cow<'a, str>,
    /// `Host` as sent (with port), for the return URL after sign-in.
    pub host_header: Cow<'a, str>,
    /// The path, without query.
    pub path: Cow<'a, str>,
    /// The query string, without `?`.
    pub query: Option<Cow<'a, str>>,
    /// Whether the client connection is TLS (`ssl_fc`).
    pub tls: bool,
    pub method: Cow<'a, str>,
    pub src: Option<IpAddr>,
    pub origin: Option<Cow<'a, str>>,
    pub sec_fetch_site: Option<Cow<'a, str>>,
    /// Hex SHA-1 of the verified client certificate, when TLS client auth is on.
    pub client_cert: Option<Cow<'a, str>>,
}

/// The SPOE message is not what the shipped config sends.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "no `{MESSAGE}` (or `keyward-upgrade`) message in the NOTIFY; check the spoe-message section"
    )]
    NoMessage,
    #[error(transparent)]
    Arg(#[from] ArgError),
}

impl<'a> AccessRequest<'a> {
    /// The URL to come back to after signing in: the one the client asked for, without
    /// its query when the whole would be longer than [`MAX_RETURN_URL`], the host's root
    /// when even the path is, and `None` when even that is (a hostile `Host`).
    ///
    /// Percent-encoded into `login_url`, a return URL of the maximum length still fits a
    /// default-sized SPOP frame; and the portal takes back no longer one.
    pub fn return_url(&self) -> Option<String> {
        let scheme = if self.tls { "https" } else { "http" };
        if scheme.len() + "://".len() + self.host_header.len() >= MAX_RETURN_URL {
            return None;
        }
        let mut url = format!("{scheme}://{}", self.host_header);
        if url.len() + self.path.len() > MAX_RETURN_URL {
            url.push('/');
            return Some(url);
        }
        url.push_str(&self.path);
        if let Some(q) = &self.query
            && url.len() + 1 + q.len() <= MAX_RETURN_URL
        {
            url.push('?');
            url.push_str(q);
        }
        Some(url)
    }

    pub fn from_spoe(req: &'a Request) -> Result<Self, RequestError> {
        let m = req
            .message(MESSAGE)
            .or_else(|| req.message(crate::tunnels::MESSAGE))
            .ok_or(RequestError::NoMessage)?;
        let text = |name| m.str(name).map(|v| v.map(Cow::Borrowed));
        let host = m.str("host")?.unwrap_or_default();
        Ok(Self {
            cookie: text("cookie")?,
            authorization: text("authorization")?,
            host: normalize_host(host),
            host_header: Cow::Borrowed(host),
            path: Cow::Borrowed(m.str("path")?.unwrap_or("/")),
            query: text("query")?.filter(|q| !q.is_empty()),
            tls: matches!(m.get("tls"), Some(keyward_spoa::Value::Bool(true))),
            method: Cow::Borrowed(m.str("method")?.unwrap_or("GET")),
            src: m.ip("src")?,
            origin: text("origin")?,
            sec_fetch_site: text("sec_fetch_site")?,
            client_cert: text("client_cert")?,
        })
    }
}

/// Whether `host` (the `Host` header as sent) is a name or an IP literal with an optional
/// port, or empty (no `Host`). Anything else (`a.test,b.test`, white space, `user@`,
/// `[::1]junk`) is a request HAProxy's routing and keyward's policy could read as two
/// different hosts, and is denied.
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() {
        return true;
    }
    let (address_ok, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match (after, after.strip_prefix(':')) {
            ("", _) => None,
            (_, Some(port)) => Some(port),
            _ => return false,
        };
        let ip_ok = ip
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (!ip.is_empty() && ip_ok, port)
    } else {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        };
        let name_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        (!name.is_empty() && name_ok, port)
    };
    address_ok
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `Example.COM:8443` -> `example.com`; `[::1]:80` -> `[::1]`; `example.com.` ->
/// `example.com`. Idempotent, whatever the input (the steps repeat until nothing
/// changes, so `a:1:2` and `x:80.` end where their normal forms do).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let mut h = host;
    loop {
        let next = host_step(h);
        if next.len() == h.len() {
            return if next.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(next.to_ascii_lowercase())
            } else {
                Cow::Borrowed(next)
            };
        }
        h = next;
    }
}

fn strip_host(s: &str) -> &str {
    s.trim_start()
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

/// One round: surrounding white space and trailing dots, then a `:port`.
fn host_step(host: &str) -> &str {
    let host = strip_host(host);
    let without_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    strip_host(without_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_are_not_one_name_or_address_are_invalid() {
        for ok in [
            "",
            "app.test",
            "App.Test:8443",
            "docs.example.",
            "_svc.internal",
            "10.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
        ] {
            assert!(valid_host(ok), "{ok:?}");
        }
        for bad in [
            "admin.test,public.test",
            "admin.test, public.test",
            "app.test ",
            " app.test",
            "user@app.test",
            "app.test:",
            "app.test:80:80",
            "app.test:123456",
            "app.test:8o",
            ":80",
            "[::1]junk",
            "[::1]:",
            "[::1",
            "[]",
            "[::g]",
            "app/test",
            "app.test\n",
            "app%2etest",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM:8443"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("app"), "app");
        assert_eq!(normalize_host("a:b"), "a:b");
        // Idempotent, whatever the order of dots and ports.
        for h in [
            "x:80.",
            "x.:80",
            "x:.",
            "A.B.:1.",
            "a:80:90",
            "x:\n\n\n.",
            " [::1]:8 ",
            "::1",
        ] {
            let once = normalize_host(h);
            assert_eq!(normalize_host(&once), once, "{h}");
        }
    }
}
