//! The admin listener's guard against DNS rebinding: a request a browser
//! sent is answered only when its `Host` is one the listener is known by.
//!
//! A page of a hostile name whose DNS is rebound to the admin address has
//! the listener's origin in the browser's eyes: without this check its
//! script could read `/status`, `/config` and `/backends`, and an operator
//! led to `http://evil.example:9090/` would see the genuine page and might
//! give it the token. A browser always sends the name it resolved as
//! `Host`, so a name the operator did not list is refused. Requests no
//! browser sent (Prometheus scraping by service name, kubelet probes by pod
//! IP, curl) are not checked: they are not a page's.

use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use serde_json::json;

use super::Reply;

/// Whether a browser sent the request: it carries `Origin`, a
/// `Sec-Fetch-Site` (even `none`: an address typed into the bar is how an
/// operator reaches a rebound page), `Sec-Fetch-Mode` or `Sec-Fetch-Dest`,
/// `Upgrade-Insecure-Requests`, `Accept-Language`, or a `User-Agent` that
/// begins `Mozilla/`.
///
/// The fetch metadata (`Sec-Fetch-*`) alone is not enough: browsers send it
/// only to an `https` or loopback origin, and a same-origin `GET` from a
/// script carries no `Origin`, so a rebound `http://evil.example/` page
/// sends neither. Every browser sends `Accept-Language` on every request
/// and a page's script cannot remove it (only change its value), nor the
/// `User-Agent` in most browsers; Prometheus, kubelet probes, curl and
/// the usual HTTP libraries send neither.
pub(super) fn from_browser<'a>(field: impl Fn(&[u8]) -> Option<&'a [u8]>) -> bool {
    const SIGNS: [&[u8]; 6] = [
        b"origin",
        b"sec-fetch-site",
        b"sec-fetch-mode",
        b"sec-fetch-dest",
        b"upgrade-insecure-requests",
        b"accept-language",
    ];
    SIGNS.iter().any(|name| field(name).is_some())
        || field(b"user-agent").is_some_and(|ua| ua.trim_ascii().starts_with(b"Mozilla/"))
}

/// Whether a browser may be answered at `host` (the `Host` field): an IP
/// literal (`10.0.0.7`, `[::1]`, each with an optional port), `localhost`
/// (optional port), or a name in `allowed` (`admin.allowed_hosts`,
/// lower case: a bare name matches at any port, `name:port` at that port).
/// No `Host` at all is refused.
pub(super) fn allowed(host: Option<&[u8]>, allowed: &[String]) -> bool {
    let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    let Some((name, port)) = split(&host) else {
        return false;
    };
    if name.starts_with('[') {
        // `split` checked that the brackets hold an IPv6 address.
        return true;
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" {
        return true;
    }
    allowed.iter().any(|entry| match entry.split_once(':') {
        Some((n, p)) => n == name && port == Some(p),
        None => entry == name,
    })
}

/// The answer to a browser at a `Host` not `allowed`: 403, and a log line
/// at most once a second (a rebound page may ask in a loop).
pub(super) fn refused(host: Option<&[u8]>) -> Reply {
    static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
    let host = host.map(String::from_utf8_lossy).unwrap_or_default();
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_LOGGED.swap(second, Ordering::Relaxed) != second {
        tracing::info!(
            host = ?host,
            "admin request from a browser by a host name not in admin.allowed_hosts: 403"
        );
    }
    Reply::json(
        StatusCode::FORBIDDEN,
        &json!({
            "error": "a browser is answered here only at an IP address, localhost, or a name in \
                      admin.allowed_hosts (a guard against DNS rebinding)",
            "host": host,
        }),
    )
}

/// `name[:port]` or `[v6][:port]` into the name and the port, `None` when
/// it is neither (an empty name, a port that is not a number, brackets
/// around something that is not an IPv6 address).
fn split(host: &str) -> Option<(&str, Option<&str>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let close = rest.find(']')?;
        rest[..close].parse::<std::net::Ipv6Addr>().ok()?;
        let after = &rest[close + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (&host[..close + 2], port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port_ok = port.map_or(true, |p| p.parse::<u16>().is_ok() && !p.starts_with('+'));
    (!name.is_empty() && port_ok).then_some((name, port))
}

#[cfg(test)]
mod tests {
    use super::{allowed, from_browser};

    fn ok(host: &str, list: &[&str]) -> bool {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        allowed(Some(host.as_bytes()), &list)
    }

    #[test]
    fn ip_literals_and_localhost_are_answered_with_or_without_a_port() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:9090",
            "10.0.0.7:80",
            "[::1]",
            "[::1]:9090",
            "[fd00::7]:9090",
            "localhost",
            "LOCALHOST:9090",
            " localhost:9090 ",
        ] {
            assert!(ok(host, &[]), "{host}");
        }
    }

    #[test]
    fn names_are_answered_only_when_listed() {
        let list = ["tether-admin.internal", "ops.example:8443"];
        assert!(ok("tether-admin.internal", &list));
        assert!(
            ok("Tether-Admin.Internal:9090", &list),
            "any port, any case"
        );
        assert!(ok("ops.example:8443", &list));
        assert!(!ok("ops.example:9090", &list), "a listed port is that port");
        assert!(!ok("ops.example", &list));
        for host in [
            "evil.example",
            "evil.example:9090",
            "tether-admin.internal.evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "sub.tether-admin.internal",
        ] {
            assert!(!ok(host, &list), "{host}");
            assert!(!ok(host, &[]), "{host}");
        }
    }

    #[test]
    fn malformed_or_missing_hosts_are_refused() {
        for host in [
            "",
            ":9090",
            "127.0.0.1:",
            "127.0.0.1:http",
            "127.0.0.1:99999",
            "127.0.0.1:+80",
            "[::1",
            "[evil.example]:9090",
            "[::1]9090",
            "::1",
            "256.0.0.1",
            "localhost:9090:1",
        ] {
            assert!(!ok(host, &["evil.example"]), "{host:?}");
        }
        assert!(!allowed(None, &[]));
        assert!(!allowed(Some(b"\xff\xfe"), &[]));
    }

    #[test]
    fn a_browser_is_known_by_any_of_its_headers() {
        let with = |present: &[(&str, &str)]| {
            from_browser(|name: &[u8]| {
                present
                    .iter()
                    .find(|(n, _)| n.as_bytes() == name)
                    .map(|(_, v)| v.as_bytes())
            })
        };
        assert!(!with(&[]));
        // Prometheus, a kubelet probe, curl, a script: no browser.
        for ua in [
            "Prometheus/2.53.0",
            "kube-probe/1.31",
            "curl/8.5.0",
            "python-requests/2.32",
        ] {
            let h = [("user-agent", ua), ("accept", "*/*"), ("host", "x")];
            assert!(!with(&h), "{ua}");
        }
        let chromium =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/148.0 Safari/537.36";
        for h in [
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "none"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
            ("upgrade-insecure-requests", "1"),
            ("accept-language", "en-US,en;q=0.9"),
            ("accept-language", ""),
            ("user-agent", chromium),
        ] {
            assert!(with(&[h, ("user-agent", "curl/8.5.0")]), "{h:?}");
        }
    }
}
