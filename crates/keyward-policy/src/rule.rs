//! A compiled rule: everything parsed, lower- or upper-cased and split up front, so that
//! matching a request and checking a session never allocate.

use std::net::IpAddr;

use ipnet::IpNet;
use keyward_session::{AuthMethod, Claims};

/// One `[[rule]]`, ready to evaluate. Empty match lists mean "any".
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) name: String,
    /// Exact host names, lower-case.
    pub(crate) exact_hosts: Vec<String>,
    /// Wildcard hosts as suffixes with their leading dot: `*.example.com` is
    /// `.example.com`.
    pub(crate) host_suffixes: Vec<String>,
    /// Path prefixes, normalized, each starting with `/`.
    pub(crate) paths: Vec<String>,
    /// Upper-case method tokens.
    pub(crate) methods: Vec<String>,
    /// Networks with the host bits cleared; IPv4-mapped IPv6 networks stored as IPv4.
    pub(crate) sources: Vec<IpNet>,
    pub(crate) access: Access,
    /// Whether an allowed request with a session gets a signed upstream assertion.
    pub(crate) assertion: bool,
}

/// Who may pass once a rule matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// Everyone, with or without a session.
    Public,
    /// A valid session meeting these requirements.
    Session(Requirements),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirements {
    /// Any one of these roles; empty = any authenticated user.
    pub(crate) roles: Vec<String>,
    pub(crate) device: Device,
    /// Lower-case AAGUIDs; empty = any model. Non-empty implies `Device::Attested`.
    pub(crate) aaguids: Vec<String>,
    /// Step-up: the login must be at most this many seconds old.
    pub(crate) max_auth_age: Option<i64>,
}

/// The device class a session must have been established with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Device {
    Any,
    /// A passkey or an attested key: not a minted token.
    Passkey,
    /// An attested (hardware-bound) security key.
    Attested,
}

/// How a valid session falls short of a rule's requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortfall {
    Role,
    Device,
    StaleAuth,
}

/// How a rule's paths match a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathMatch {
    No,
    /// A prefix matches as written.
    Exact,
    /// A prefix matches only when ASCII case is ignored, as a case-insensitive
    /// upstream (IIS, ASP.NET Core, Express by default) routes it.
    IgnoringCase,
}

impl Rule {
    /// Whether the request falls under this rule, and how its path does. `path` is
    /// already normalized and `src` already canonical (IPv4-mapped addresses as IPv4).
    #[inline]
    pub(crate) fn matches(
        &self,
        host: &str,
        path: &str,
        method: &str,
        src: Option<IpAddr>,
    ) -> PathMatch {
        if !self.matches_host(host) {
            return PathMatch::No;
        }
        let path_match = self.matches_path(path);
        if path_match == PathMatch::No || !self.matches_method(method) || !self.matches_source(src)
        {
            return PathMatch::No;
        }
        path_match
    }

    /// How the rule's paths match `path`: `Exact` when any prefix matches as written.
    #[inline]
    fn matches_path(&self, path: &str) -> PathMatch {
        if self.paths.is_empty() || self.paths.iter().any(|p| path_has_prefix(path, p)) {
            PathMatch::Exact
        } else if self
            .paths
            .iter()
            .any(|p| path_has_prefix_ignoring_case(path, p))
        {
            PathMatch::IgnoringCase
        } else {
            PathMatch::No
        }
    }

    fn matches_host(&self, host: &str) -> bool {
        if self.exact_hosts.is_empty() && self.host_suffixes.is_empty() {
            return true;
        }
        self.exact_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
            || self
                .host_suffixes
                .iter()
                .any(|suffix| host_has_suffix(host, suffix))
    }

    fn matches_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }

    fn matches_source(&self, src: Option<IpAddr>) -> bool {
        if self.sources.is_empty() {
            return true;
        }
        src.is_some_and(|ip| self.sources.iter().any(|net| net.contains(&ip)))
    }
}

/// `host` is a proper subdomain of the suffix's domain (any depth); `suffix` starts
/// with `.`, so the apex itself never matches.
fn host_has_suffix(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len()
        && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Segment-aware prefix: `/admin` matches `/admin`, `/admin/` and `/admin/x`, not
/// `/administrator`; a prefix ending in `/` matches anything that starts with it.
pub(crate) fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// [`path_has_prefix`] with ASCII letters compared without case.
fn path_has_prefix_ignoring_case(path: &str, prefix: &str) -> bool {
    let (path, prefix) = (path.as_bytes(), prefix.as_bytes());
    if path.len() < prefix.len() || !path[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return false;
    }
    let rest = &path[prefix.len()..];
    prefix.ends_with(b"/") || rest.is_empty() || rest[0] == b'/'
}

impl Requirements {
    /// Checks roles, then the device class, then the age of the login.
    pub(crate) fn check(&self, claims: &Claims, now: i64) -> Result<(), Shortfall> {
        if !self.roles.is_empty() && !claims.roles.iter().any(|r| self.roles.contains(r)) {
            return Err(Shortfall::Role);
        }
        let device_ok = match self.device {
            Device::Any => true,
            Device::Passkey => matches!(claims.amr, AuthMethod::Passkey | AuthMethod::Attested),
            Device::Attested => claims.amr == AuthMethod::Attested,
        };
        let model_ok = self.aaguids.is_empty()
            || (claims.amr == AuthMethod::Attested
                && claims
                    .aaguid
                    .as_deref()
                    .is_some_and(|a| self.aaguids.iter().any(|x| x.eq_ignore_ascii_case(a))));
        if !device_ok || !model_ok {
            return Err(Shortfall::Device);
        }
        if let Some(max) = self.max_auth_age
            && now.saturating_sub(claims.auth_time) > max
        {
            return Err(Shortfall::StaleAuth);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_suffix_is_subdomains_only() {
        let s = ".example.com";
        assert!(host_has_suffix("a.example.com", s));
        assert!(host_has_suffix("a.b.example.com", s));
        assert!(!host_has_suffix("example.com", s));
        assert!(!host_has_suffix(".example.com", s));
        assert!(!host_has_suffix("badexample.com", s));
        assert!(!host_has_suffix("a.example.com.evil", s));
        assert!(!host_has_suffix("com", s));
        // Multi-byte text near the boundary must not panic.
        assert!(!host_has_suffix("ééééééééééééé", s));
    }

    #[test]
    fn prefixes_respect_segments() {
        assert!(path_has_prefix("/admin", "/admin"));
        assert!(path_has_prefix("/admin/", "/admin"));
        assert!(path_has_prefix("/admin/x", "/admin"));
        assert!(!path_has_prefix("/administrator", "/admin"));
        assert!(!path_has_prefix("/adm", "/admin"));
        assert!(path_has_prefix("/static/app.js", "/static/"));
        assert!(!path_has_prefix("/static", "/static/"));
        assert!(path_has_prefix("/anything", "/"));
        assert!(path_has_prefix("/", "/"));
        assert!(path_has_prefix("/healthz", "/healthz"));
        assert!(!path_has_prefix("/healthzz", "/healthz"));
    }
}
