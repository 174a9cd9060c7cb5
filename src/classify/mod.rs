//! Stage 2: classify. What does this request carry that routing needs?
//!
//! Reads only the request head: the `Mcp-Session-Id` header (Streamable HTTP)
//! or a `sessionId` / `session_id` query parameter (legacy HTTP+SSE POSTs),
//! found as servers find them (`query`), and the protocol era. It never
//! reads the body and never decides where a request goes; that is
//! `affinity`'s job. A session reference that servers could read differently
//! from Tether (two of them, or one spelled so that a server decodes it to
//! another parameter) is refused here, so no raw session id ever reaches a
//! backend unchecked.

pub mod query;

use std::ops::Range;

use crate::http1::head::{FieldKind, Fields};
pub use query::{form_decode, Ambiguous, LEGACY_PARAMS};

/// The first protocol revision without sessions, where closing a response
/// stream cancels its request.
pub const MODERN_REVISION: &[u8] = b"2026-07-28";

/// Where a request carries its session reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carrier {
    /// The `Mcp-Session-Id` header.
    Header,
    /// A legacy query parameter; `value` is the byte range of its value in
    /// the request target (origin form).
    Query { value: Range<usize> },
}

/// A session reference as the client sent it (normally a Tether token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    token: Token,
    pub carrier: Carrier,
}

/// Where the reference's text is: in the head (a header value, read where
/// it arrived), or decoded from a query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    InHead(Range<usize>),
    Decoded(String),
}

impl SessionRef {
    /// The reference's text; `buf` is the buffer its head was parsed from.
    /// A header value that is not UTF-8 reads as empty: it cannot be a
    /// token either way.
    /// The reference's bytes as they arrived (for handing them back).
    pub fn token_bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match &self.token {
            Token::InHead(range) => buf.get(range.clone()).unwrap_or_default(),
            Token::Decoded(token) => token.as_bytes(),
        }
    }

    pub fn token<'a>(&'a self, buf: &'a [u8]) -> &'a str {
        match &self.token {
            Token::InHead(range) => buf
                .get(range.clone())
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or_default(),
            Token::Decoded(token) => token,
        }
    }
}

/// Finds the session reference of a request, if it has one. `target` is the
/// request target in origin form.
///
/// A header that is not valid visible ASCII is still returned: it cannot be a
/// token, so it will fail to open and earn a 404, which is what a server
/// would answer for an unknown session. Two `Mcp-Session-Id` fields,
/// the header together with a query parameter, or an ambiguous query are
/// refused.
pub fn session_ref(fields: &Fields, target: &str) -> Result<Option<SessionRef>, Ambiguous> {
    let in_query = match query(target) {
        Some((start, q)) => query::legacy_param(q)?.map(|r| start + r.start..start + r.end),
        None => None,
    };
    match (fields.count(FieldKind::SessionId), in_query) {
        (0, None) => Ok(None),
        (0, Some(value)) => {
            let decoded = form_decode(target[value.clone()].as_bytes());
            Ok(Some(SessionRef {
                token: Token::Decoded(String::from_utf8_lossy(&decoded).into_owned()),
                carrier: Carrier::Query { value },
            }))
        }
        (1, None) => {
            let field = fields.list.iter().find(|f| f.kind == FieldKind::SessionId);
            Ok(Some(SessionRef {
                token: Token::InHead(field.map_or(0..0, |f| f.value.clone())),
                carrier: Carrier::Header,
            }))
        }
        _ => Err(Ambiguous),
    }
}

/// The query of a request target (after `?`) and where it starts. Request
/// heads with a fragment are refused before this point.
pub fn query(target: &str) -> Option<(usize, &str)> {
    let at = target.find('?')? + 1;
    Some((at, &target[at..]))
}

/// Whether a request belongs to the 2026-07-28 revision or later: its
/// `MCP-Protocol-Version` is a date at or after 2026-07-28, or it names its
/// method in `Mcp-Method` and gives no version.
///
/// A request that carries `Mcp-Method` *and* an older version is of the
/// older world: a dual-era server reads the version (and with it the
/// session id), so Tether must too; otherwise a raw session id could reach a
/// server past the token check with a header added. A route that matches on
/// `Mcp-*` headers refuses such a request (`proxy`).
pub fn is_modern(buf: &[u8], fields: &Fields) -> bool {
    match fields
        .get(buf, FieldKind::ProtocolVersion)
        .map(<[u8]>::trim_ascii)
    {
        Some(v) => is_date(v) && v >= MODERN_REVISION,
        None => fields.get(buf, FieldKind::McpMethod).is_some(),
    }
}

/// `YYYY-MM-DD`, the form of every protocol revision.
fn is_date(v: &[u8]) -> bool {
    v.len() == 10
        && v.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
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
    use crate::http1::head::RequestHead;

    /// The reference found in a request for `uri`, as (token text, carrier).
    fn find(uri: &str, session: Option<&str>) -> Result<Option<(String, Carrier)>, Ambiguous> {
        let head = match session {
            Some(s) => format!("POST {uri} HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: {s}\r\n\r\n"),
            None => format!("POST {uri} HTTP/1.1\r\nHost: x\r\n\r\n"),
        };
        let parsed = RequestHead::parse(head.as_bytes(), 1 << 16)
            .unwrap()
            .unwrap();
        let found = session_ref(&parsed.fields, uri)?;
        Ok(found.map(|r| (r.token(head.as_bytes()).to_owned(), r.carrier)))
    }

    #[test]
    fn header_is_the_carrier() {
        let (token, carrier) = find("/mcp", Some("t1.abc")).unwrap().unwrap();
        assert_eq!(token, "t1.abc");
        assert_eq!(carrier, Carrier::Header);
    }

    #[test]
    fn legacy_params_are_found_with_their_range_in_the_target() {
        for (uri, want) in [
            ("/messages?sessionId=t1.x", "t1.x"),
            ("/messages/?session_id=t1.y&z=1", "t1.y"),
            ("/m?a=1&b&sessionId=t1.z", "t1.z"),
            ("/m?sessionId=", ""),
            ("/m?session%5Fid=t1.w", "t1.w"),
        ] {
            let (token, carrier) = find(uri, None).unwrap().unwrap();
            assert_eq!(token, want, "{uri}");
            let Carrier::Query { value } = carrier else {
                panic!("not a query carrier")
            };
            assert_eq!(&uri[value], want);
        }
    }

    #[test]
    fn values_are_form_decoded() {
        assert_eq!(
            find("/m?sessionId=t1%2Eabc", None).unwrap().unwrap().0,
            "t1.abc"
        );
        assert_eq!(find("/m?sessionId=a+b", None).unwrap().unwrap().0, "a b");
    }

    #[test]
    fn two_references_are_ambiguous() {
        assert_eq!(find("/m?sessionId=t1.a", Some("t1.b")), Err(Ambiguous));
        assert_eq!(find("/m?sessionId=a&sessionId=b", None), Err(Ambiguous));
        let head =
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: a\r\nmcp-session-id: b\r\n\r\n";
        let parsed = RequestHead::parse(head, 1 << 16).unwrap().unwrap();
        assert_eq!(session_ref(&parsed.fields, "/mcp"), Err(Ambiguous));
    }

    #[test]
    fn no_reference_is_none() {
        for uri in [
            "/mcp",
            "/m?sessionid=x",
            "/authorize?redirect_uri=http://h/cb",
        ] {
            assert_eq!(find(uri, None), Ok(None), "{uri}");
        }
        assert_eq!(query("/m?a=1"), Some((3, "a=1")));
        assert_eq!(query("/m"), None);
    }

    #[test]
    fn the_era_follows_the_headers() {
        for (fields, modern) in [
            ("", false),
            ("Mcp-Method: tools/call\r\n", true),
            ("MCP-Protocol-Version: 2026-07-28\r\n", true),
            ("MCP-Protocol-Version: 2027-01-01\r\n", true),
            ("MCP-Protocol-Version: 2025-11-25\r\n", false),
            ("MCP-Protocol-Version: draft\r\n", false),
            ("MCP-Protocol-Version: 9\r\n", false),
            (
                "Mcp-Method: tools/call\r\nMCP-Protocol-Version: 2026-07-28\r\n",
                true,
            ),
            (
                "Mcp-Method: tools/call\r\nMCP-Protocol-Version: 2025-11-25\r\n",
                false,
            ),
        ] {
            let head = format!("POST /mcp HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
            let parsed = RequestHead::parse(head.as_bytes(), 1 << 16)
                .unwrap()
                .unwrap();
            assert_eq!(
                is_modern(head.as_bytes(), &parsed.fields),
                modern,
                "{fields}"
            );
        }
    }
}
