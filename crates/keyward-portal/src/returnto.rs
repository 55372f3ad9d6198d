//! Where a sign-in may send the browser back to: a path on the same host, or an
//! http(s) URL on one of the configured protected hosts. Anything else becomes `/`,
//! so the portal is never an open redirect.

use keyward_gate::MAX_RETURN_URL;
use url::Url;

/// The hosts sign-ins may return to.
#[derive(Debug, Clone, Default)]
pub struct ReturnHosts {
    /// `host` (any port), `host:port` (that port), `*.domain` (any subdomain).
    entries: Vec<String>,
}

impl ReturnHosts {
    pub fn new(entries: impl IntoIterator<Item = String>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|e| e.to_ascii_lowercase())
                .collect(),
        }
    }

    fn allows(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|entry| {
            if let Some(domain) = entry.strip_prefix("*.") {
                return host.ends_with(&format!(".{domain}"));
            }
            match entry.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || entry.starts_with('[') => {
                    h == host && p.parse::<u16>().ok() == port
                }
                _ => *entry == host,
            }
        })
    }

    /// The validated return target for `rd`, or `/`.
    pub fn check(&self, rd: Option<&str>) -> String {
        rd.and_then(|rd| self.validate(rd))
            .unwrap_or_else(|| "/".into())
    }

    fn validate(&self, rd: &str) -> Option<String> {
        if rd.is_empty()
            || rd.len() > MAX_RETURN_URL
            || rd.chars().any(|c| c.is_control() || c == '\\')
        {
            return None;
        }
        if rd.starts_with('/') {
            // `//evil` and `/\evil` are other hosts to a browser.
            return (!rd.starts_with("//")).then(|| rd.to_owned());
        }
        let url = Url::parse(rd).ok()?;
        let allowed = matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && url
                .host_str()
                .is_some_and(|h| self.allows(h, url.port_or_known_default()));
        allowed.then(|| url.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> ReturnHosts {
        ReturnHosts::new([
            "localhost:8080".into(),
            "*.example.com".into(),
            "grafana.internal".into(),
        ])
    }

    #[test]
    fn protected_hosts_and_local_paths_pass() {
        let h = hosts();
        for ok in [
            "/reports?q=1",
            "http://localhost:8080/x",
            "https://app.example.com/a/b?c#d",
            "https://grafana.internal:3000/",
            "http://grafana.internal/",
        ] {
            assert_eq!(
                h.check(Some(ok)).trim_end_matches('/'),
                ok.trim_end_matches('/'),
                "{ok}"
            );
        }
    }

    #[test]
    fn everything_else_goes_home() {
        let h = hosts();
        for bad in [
            "//evil.test/",
            "/\\evil.test",
            "https://evil.test/",
            "https://example.com/",
            "https://app.example.com.evil.test/",
            "http://localhost:9999/",
            "javascript:alert(1)",
            "https://user@app.example.com/",
            "data:text/html,x",
            "http://localhost:8080/\nx",
            "",
        ] {
            assert_eq!(h.check(Some(bad)), "/", "{bad}");
        }
        assert_eq!(h.check(None), "/");
    }

    proptest::proptest! {
        /// Whatever an attacker puts in `rd`, the browser goes to a local path or to an
        /// allowed host: never elsewhere.
        #[test]
        fn never_an_open_redirect(rd in "\\PC{0,60}", prefix in proptest::sample::select(vec![
            "", "/", "//", "http://", "https://", "http://localhost:8080", "https://app.example.com",
            "https://evil.test", "http:/\\", "HTTPS://APP.EXAMPLE.COM", "http://localhost:8080@",
        ])) {
            let out = hosts().check(Some(&format!("{prefix}{rd}")));
            if out.starts_with('/') {
                proptest::prop_assert!(!out.starts_with("//") && !out.contains('\\'), "{}", out);
            } else {
                let url = Url::parse(&out).unwrap();
                let host = url.host_str().unwrap_or("").to_owned();
                proptest::prop_assert!(
                    host == "localhost" && url.port() == Some(8080)
                        || host.ends_with(".example.com")
                        || host == "grafana.internal",
                    "{} -> {}", rd, out
                );
                proptest::prop_assert!(url.username().is_empty() && url.password().is_none());
            }
        }
    }
}
