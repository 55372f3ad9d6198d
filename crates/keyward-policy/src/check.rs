//! Validation of single values in a rule (a host, a path prefix, a CIDR, ...): each
//! check returns the compiled form, or a message that says what to write instead.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use crate::path::normalize_path;

/// A compiled host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// Lower-case host name.
    Exact(String),
    /// `*.example.com` as `.example.com`.
    Suffix(String),
}

pub(crate) fn host(raw: &str) -> Result<Host, String> {
    const EXAMPLE: &str = "write a name like \"app.example.com\", or \"*.example.com\" for any \
                           subdomain";
    let host = raw.to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("empty host; {EXAMPLE}"));
    }
    if let Some((_, rest)) = host.split_once("://") {
        let bare = rest.split(['/', ':']).next().unwrap_or_default();
        return Err(format!(
            "{raw:?} has a scheme; write the host only: {bare:?}"
        ));
    }
    if host.starts_with('[') && host.ends_with(']') {
        return match host[1..host.len() - 1].parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(Host::Exact(host)),
            Err(_) => Err(format!(
                "{raw:?} is not an IPv6 address in brackets; {EXAMPLE}"
            )),
        };
    }
    let (name, wildcard) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host.as_str(), false),
    };
    if name.contains('*') {
        return Err(format!(
            "{raw:?}: a wildcard may only be a leading \"*.\", as in \"*.example.com\" (any \
             subdomain, not the apex)"
        ));
    }
    if let Some((before, _)) = name.split_once(':') {
        return Err(format!(
            "{raw:?} has a port; hosts are matched without it: write {:?}",
            if wildcard {
                format!("*.{before}")
            } else {
                before.to_owned()
            }
        ));
    }
    if name.contains('/') {
        return Err(format!(
            "{raw:?} has a path; put hosts in `hosts` and paths in `paths`"
        ));
    }
    if !name.is_ascii() {
        return Err(format!(
            "{raw:?} is not ASCII; write the punycode form (xn--...)"
        ));
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if name.is_empty()
        || !valid_chars
        || name.starts_with('.')
        || name.ends_with('.')
        || name.contains("..")
    {
        return Err(format!("{raw:?} is not a host name; {EXAMPLE}"));
    }
    Ok(if wildcard {
        Host::Suffix(format!(".{name}"))
    } else {
        Host::Exact(name.to_owned())
    })
}

pub(crate) fn path(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!("{raw:?} must start with \"/\"; write \"/{raw}\""));
    }
    if raw.contains(['?', '#']) || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{raw:?} is not a path prefix; paths are matched without the query string, and \
             without spaces"
        ));
    }
    if raw.contains([';', '\\']) {
        return Err(format!(
            "{raw:?} contains ';' or a backslash; requests are also matched with their \
             ';parameters' removed and backslashes read as '/', so rule paths have neither"
        ));
    }
    let normal = normalize_path(raw);
    if normal != raw {
        return Err(format!(
            "{raw:?} is not in normal form (requests are matched after resolving \"..\", \".\" \
             and \"//\"); write {normal:?}"
        ));
    }
    Ok(raw.to_owned())
}

pub(crate) fn method(raw: &str) -> Result<String, String> {
    let token = !raw.is_empty()
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!(
            "{raw:?} is not an HTTP method; write e.g. \"GET\" or \"POST\""
        ));
    }
    Ok(raw.to_ascii_uppercase())
}

/// A CIDR, or a bare address (a network of one). IPv4-mapped IPv6 networks become IPv4
/// networks, because request addresses are matched in their canonical form.
pub(crate) fn source(raw: &str) -> Result<IpNet, String> {
    let text = raw.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "{raw:?} is not an IP network; write a CIDR like \"10.0.0.0/8\" or \
                     \"2001:db8::/32\", or a single address"
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{raw:?} has bits set after the prefix length; write {:?}",
            net.trunc().to_string()
        ));
    }
    Ok(canonical_net(net))
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96)
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

/// A hyphenated UUID (36 characters), returned in lower case.
pub(crate) fn aaguid(raw: &str) -> Result<String, String> {
    let b = raw.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if !ok {
        return Err(format!(
            "{raw:?} is not an AAGUID; write the authenticator model's UUID, like \
             \"cb69481e-8ff7-4039-93ec-0a2729a154a8\""
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

pub(crate) fn role(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err("empty role; write the role's name, like \"admin\"".to_owned());
    }
    if raw.trim() != raw {
        return Err(format!(
            "{raw:?} has spaces around it; write {:?}",
            raw.trim()
        ));
    }
    Ok(raw.to_owned())
}

/// A humantime duration of at least one second, in whole seconds.
pub(crate) fn max_auth_age(raw: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(raw).map_err(|e| {
        format!("{raw:?} is not a duration ({e}); write e.g. \"15m\" or \"1h 30m\"")
    })?;
    if duration < Duration::from_secs(1) {
        return Err(format!("{raw:?} is too short; write at least \"1s\""));
    }
    Ok(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
}
