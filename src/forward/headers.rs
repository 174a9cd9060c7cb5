//! Heads across the proxy hop (RFC 9110 §7.6): the request head a backend
//! gets and the response head a client gets, written straight from the bytes
//! that arrived.
//!
//! Hop-by-hop fields (those of `http1::head::FieldKind::HopByHop`,
//! `Connection`, `Transfer-Encoding`) are dropped both ways and framing is
//! written afresh for each hop; end-to-end fields, `Authorization` and every
//! MCP header pass byte for byte, except `Mcp-Session-Id`, which affinity
//! swaps (server id in, token out). `Expect` is dropped: Tether answers it
//! itself and sends the body whole.

use std::io::Write as _;
use std::ops::Range;

use crate::http1::head::{Field, FieldKind, Framing, RequestHead, ResponseHead};

/// What changes in a request head on its way to a backend.
#[derive(Debug)]
pub struct ToUpstream<'a> {
    /// The request target to send (origin form, the server's id restored).
    pub target: &'a [u8],
    /// The value `Mcp-Session-Id` gets, when it carried a token; empty:
    /// the field is dropped.
    pub session_id: Option<&'a [u8]>,
    /// The value `Mcp-Name` gets, when it carried a sealed task id.
    pub mcp_name: Option<&'a [u8]>,
    /// The client's address, as text (formatted once per connection).
    pub peer: &'a str,
    /// The backend's `host:port`: the `Host` sent when the client's is not
    /// preserved, or when it sent none (HTTP/1.0).
    pub authority: &'a str,
    pub preserve_host: bool,
    /// The authority of an absolute-form target: it replaces the client's
    /// `Host` (RFC 9112 §3.2.2) when the client's host is preserved.
    pub host: Option<&'a [u8]>,
    /// The client reached Tether over TLS: `X-Forwarded-Proto: https`.
    pub tls: bool,
    /// Also write an RFC 7239 `Forwarded` field.
    pub forwarded: bool,
}

/// Writes the request head (and `body`) for a backend into `out`.
pub fn request(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    to: &ToUpstream<'_>,
    body: &[u8],
) {
    out.extend_from_slice(&buf[head.method.clone()]);
    out.push(b' ');
    out.extend_from_slice(to.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut session_written = false;
    let mut name_written = false;
    // A replaced Host is written below, like a missing one.
    let mut has_host = false;
    let keep_host = to.preserve_host && to.host.is_none();
    let mut lines = Lines::new(out, buf);
    for f in &head.fields.list {
        match f.kind {
            FieldKind::HopByHop
            | FieldKind::Connection
            | FieldKind::TransferEncoding
            | FieldKind::ContentLength
            | FieldKind::Expect
            | FieldKind::ForwardedProto => continue,
            FieldKind::Host if !keep_host => continue,
            FieldKind::ForwardedFor => continue, // written below, with the peer appended
            FieldKind::SessionId => match to.session_id {
                Some(_) if session_written => continue,
                Some(b"") => continue,
                Some(id) => {
                    session_written = true;
                    lines.write(&buf[f.name.clone()], id);
                    continue;
                }
                None => {}
            },
            FieldKind::McpName => match to.mcp_name {
                Some(_) if name_written => continue,
                Some(name) => {
                    name_written = true;
                    lines.write(&buf[f.name.clone()], name);
                    continue;
                }
                None => {}
            },
            FieldKind::Host => has_host = true,
            FieldKind::Other
            | FieldKind::ContentType
            | FieldKind::McpMethod
            | FieldKind::ProtocolVersion
            | FieldKind::Confusable => {}
        }
        lines.pass(f);
    }
    lines.finish();
    if !has_host {
        let host = match to.host {
            Some(host) if to.preserve_host => host,
            _ => to.authority.as_bytes(),
        };
        field(out, b"host", host);
    }
    forwarded_for(out, buf, head, to.peer);
    out.extend_from_slice(match to.tls {
        true => b"\r\nx-forwarded-proto: https\r\n",
        false => b"\r\nx-forwarded-proto: http\r\n",
    });
    if to.forwarded {
        // The host the client asked for: an absolute-form target's, or its
        // `Host` (whatever is sent on, with `preserve_host = false` too).
        let client_host = to.host.or_else(|| head.fields.get(buf, FieldKind::Host));
        forwarded(out, to, client_host);
    }
    let declared =
        head.framing != Framing::None || head.fields.get(buf, FieldKind::ContentLength).is_some();
    if declared || !body.is_empty() {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// `X-Forwarded-For: ` the client's chain, then `peer`, without the line's
/// end (the caller writes what follows).
#[inline]
pub fn forwarded_for(out: &mut Vec<u8>, buf: &[u8], head: &RequestHead, peer: &str) {
    out.extend_from_slice(b"x-forwarded-for: ");
    for f in head
        .fields
        .list
        .iter()
        .filter(|f| f.kind == FieldKind::ForwardedFor)
    {
        let prior = buf[f.value.clone()].trim_ascii();
        if !prior.is_empty() {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(peer.as_bytes());
}

/// `Forwarded: for=...;proto=...;host=...` (RFC 7239 §4), after the client's
/// own `Forwarded` lines, which pass unchanged: a list read in order. An
/// IPv6 address is quoted and bracketed; a host is quoted unless it is a
/// token (a `host:port` is not: the colon).
fn forwarded(out: &mut Vec<u8>, to: &ToUpstream<'_>, host: Option<&[u8]>) {
    out.extend_from_slice(b"forwarded: for=");
    if to.peer.contains(':') {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(to.peer.as_bytes());
        out.extend_from_slice(b"]\"");
    } else {
        out.extend_from_slice(to.peer.as_bytes());
    }
    out.extend_from_slice(if to.tls {
        b";proto=https"
    } else {
        b";proto=http"
    });
    // A host with a quote or a backslash in it (a client's invalid Host) is
    // left out rather than escaped: nothing downstream should trust it.
    if let Some(host) = host.filter(|h| {
        !h.is_empty()
            && h.iter()
                .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(host);
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downstream {
    /// No body (HEAD, 204, 304): the backend's `Content-Length`, if any, stays.
    None,
    Length(u64),
    Chunked,
    /// Until Tether closes the connection (an HTTP/1.0 client).
    Close,
}

/// Writes the response head for the client into `out`; `connection`: the
/// `Connection` option to send (`close`, or `keep-alive` for an HTTP/1.0 client).
pub fn response(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    session_id: Option<&[u8]>,
    framing: Downstream,
    connection: Option<&[u8]>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(&buf[head.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    // No body follows (1xx, 204, 304, the answer to a HEAD). A 304 or a
    // HEAD answer may say the length a GET would get: the one valid
    // length, once (an HTTP/2 client refuses a list, a duplicate or a
    // stray value as a protocol error); a 1xx or 204 has none (RFC 9110
    // §8.6). A lone field that says just that number goes as it came.
    let said = match framing {
        Downstream::None if head.status >= 200 && head.status != 204 => {
            head.fields.content_length(buf).ok().flatten()
        }
        _ => None,
    };
    let said_as_it_came = said.is_some() && {
        let mut lengths = head
            .fields
            .list
            .iter()
            .filter(|f| f.kind == FieldKind::ContentLength);
        matches!(
            (lengths.next(), lengths.next()),
            (Some(f), None) if buf[f.value.clone()].iter().all(u8::is_ascii_digit)
        )
    };
    let mut lines = Lines::new(out, buf);
    for f in &head.fields.list {
        match f.kind {
            FieldKind::HopByHop | FieldKind::Connection | FieldKind::TransferEncoding => continue,
            FieldKind::ContentLength if said_as_it_came => {}
            // Written below: the framing's, or what a bodiless answer says.
            FieldKind::ContentLength => continue,
            FieldKind::SessionId if session_id.is_some() => {
                lines.write(&buf[f.name.clone()], session_id.unwrap_or_default());
                continue;
            }
            _ => {}
        }
        lines.pass(f);
    }
    lines.finish();
    match framing {
        Downstream::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Downstream::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Downstream::None => {
            if let (Some(n), false) = (said, said_as_it_came) {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
        }
        Downstream::Close => {}
    }
    if let Some(option) = connection {
        field(out, b"connection", option);
    }
    out.extend_from_slice(b"\r\n");
}

/// Adds a field to a head `response` wrote (before its final empty line).
pub fn append_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
        field(out, name, value);
        out.extend_from_slice(b"\r\n");
    }
}

/// A whole response Tether writes itself (errors): JSON, with its length,
/// and `Retry-After` when the refusal is a matter of load.
pub fn own_response(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    retry_after: Option<u32>,
    body: &[u8],
    close: bool,
) {
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    );
    if let Some(seconds) = retry_after {
        let _ = write!(out, "retry-after: {seconds}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Appends `n` in decimal (what `write!` does, without the formatting machinery
/// that showed in the profile at two numbers per request).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes field lines for the next hop. A line that passes unchanged is
/// copied as it arrived, and consecutive ones in one piece: one copy per run
/// of lines instead of four per field (it showed in the profile).
struct Lines<'a> {
    out: &'a mut Vec<u8>,
    buf: &'a [u8],
    run: Option<Range<usize>>,
}

impl<'a> Lines<'a> {
    fn new(out: &'a mut Vec<u8>, buf: &'a [u8]) -> Self {
        Lines {
            out,
            buf,
            run: None,
        }
    }

    /// Passes `f` on unchanged.
    fn pass(&mut self, f: &Field) {
        match raw_line(self.buf, f) {
            Some(line) => match &mut self.run {
                Some(run) if run.end == line.start => run.end = line.end,
                _ => {
                    self.flush();
                    self.run = Some(line);
                }
            },
            None => {
                self.flush();
                field(
                    self.out,
                    &self.buf[f.name.clone()],
                    &self.buf[f.value.clone()],
                );
            }
        }
    }

    /// Writes a field of Tether's own (or with a value it replaced).
    fn write(&mut self, name: &[u8], value: &[u8]) {
        self.flush();
        field(self.out, name, value);
    }

    fn flush(&mut self) {
        if let Some(run) = self.run.take() {
            self.out.extend_from_slice(&self.buf[run]);
        }
    }

    fn finish(mut self) {
        self.flush();
    }
}

/// The whole line of `f`, from its name to its CRLF, when it can be copied
/// as it is: it ends in CRLF (a bare LF, which a parser may accept, is not
/// sent on) and its value is in the buffer.
fn raw_line(buf: &[u8], f: &Field) -> Option<Range<usize>> {
    if f.value.end < f.name.end {
        return None;
    }
    let rest = buf.get(f.value.end..)?;
    let end = rest.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let ows = rest[..end].iter().all(|&b| b == b' ' || b == b'\t');
    (ows && rest.get(end..end + 2) == Some(b"\r\n")).then(|| f.name.start..f.value.end + end + 2)
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a `Content-Type` value is `text/event-stream` (any parameters, any case).
pub fn is_event_stream(content_type: Option<&[u8]>) -> bool {
    content_type
        .and_then(|v| v.split(|&b| b == b';').next())
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"))
}

/// Whether a `Content-Type` value is `application/json`.
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    content_type
        .and_then(|v| v.split(|&b| b == b';').next())
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> (Vec<u8>, RequestHead) {
        let buf = raw.as_bytes().to_vec();
        let head = RequestHead::parse(&buf, 1 << 16).unwrap().unwrap();
        (buf, head)
    }

    fn upstream(raw: &str, to: &ToUpstream<'_>, body: &str) -> String {
        let (buf, head) = req(raw);
        let mut out = Vec::new();
        request(&mut out, &buf, &head, to, body.as_bytes());
        String::from_utf8(out).unwrap()
    }

    fn to<'a>(
        peer: &'a str,
        host: Option<&'a str>,
        session_id: Option<&'a [u8]>,
    ) -> ToUpstream<'a> {
        ToUpstream {
            target: b"/mcp",
            session_id,
            mcp_name: None,
            peer,
            authority: host.unwrap_or("10.9.9.9:80"),
            preserve_host: host.is_none(),
            host: None,
            tls: false,
            forwarded: false,
        }
    }

    #[test]
    fn forwarded_names_the_client_its_scheme_and_the_host_it_asked_for() {
        let raw = "GET /mcp HTTP/1.1\r\nHost: mcp.example:8443\r\nForwarded: for=192.0.2.1\r\n\r\n";
        let mut t = to("2001:db8::7", None, None);
        t.forwarded = true;
        t.tls = true;
        let out = upstream(raw, &t, "");
        // The client's own line first, then Tether's.
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("forwarded:"))
            .collect();
        assert_eq!(
            lines,
            [
                "Forwarded: for=192.0.2.1",
                "forwarded: for=\"[2001:db8::7]\";proto=https;host=\"mcp.example:8443\""
            ]
        );
        assert!(out.contains("x-forwarded-proto: https\r\n"), "{out}");
        // The backend's authority sent as Host: `host=` still names the client's.
        let mut t = to("10.0.0.7", Some("10.9.9.9:80"), None);
        t.forwarded = true;
        let out = upstream(raw, &t, "");
        assert!(
            out.contains("forwarded: for=10.0.0.7;proto=http;host=\"mcp.example:8443\"\r\n"),
            "{out}"
        );
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let out = upstream(
            "POST /mcp HTTP/1.1\r\nHost: lb\r\nConnection: keep-alive, X-Secret-Hop\r\nKeep-Alive: timeout=5\r\nX-Secret-Hop: 1\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nUpgrade: h2c\r\nExpect: 100-continue\r\nAuthorization: Bearer abc\r\nMcp-Protocol-Version: 2025-06-18\r\nMcp-Method: tools/call\r\n\r\n",
            &to("10.0.0.7", None, None),
            "{}",
        );
        let lower = out.to_ascii_lowercase();
        for gone in [
            "connection:",
            "keep-alive:",
            "x-secret-hop",
            "transfer-encoding",
            "te:",
            "upgrade",
            "expect",
        ] {
            assert!(!lower.contains(gone), "{gone} kept:\n{out}");
        }
        for kept in [
            "POST /mcp HTTP/1.1\r\n",
            "Host: lb\r\n",
            "Authorization: Bearer abc\r\n",
            "Mcp-Protocol-Version: 2025-06-18\r\n",
            "Mcp-Method: tools/call\r\n",
            "content-length: 2\r\n\r\n{}",
        ] {
            assert!(out.contains(kept), "{kept:?} missing:\n{out}");
        }
    }

    #[test]
    fn forwarded_fields_append_and_replace() {
        let out = upstream(
            "GET /mcp HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\n\r\n",
            &to("127.0.0.1", None, None),
            "",
        );
        assert!(
            out.contains("x-forwarded-for: 1.2.3.4, 5.6.7.8, 127.0.0.1\r\n"),
            "{out}"
        );
        assert!(out.contains("x-forwarded-proto: http\r\n"), "{out}");
        assert!(!out.contains("https"), "{out}");
        assert!(
            !out.contains("content-length"),
            "a GET without a body gets none: {out}"
        );
        let out = upstream(
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            &to("::1", None, None),
            "",
        );
        assert!(out.contains("x-forwarded-for: ::1\r\n"), "{out}");
    }

    #[test]
    fn host_is_kept_unless_configured_otherwise() {
        let raw = "GET / HTTP/1.1\r\nHost: lb.example:8080\r\n\r\n";
        let out = upstream(raw, &to("127.0.0.1", None, None), "");
        assert!(out.contains("Host: lb.example:8080\r\n"), "{out}");
        let out = upstream(raw, &to("127.0.0.1", Some("10.1.1.1:3000"), None), "");
        assert!(out.contains("host: 10.1.1.1:3000\r\n"), "{out}");
        assert!(!out.contains("lb.example"), "{out}");
        let out = upstream("GET / HTTP/1.0\r\n\r\n", &to("127.0.0.1", None, None), "");
        assert!(
            out.contains("host: 10.9.9.9:80\r\n"),
            "an HTTP/1.0 request gets one: {out}"
        );
    }

    #[test]
    fn only_the_first_session_id_is_replaced_and_others_dropped() {
        let out = upstream(
            "POST /mcp HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: t1.token\r\nmcp-session-id: t1.other\r\nContent-Length: 0\r\n\r\n",
            &to("127.0.0.1", None, Some(b"srv-7")),
            "",
        );
        assert!(out.contains("Mcp-Session-Id: srv-7\r\n"), "{out}");
        assert!(!out.contains("t1."), "{out}");
        assert!(
            out.contains("content-length: 0\r\n"),
            "a declared empty body stays declared: {out}"
        );
    }

    #[test]
    fn response_heads_get_fresh_framing_and_the_token() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nMcp-Session-Id: srv-1\r\nX-Custom: y\r\n\r\n";
        let head = ResponseHead::parse(raw, 1 << 16, false).unwrap().unwrap();
        let mut out = Vec::new();
        response(
            &mut out,
            raw,
            &head,
            Some(b"t1.tok"),
            Downstream::Chunked,
            Some(b"close"),
        );
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nMcp-Session-Id: t1.tok\r\nX-Custom: y\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let raw = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
        let head = ResponseHead::parse(raw, 1 << 16, false).unwrap().unwrap();
        let mut out = Vec::new();
        response(&mut out, raw, &head, None, Downstream::None, None);
        assert_eq!(
            out,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
        );
    }

    #[test]
    fn a_bodiless_answer_says_one_valid_length_or_none() {
        // Found in review: these reached an HTTP/2 client as they came,
        // which it refused as a protocol error.
        let cases: [(&[u8], &str); 7] = [
            (
                b"304 Not Modified\r\nContent-Length: 5, 5",
                "content-length: 5\r\n",
            ),
            (
                b"304 Not Modified\r\nContent-Length: 7\r\ncontent-length: 7",
                "content-length: 7\r\n",
            ),
            (b"304 Not Modified\r\nContent-Length: abc", ""),
            (
                b"304 Not Modified\r\nContent-Length: 5\r\nContent-Length: 6",
                "",
            ),
            (b"200 OK\r\nContent-Length: 5, 5", "content-length: 5\r\n"),
            (b"204 No Content\r\nContent-Length: 7", ""),
            (b"204 No Content\r\nContent-Length: -1", ""),
        ];
        for (answer, said) in cases {
            let raw = [b"HTTP/1.1 ", answer, b"\r\nX-A: 1\r\n\r\n"].concat();
            // The answer to a HEAD has no body whatever its status.
            let head = ResponseHead::parse(&raw, 1 << 16, true).unwrap().unwrap();
            let mut out = Vec::new();
            response(&mut out, &raw, &head, None, Downstream::None, None);
            let out = String::from_utf8(out).unwrap();
            let status = String::from_utf8_lossy(
                &answer[..answer.iter().position(|&b| b == b'\r').unwrap()],
            )
            .into_owned();
            assert_eq!(out, format!("HTTP/1.1 {status}\r\nX-A: 1\r\n{said}\r\n"));
        }
    }

    #[test]
    fn lines_pass_as_they_arrived_and_bare_lf_is_not_sent_on() {
        let raw = b"HTTP/1.1 200 OK\r\nX-A:  spaced  \r\nX-B: lf\nX-C: 3\r\nKeep-Alive: x\r\nX-D: 4\r\nContent-Length: 0\r\n\r\n";
        let head = ResponseHead::parse(raw, 1 << 16, false).unwrap().unwrap();
        let mut out = Vec::new();
        response(&mut out, raw, &head, None, Downstream::None, None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-A:  spaced  \r\nX-B: lf\r\nX-C: 3\r\nX-D: 4\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 100, 4096, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn event_stream_detection() {
        assert!(is_event_stream(Some(b"text/event-stream")));
        assert!(is_event_stream(Some(b"Text/Event-Stream; charset=utf-8")));
        assert!(!is_event_stream(Some(b"application/json")));
        assert!(!is_event_stream(None));
    }
}
