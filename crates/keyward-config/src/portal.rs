//! Validation of `[portal]`: WebAuthn origins, the relying-party id, return hosts and
//! the cookie domain must fit together, or nothing starts.

use url::Url;

use crate::{Config, ConfigError, IdentityMode, invalid};

/// A DNS name (letters, digits, `-`, dots between labels) or an IP literal.
pub(crate) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `host` is `domain` or one of its subdomains.
pub fn host_within(host: &str, domain: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let domain = domain.trim_start_matches('.').to_ascii_lowercase();
    host == domain || host.ends_with(&format!(".{domain}"))
}

fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.ends_with(".localhost")
}

/// Parses one `portal.origins` entry: `scheme://host[:port]`, nothing else.
pub fn parse_origin(origin: &str) -> Result<Url, String> {
    let url = Url::parse(origin).map_err(|e| format!("`{origin}` is not a URL ({e})"))?;
    let host = url.host_str().unwrap_or_default();
    if !matches!(url.scheme(), "https" | "http")
        || host.is_empty()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || origin.ends_with('/')
    {
        return Err(format!(
            "`{origin}` must be scheme://host[:port] with no path, e.g. \"https://auth.example.com\""
        ));
    }
    if url.scheme() == "http" && !is_loopback_host(host) {
        return Err(format!(
            "`{origin}`: WebAuthn needs https except on localhost; use https://{host}"
        ));
    }
    Ok(url)
}

pub(crate) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    let p = &cfg.portal;
    let rp_id = p.rp_id.to_ascii_lowercase();
    if !is_hostname(&rp_id) {
        return Err(invalid(
            "portal.rp_id",
            format!(
                "`{}` is not a domain name; use the domain your origins share, e.g. \"example.com\"",
                p.rp_id
            ),
        ));
    }
    if p.origins.is_empty() {
        return Err(invalid(
            "portal.origins",
            "list the exact origins people reach the portal at, e.g. [\"https://auth.example.com\"]",
        ));
    }
    let mut origins = Vec::new();
    for origin in &p.origins {
        let url = parse_origin(origin).map_err(|e| invalid("portal.origins", e))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        if !host_within(&host, &rp_id) {
            return Err(invalid(
                "portal.origins",
                format!(
                    "`{origin}` is not under `portal.rp_id` = \"{rp_id}\"; set rp_id to a domain every origin shares, or fix the origin"
                ),
            ));
        }
        if let Some(domain) = &cfg.session.cookie_domain
            && !host_within(&host, domain)
        {
            return Err(invalid(
                "session.cookie_domain",
                format!(
                    "`{origin}` is not under \"{domain}\": browsers would drop the cookie it sets"
                ),
            ));
        }
        origins.push(url.origin().ascii_serialization());
    }
    let login = Url::parse(&p.login_url).map_err(|e| invalid("portal.login_url", e.to_string()))?;
    if !origins.contains(&login.origin().ascii_serialization()) {
        return Err(invalid(
            "portal.login_url",
            format!(
                "`{}` is not on one of `portal.origins` ({}); sign-in must run on an allowed origin",
                p.login_url,
                p.origins.join(", ")
            ),
        ));
    }
    for host in &p.return_hosts {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let (name, port) = match bare.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (bare, None),
        };
        if !is_hostname(name) || port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(invalid(
                "portal.return_hosts",
                format!("`{host}`: write host, host:port or *.domain, e.g. \"*.example.com\""),
            ));
        }
    }
    if !(60..=30 * 86400).contains(&p.invite_ttl.as_secs()) {
        return Err(invalid(
            "portal.invite_ttl",
            "must be between \"1m\" and \"30days\" (default \"24h\")",
        ));
    }
    if p.rate_per_ip == 0 || p.rate_per_user == 0 {
        return Err(invalid(
            "portal.rate_per_ip",
            "rate limits must be at least 1 per minute (defaults 30 per address, 10 per user)",
        ));
    }
    for aaguid in &p.attestation.aaguids {
        let hex: String = aaguid.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "portal.attestation.aaguids",
                format!(
                    "`{aaguid}` is not an AAGUID, e.g. \"cb69481e-8ff7-4039-93ec-0a2729a154a8\""
                ),
            ));
        }
    }
    if p.attestation.required && p.attestation.ca_files.is_empty() {
        return Err(invalid(
            "portal.attestation.required",
            "needs `portal.attestation.ca_files`: the CAs a security key's attestation must chain to",
        ));
    }
    if !p.attestation.aaguids.is_empty() && p.attestation.ca_files.is_empty() {
        return Err(invalid(
            "portal.attestation.aaguids",
            "an AAGUID alone proves nothing; add `portal.attestation.ca_files`",
        ));
    }
    if p.identity != IdentityMode::Invite && cfg.oidc.is_none() {
        return Err(invalid(
            "portal.identity",
            "`oidc` and `oidc-enroll` need an [oidc] section (issuer, client_id, redirect_url)",
        ));
    }
    // With invites only, an IdP sign-in would still create accounts and enroll devices.
    if p.identity == IdentityMode::Invite && cfg.oidc.is_some() {
        return Err(invalid(
            "portal.identity",
            "is `invite` (the default), so the [oidc] section would let anyone the IdP knows enroll; set `oidc` or `oidc-enroll`, or remove [oidc]",
        ));
    }
    Ok(())
}
