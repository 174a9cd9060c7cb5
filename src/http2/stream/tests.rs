//! The head a stream's request is written as, read as it was written
//! (`RequestHead::from_written`), against the same bytes parsed
//! (`RequestHead::parse_written`, the HTTP/1.1 reading): the same head, or
//! the same refusal, for generated requests of every framing, with fields
//! an HTTP/2 client may send (whitespace around values, obs-text, cookies,
//! connection-specific ones the bridge drops), near the size and field limits.

use proptest::prelude::*;

use super::{request_head, BodyFraming, End};
use crate::http1::head::{HeadError, RequestHead, TargetForm};

/// What a head says, as bytes (ranges into different parses of the same
/// bytes may differ where a value is empty).
fn view(buf: &[u8], head: &Result<Option<RequestHead>, HeadError>) -> String {
    let head = match head {
        Ok(Some(h)) => h,
        other => return format!("{:?}", other.as_ref().map(|_| ())),
    };
    let text = |r: &std::ops::Range<usize>| String::from_utf8_lossy(&buf[r.clone()]).into_owned();
    let form = match &head.form {
        TargetForm::Absolute { authority, path } => {
            format!("absolute {} {}", text(authority), text(path))
        }
        other => format!("{other:?}"),
    };
    let fields: Vec<String> = head
        .fields
        .list
        .iter()
        .map(|f| format!("{}={:?}:{:?}", text(&f.name), text(&f.value), f.kind))
        .collect();
    format!(
        "{} {} {form} 1.{} len={} {:?} keep_alive={} continue={} {fields:?}",
        text(&head.method),
        text(&head.target),
        head.minor,
        head.len,
        head.framing,
        head.keep_alive,
        head.expect_continue,
    )
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("content-type".to_string()),
        Just("accept".to_string()),
        Just("mcp-session-id".to_string()),
        Just("mcp-protocol-version".to_string()),
        Just("mcp-method".to_string()),
        Just("cookie".to_string()),
        Just("content-length".to_string()),
        Just("transfer-encoding".to_string()),
        Just("connection".to_string()),
        Just("keep-alive".to_string()),
        Just("te".to_string()),
        Just("expect".to_string()),
        Just("host".to_string()),
        Just("x_forwarded_for".to_string()),
        Just("mcp_session_id".to_string()),
        "[a-z][a-z0-9!#$%&'*+.^_`|~-]{0,12}",
        // What the `h2` crate's HPACK decoder takes and HTTP/1.1 does not.
        "[a-z]{0,3}\"[a-z]{0,3}",
    ]
}

/// A value the `http` crate accepts: visible ASCII, SP, HTAB, obs-text.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"application/json".to_vec()),
        Just(b" padded \t".to_vec()),
        Just(b"100-continue".to_vec()),
        Just(b"chunked".to_vec()),
        Just(b"close, x-other".to_vec()),
        Just(b"12".to_vec()),
        Just(Vec::new()),
        Just(b" \t ".to_vec()),
        proptest::collection::vec(
            prop_oneof![Just(b' '), Just(b'\t'), 0x21u8..0x7f, 0x80u8..=0xff],
            0..24
        ),
    ]
}

fn framing() -> impl Strategy<Value = BodyFraming> {
    prop_oneof![
        Just(BodyFraming::None),
        Just(BodyFraming::Declared),
        (0usize..100_000).prop_map(BodyFraming::Length),
        Just(BodyFraming::Chunked),
    ]
}

fn parts() -> impl Strategy<Value = http::request::Parts> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("DELETE"),
        Just("HEAD"),
        Just("OPTIONS"),
        Just("PATCH"),
        Just("X-CUSTOM")
    ];
    let path = prop_oneof![
        Just("/mcp".to_string()),
        Just("/messages?session_id=abc".to_string()),
        Just("/authorize?redirect_uri=http://h/cb".to_string()),
        Just("*".to_string()),
        "/[a-zA-Z0-9._~!$&'()*+,;=:@%/?-]{0,30}",
    ];
    let authority = proptest::option::of(prop_oneof![
        Just("127.0.0.1:8080".to_string()),
        Just("example.com".to_string()),
        Just("[::1]:443".to_string()),
        // Odd ones the `http` crate takes as an authority.
        Just("u:p@example.com".to_string()),
        Just("example.com:".to_string()),
        Just("EXAMPLE.com:99999".to_string()),
        "[a-z0-9.%!$&'()*+,;=~-]{1,12}(:[0-9]{0,6})?",
    ]);
    let fields = proptest::collection::vec((name(), value()), 0..8);
    let many = 0usize..3;
    (method, path, authority, fields, many).prop_filter_map(
        "not a request the http crate builds",
        |(method, path, authority, fields, many)| {
            let uri = match authority {
                Some(a) => format!("https://{a}{}", if path == "*" { "/" } else { &path }),
                None => path,
            };
            let mut b = http::Request::builder().method(method).uri(uri);
            for (n, v) in &fields {
                // As the `h2` crate decodes a name (`from_lowercase`: more
                // than `from_bytes` takes).
                let n = http::HeaderName::from_lowercase(n.as_bytes()).ok()?;
                b = b.header(n, http::HeaderValue::from_bytes(v).ok()?);
            }
            // Near the field limit (128 of the client's), now and then over it.
            for i in 0..[0, 126, 130][many] {
                b = b.header(format!("x-f{i}"), "v");
            }
            Some(b.body(()).ok()?.into_parts().0)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_written_head_reads_as_its_bytes_parse(
        parts in parts(),
        framing in framing(),
        limit in prop_oneof![Just(64 * 1024), 40usize..400],
    ) {
        let mut bytes = Vec::new();
        let (added, written) = match request_head(&mut bytes, &parts, framing) {
            Ok(w) => w,
            Err(End::Refused(_)) => return Ok(()),
            Err(End::Reset) => unreachable!("writing a head never resets"),
        };
        let len = bytes.len();
        // A body's first bytes may follow the head in the same buffer.
        bytes.extend_from_slice(b"{\"jsonrpc\":\"2.0\"}");
        let parsed = RequestHead::parse_written(&bytes, limit, added);
        let read = RequestHead::from_written(&bytes, len, written, limit, added).map(Some);
        prop_assert_eq!(view(&bytes, &read), view(&bytes, &parsed), "head:\n{}", String::from_utf8_lossy(&bytes[..len]));
    }
}
