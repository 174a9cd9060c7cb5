//! `allowed_origins`: the 2025-11-25 rule against DNS rebinding, at the edge.
//!
//! A request whose `Origin` is present and not listed gets 403 before any
//! backend sees it; one without `Origin` (every non-browser client) passes.
//! For servers that do not check it themselves.

use crate::http1::head::Fields;

/// The origins a browser page may call from (empty: no check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(Vec<String>);

impl Origins {
    /// Checks each entry: `scheme://host[:port]` (what browsers send), or
    /// `null`. Kept lowercase: schemes and hosts are case-insensitive.
    pub fn parse(list: &[String]) -> Result<Origins, String> {
        let mut out = Vec::new();
        for entry in list {
            let lower = entry.to_ascii_lowercase();
            if lower != "null" && !is_origin(&lower) {
                return Err(format!(
                    "{entry:?} is not an origin (scheme://host[:port], no path, or \"null\")"
                ));
            }
            out.push(lower);
        }
        Ok(Origins(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn list(&self) -> &[String] {
        &self.0
    }

    /// Whether every `Origin` field of the request is allowed (none is fine).
    pub fn allows(&self, buf: &[u8], fields: &Fields) -> bool {
        fields
            .list
            .iter()
            .filter(|f| buf[f.name.clone()].eq_ignore_ascii_case(b"origin"))
            .all(|f| {
                let value = buf[f.value.clone()].trim_ascii();
                self.0
                    .iter()
                    .any(|o| o.as_bytes().eq_ignore_ascii_case(value))
            })
    }
}

impl serde::Serialize for Origins {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// `scheme://host[:port]`: a scheme, then a host with no path, query,
/// userinfo or fragment, then an optional numeric port.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: `[...]`, then maybe `:port`.
        Some(v6) => match v6.split_once(']') {
            Some((addr, "")) => (addr, None),
            Some((addr, after)) => match after.strip_prefix(':') {
                Some(port) => (addr, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let host_ok = !host.is_empty() && !host.bytes().any(|b| b"/?#@ \\[]".contains(&b));
    let port_ok = port.map_or(true, |p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
    });
    scheme_ok && host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::RequestHead;

    fn allows(origins: &Origins, headers: &str) -> bool {
        let head = format!("POST /mcp HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        let parsed = RequestHead::parse(head.as_bytes(), 1 << 16)
            .unwrap()
            .unwrap();
        origins.allows(head.as_bytes(), &parsed.fields)
    }

    #[test]
    fn listed_origins_pass_others_do_not() {
        let o = Origins::parse(&[
            "https://App.example.com".into(),
            "http://localhost:3000".into(),
        ])
        .unwrap();
        assert!(allows(&o, ""), "no Origin: not a browser");
        assert!(allows(&o, "Origin: https://app.example.com\r\n"));
        assert!(allows(&o, "origin: HTTPS://APP.EXAMPLE.COM\r\n"));
        assert!(allows(&o, "Origin: http://localhost:3000\r\n"));
        assert!(!allows(&o, "Origin: http://localhost:3001\r\n"));
        assert!(!allows(&o, "Origin: https://evil.example.com\r\n"));
        assert!(!allows(&o, "Origin: https://app.example.com.evil.com\r\n"));
        assert!(!allows(&o, "Origin: null\r\n"));
        assert!(!allows(
            &o,
            "Origin: https://app.example.com\r\nOrigin: https://evil.example.com\r\n"
        ));
        let with_null = Origins::parse(&["null".into()]).unwrap();
        assert!(allows(&with_null, "Origin: null\r\n"));
    }

    #[test]
    fn entries_must_be_origins() {
        for good in [
            "https://a.b",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
            "app://x",
            "null",
        ] {
            assert!(Origins::parse(&[good.into()]).is_ok(), "{good}");
        }
        for bad in [
            "a.b",
            "https://a.b/",
            "https://a.b/path",
            "https://",
            "https://a.b:x",
            "*",
            "https://u@a.b",
        ] {
            assert!(Origins::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
