//! `[tunnels]`: ending WebSocket (and other upgraded) connections with their session,
//! through HAProxy's runtime API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, invalid};

/// `[tunnels]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelsConfig {
    /// Remember each upgrade allowed with a session, and end its tunnel when the
    /// session is revoked or expires. Off: a tunnel lives until either end closes it.
    pub enabled: bool,
    /// HAProxy's runtime API, at level admin (`stats socket … level admin` in the
    /// shipped haproxy.cfg): a Unix socket path, or `IP:PORT` on this host.
    pub haproxy_api: String,
    /// How often tunnels are checked against revocations, expiry and the key ring: a
    /// revoked session's tunnel ends at most this long after the revocation reaches the
    /// agent.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// The most tunnels remembered at once; further upgrades are refused (403) until
    /// some close, since they could not be ended.
    pub max_tracked: usize,
}

impl Default for TunnelsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            haproxy_api: "/run/haproxy/keyward-api.sock".into(),
            check_interval: Duration::from_secs(1),
            max_tracked: 100_000,
        }
    }
}

/// Where HAProxy's runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for ApiAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiAddr::Unix(p) => write!(f, "{}", p.display()),
            ApiAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl TunnelsConfig {
    /// `haproxy_api`, parsed: an absolute path is a Unix socket (`unix@` as in
    /// haproxy.cfg is accepted too), anything else must be `IP:PORT`.
    pub fn api_addr(&self) -> Result<ApiAddr, ConfigError> {
        let a = self.haproxy_api.trim();
        let path = a.strip_prefix("unix@").unwrap_or(a);
        if path.starts_with('/') {
            return Ok(ApiAddr::Unix(PathBuf::from(path)));
        }
        let tcp = a
            .strip_prefix("ipv4@")
            .or(a.strip_prefix("ipv6@"))
            .unwrap_or(a);
        tcp.parse::<SocketAddr>().map(ApiAddr::Tcp).map_err(|_| {
            invalid(
                "tunnels.haproxy_api",
                format!(
                    "`{a}` is neither an absolute Unix socket path nor IP:PORT; e.g. \"/run/haproxy/keyward-api.sock\" (the `stats socket` of haproxy.cfg)"
                ),
            )
        })
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        self.api_addr()?;
        if self.check_interval < Duration::from_millis(100)
            || self.check_interval > Duration::from_secs(60)
        {
            return Err(invalid(
                "tunnels.check_interval",
                "must be between \"100ms\" and \"1m\" (default \"1s\"): an expired session's tunnel lives this much longer",
            ));
        }
        if !(1..=10_000_000).contains(&self.max_tracked) {
            return Err(invalid(
                "tunnels.max_tracked",
                "must be between 1 and 10000000 (default 100000)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(api: &str) -> TunnelsConfig {
        TunnelsConfig {
            haproxy_api: api.into(),
            ..TunnelsConfig::default()
        }
    }

    #[test]
    fn api_addresses_are_paths_or_ip_ports() {
        assert_eq!(
            with("/run/haproxy/api.sock").api_addr().unwrap(),
            ApiAddr::Unix("/run/haproxy/api.sock".into())
        );
        assert_eq!(
            with("unix@/tmp/a.sock").api_addr().unwrap(),
            ApiAddr::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            with("127.0.0.1:9182").api_addr().unwrap(),
            ApiAddr::Tcp("127.0.0.1:9182".parse().unwrap())
        );
        assert_eq!(
            with("ipv6@[::1]:9182").api_addr().unwrap(),
            ApiAddr::Tcp("[::1]:9182".parse().unwrap())
        );
        for bad in ["", "haproxy.sock", "localhost:9182", "127.0.0.1"] {
            let err = with(bad).validate().unwrap_err().to_string();
            assert!(err.contains("tunnels.haproxy_api"), "{bad}: {err}");
        }
        // Off, the address is not looked at.
        let off = TunnelsConfig {
            enabled: false,
            ..with("")
        };
        assert!(off.validate().is_ok());
    }

    #[test]
    fn intervals_and_bounds_are_checked() {
        let mut c = TunnelsConfig {
            check_interval: Duration::from_millis(10),
            ..TunnelsConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("check_interval")
        );
        c.check_interval = Duration::from_secs(1);
        c.max_tracked = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_tracked")
        );
        c.max_tracked = 10;
        assert!(c.validate().is_ok());
    }
}
