//! Header handling across the proxy hop (RFC 9110 section 7.6).
//!
//! Hop-by-hop fields are dropped both ways; end-to-end fields, `Authorization`
//! and every MCP header (`Mcp-Session-Id` aside, which affinity restores) pass
//! untouched.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that describe one connection, never the message (RFC 9110 7.6.1),
/// plus the pre-standard `Keep-Alive` and `Proxy-Connection`.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes the hop-by-hop fields, including those the `Connection` field names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Prepares a client request's fields for the upstream hop.
pub fn to_upstream(headers: &mut HeaderMap, peer: IpAddr, preserve_host: bool) {
    strip_hop_by_hop(headers);
    // Tether already holds the whole body: `100-continue` was settled on the client's hop.
    headers.remove(header::EXPECT);
    if !preserve_host {
        // The upstream client then writes the backend's authority.
        headers.remove(header::HOST);
    }
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::to_str) {
        Some(Ok(prior)) if !prior.trim().is_empty() => format!("{prior}, {peer}"),
        _ => peer.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    // Tether is the edge that saw the client's scheme; a client's claim is replaced.
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
}

/// Whether a response is an event stream (never buffered, never compressed).
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("authorization", "Bearer abc"),
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-method", "tools/call"),
        ]);
        to_upstream(&mut h, "10.0.0.7".parse().unwrap(), true);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        for gone in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "transfer-encoding",
            "te",
            "upgrade",
        ] {
            assert!(!names.contains(&gone), "{gone} kept");
        }
        assert_eq!(h["authorization"], "Bearer abc");
        assert_eq!(h["mcp-protocol-version"], "2025-06-18");
        assert_eq!(h["mcp-method"], "tools/call");
    }

    #[test]
    fn forwarded_fields_append_and_replace() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        to_upstream(&mut h, "127.0.0.1".parse().unwrap(), true);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        to_upstream(&mut h, "::1".parse().unwrap(), true);
        assert_eq!(h["x-forwarded-for"], "::1");
    }

    #[test]
    fn host_is_kept_unless_configured_otherwise() {
        let mut h = map(&[("host", "lb.example:8080")]);
        to_upstream(&mut h, "127.0.0.1".parse().unwrap(), true);
        assert_eq!(h["host"], "lb.example:8080");
        to_upstream(&mut h, "127.0.0.1".parse().unwrap(), false);
        assert!(h.get("host").is_none());
    }

    #[test]
    fn event_stream_detection() {
        assert!(is_event_stream(&map(&[(
            "content-type",
            "text/event-stream"
        )])));
        assert!(is_event_stream(&map(&[(
            "content-type",
            "Text/Event-Stream; charset=utf-8"
        )])));
        assert!(!is_event_stream(&map(&[(
            "content-type",
            "application/json"
        )])));
        assert!(!is_event_stream(&HeaderMap::new()));
    }
}
