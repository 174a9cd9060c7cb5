//! The legacy transport's session parameter in a query string, found the way
//! servers find it.
//!
//! A server reads `sessionId` (TypeScript SDK, Express) or `session_id`
//! (Python SDK, Starlette) from its decoded query: names and values are
//! form-decoded (`%5F` is `_`, `+` is a space), Starlette keeps the *last* of
//! two equal names, Express's `qs` turns `sessionId[]=x` into `["x"]`, which
//! JavaScript looks up as `"x"`, and older parsers also split on `;`. If
//! Tether checked one occurrence and the server read another, a raw session
//! id could reach a backend unchecked. So every parameter whose decoded name
//! is a session name (with or without a `[...]` suffix, in `&`- or
//! `;`-separated parts) counts, and only a query with exactly one, written
//! plainly as `name=value`, carries a session; any other count of them is
//! ambiguous and answered like an unknown session.

use std::ops::Range;

/// Query parameter names the SDKs use for the legacy transport's session id:
/// TypeScript `sessionId`, Python `session_id`.
pub const LEGACY_PARAMS: [&[u8]; 2] = [b"sessionId", b"session_id"];

/// More than one session parameter, or one written in a way servers may
/// read differently from Tether.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// The byte range (in `query`) of the value of the one session parameter,
/// if there is exactly one and it is written plainly.
pub fn legacy_param(query: &str) -> Result<Option<Range<usize>>, Ambiguous> {
    let mut found = None;
    let mut start = 0;
    for pair in query.split('&') {
        let end = start + pair.len();
        let at = start;
        start = end + 1;
        let (name, has_value) = match pair.split_once('=') {
            Some((name, _)) => (name, true),
            None => (pair, false),
        };
        let decoded = form_decode(name.as_bytes());
        if is_session_name(&decoded) {
            let plain = has_value && !pair.contains(';') && LEGACY_PARAMS.contains(&&decoded[..]);
            if found.is_some() || !plain {
                return Err(Ambiguous);
            }
            found = Some(at + name.len() + 1..end);
        } else if pair.contains(';') && pair.split(';').any(names_session) {
            return Err(Ambiguous);
        }
    }
    Ok(found)
}

/// Whether a `;`-separated part of a pair names a session parameter.
fn names_session(part: &str) -> bool {
    let name = part.split_once('=').map_or(part, |(name, _)| name);
    is_session_name(&form_decode(name.as_bytes()))
}

/// A decoded name that is a session name, bare or in any bracket group
/// (`qs` reads `sessionId[]`, `sessionId[0]` and `[sessionId]` as it).
fn is_session_name(decoded: &[u8]) -> bool {
    decoded
        .split(|&b| b == b'[' || b == b']')
        .any(|part| LEGACY_PARAMS.contains(&part))
}

/// `application/x-www-form-urlencoded` decoding as servers do it: `+` is a
/// space, `%XX` a byte, and a `%` not followed by two hex digits stays as it is.
pub fn form_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let digit = |at: usize| raw.get(at).copied().and_then(hex);
        match (raw[i], digit(i + 1), digit(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 2;
            }
            (b'+', _, _) => out.push(b' '),
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(query: &str) -> Result<Option<&str>, Ambiguous> {
        legacy_param(query).map(|r| r.map(|r| &query[r]))
    }

    #[test]
    fn one_plain_parameter_is_the_session() {
        for (q, want) in [
            ("sessionId=t1.x", "t1.x"),
            ("session_id=t1.y&z=1", "t1.y"),
            ("a=1&b&sessionId=t1.z", "t1.z"),
            ("sessionId=", ""),
            ("session%5Fid=t1.a", "t1.a"),
            ("sessionI%64=t1.b", "t1.b"),
            ("%73ession_id=t1.c", "t1.c"),
            ("x=sessionId%3Dq&sessionId=t1.d", "t1.d"),
        ] {
            assert_eq!(value(q), Ok(Some(want)), "{q}");
        }
    }

    #[test]
    fn other_names_are_not_sessions() {
        for q in [
            "",
            "sessionid=x",
            "xsessionId=1",
            "session+id=x",
            "session%20id=x",
            "sessionId%00=x",
            "SESSION_ID=x",
            "a=sessionId",
            "sessionId_=x",
        ] {
            assert_eq!(value(q), Ok(None), "{q}");
        }
    }

    #[test]
    fn ambiguous_session_parameters_are_refused() {
        for q in [
            "session_id=t1.a&session_id=RAW",
            "sessionId=t1.a&session_id=RAW",
            "session_id=t1.a&session%5Fid=RAW",
            "sessionId[]=RAW",
            "sessionId%5B%5D=RAW",
            "sessionId[0]=RAW&x=1",
            "[sessionId]=RAW",
            "%5BsessionId%5D=RAW",
            "a[session_id]=RAW",
            "sessionId]=RAW",
            "session_id",
            "session_id&session_id=t1.a",
            "x=1;session_id=RAW",
            "session_id=t1.a;x=1",
            "a=1&b=2;sessionId=RAW&c",
        ] {
            assert_eq!(value(q), Err(Ambiguous), "{q}");
        }
    }

    #[test]
    fn form_decoding_matches_servers() {
        for (raw, want) in [
            ("a+b", "a b"),
            ("%41%62", "Ab"),
            ("%4", "%4"),
            ("%zz", "%zz"),
            ("100%", "100%"),
            ("%%41", "%A"),
            ("%2b", "+"),
        ] {
            assert_eq!(form_decode(raw.as_bytes()), want.as_bytes(), "{raw}");
        }
    }
}
