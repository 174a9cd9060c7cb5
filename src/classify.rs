//! Stage 2: classify. What does this request carry that routing needs?
//!
//! Reads only the request head: the `Mcp-Session-Id` header (Streamable HTTP)
//! or a `sessionId` / `session_id` query parameter (legacy HTTP+SSE POSTs).
//! It never reads the body and never decides where a request goes; that is
//! `affinity`'s job.

use std::ops::Range;

use http::header::HeaderName;

/// The Streamable HTTP session header (header names are case-insensitive).
pub static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// Query parameter names the SDKs use for the legacy transport's session id:
/// TypeScript `sessionId`, Python `session_id`.
pub const LEGACY_PARAMS: [&str; 2] = ["sessionId", "session_id"];

/// Where a request carries its session reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carrier {
    /// The `Mcp-Session-Id` header.
    Header,
    /// A legacy query parameter; `value` is the byte range of its value in the query string.
    Query { value: Range<usize> },
}

/// A session reference as the client sent it (normally a Tether token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub token: String,
    pub carrier: Carrier,
}

/// Finds the session reference of a request, if it has one.
///
/// A header that is not valid visible ASCII is still returned (as lossy text):
/// it cannot be a token, so it will fail to open and earn a 404, which is what
/// a server would answer for an unknown session.
pub fn session_ref(header: Option<&[u8]>, target: &str) -> Option<SessionRef> {
    if let Some(value) = header {
        let token = String::from_utf8_lossy(value).into_owned();
        return Some(SessionRef {
            token,
            carrier: Carrier::Header,
        });
    }
    let query = query(target)?;
    let value = legacy_param(query)?;
    let raw = &query[value.clone()];
    let token = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    Some(SessionRef {
        token,
        carrier: Carrier::Query { value },
    })
}

/// The query of a request target (after `?`, before any `#`).
pub fn query(target: &str) -> Option<&str> {
    let (_, query) = target.split_once('?')?;
    Some(query.split_once('#').map_or(query, |(q, _)| q))
}

/// The origin form (`/path?query`) of a request target: an absolute-form
/// target (`http://host/path`, what a client configured for a forward proxy
/// sends) loses its scheme and authority.
pub fn origin_form(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((_, rest)) = target.split_once("://") else {
        return target.into();
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].into(),
        Some(i) => format!("/{}", &rest[i..]).into(),
        None => "/".into(),
    }
}

pub fn legacy_param(query: &str) -> Option<Range<usize>> {
    let mut start = 0;
    for pair in query.split('&') {
        let end = start + pair.len();
        if let Some((name, _)) = pair.split_once('=') {
            if LEGACY_PARAMS.contains(&name) {
                return Some(start + name.len() + 1..end);
            }
        }
        start = end + 1;
    }
    None
}

/// Whether an SSE response to this session-less request may be a legacy
/// transport's stream, whose first event names the session. Only a GET can
/// open one; a Streamable GET always carries its session header, so it never
/// reaches this question.
pub fn may_open_legacy_stream(method: &[u8]) -> bool {
    method == b"GET"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(uri: &str, session: Option<&str>) -> Option<SessionRef> {
        session_ref(session.map(str::as_bytes), uri)
    }

    #[test]
    fn header_wins_and_is_case_insensitive() {
        let r = find("/mcp?sessionId=q", Some("t1.abc")).unwrap();
        assert_eq!(r.token, "t1.abc");
        assert_eq!(r.carrier, Carrier::Header);
    }

    #[test]
    fn legacy_params_are_found_with_their_range() {
        for (uri, want) in [
            ("/messages?sessionId=t1.x", "t1.x"),
            ("/messages/?session_id=t1.y&z=1", "t1.y"),
            ("/m?a=1&b&sessionId=t1.z", "t1.z"),
            ("/m?sessionId=", ""),
        ] {
            let r = find(uri, None).unwrap();
            assert_eq!(r.token, want, "{uri}");
            let Carrier::Query { value } = r.carrier else {
                panic!("not a query carrier")
            };
            assert_eq!(&query(uri).unwrap()[value], want);
        }
    }

    #[test]
    fn other_params_are_not_sessions() {
        for uri in ["/mcp", "/m?sessionid=x", "/m?xsessionId=1", "/m?session_id"] {
            assert_eq!(find(uri, None), None, "{uri}");
        }
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        let r = find("/m?sessionId=t1%2Eabc", None).unwrap();
        assert_eq!(r.token, "t1.abc");
    }

    #[test]
    fn absolute_targets_become_origin_form() {
        for (target, want) in [
            ("/mcp?x=1", "/mcp?x=1"),
            (
                "http://lb:8080/messages/?sessionId=a",
                "/messages/?sessionId=a",
            ),
            ("http://lb", "/"),
            ("http://lb?x", "/?x"),
            ("*", "*"),
        ] {
            assert_eq!(origin_form(target), want, "{target}");
        }
        assert_eq!(query("/m?a=1#frag"), Some("a=1"));
        assert_eq!(query("/m"), None);
    }
}
