//! `http1::head`: request and response heads.
//!
//! - robustness: arbitrary bytes and mutated valid heads never panic, and
//!   every range lies inside the buffer;
//! - differential against `httparse` itself: what Tether accepts, httparse
//!   parses the same way (Tether serves `HTTP/1.2`..`HTTP/1.9` as 1.1, so
//!   those are compared with the digit patched to 1);
//! - an RFC 9112 model of what must be refused and of the body's framing;
//! - a prefix of an accepted head is "need more bytes", never an error;
//! - differential against hyper's HTTP/1 server, with the intentional
//!   differences listed;
//! - responses: the reason phrase is the raw bytes of the status line.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use mcp_tether::http1::chunked::ChunkedDecoder;
use mcp_tether::http1::head::{
    FieldKind, Framing, HeadError, RequestHead, ResponseHead, TargetForm, MAX_FIELDS,
};
use proptest::prelude::*;
use proptest::sample::select;

use crate::{config, mutations, show, Raw, LINE_END_EDITS};

// ---------------------------------------------------------------------------
// Generated requests
// ---------------------------------------------------------------------------

/// How a generated `Content-Length` relates to the body actually sent.
#[derive(Debug, Clone)]
enum Cl {
    Exact,
    /// The length with leading zeros (still at most 19 digits).
    Zeros(usize),
    /// `n, n` in one field.
    Twice,
    /// More than was sent.
    Plus(u64),
    /// Anything else, verbatim.
    Raw(&'static str),
}

#[derive(Debug, Clone)]
enum Value {
    Fixed(Raw),
    Length(Cl),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    value: Value,
    /// Whitespace before and after the value.
    ows: (&'static str, &'static str),
    /// The line ends in a bare LF (which httparse accepts).
    lf: bool,
}

#[derive(Debug, Clone)]
struct Req {
    leading: &'static str,
    method: &'static str,
    target: String,
    major: u8,
    minor: u8,
    fields: Vec<Field>,
    payload: Raw,
    /// Chunk sizes for a chunked body (cycled), and one extension.
    chunks: Vec<usize>,
    ext: &'static str,
}

impl Req {
    fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }

    fn bytes(&self) -> Raw {
        Raw(self.raw())
    }

    fn raw(&self) -> Vec<u8> {
        let mut out = self.leading.as_bytes().to_vec();
        out.extend_from_slice(
            format!(
                "{} {} HTTP/{}.{}\r\n",
                self.method, self.target, self.major, self.minor
            )
            .as_bytes(),
        );
        let len = self.payload.len() as u64;
        for f in &self.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(f.ows.0.as_bytes());
            match &f.value {
                Value::Fixed(v) => out.extend_from_slice(v),
                Value::Length(cl) => out.extend_from_slice(
                    match cl {
                        Cl::Exact => len.to_string(),
                        Cl::Zeros(z) => format!("{}{len}", "0".repeat(*z)),
                        Cl::Twice => format!("{len}, {len}"),
                        Cl::Plus(k) => (len + k).to_string(),
                        Cl::Raw(s) => s.to_string(),
                    }
                    .as_bytes(),
                ),
            }
            out.extend_from_slice(f.ows.1.as_bytes());
            out.extend_from_slice(if f.lf { b"\n" } else { b"\r\n" });
        }
        out.extend_from_slice(b"\r\n");
        if self.has("transfer-encoding") {
            let mut at = 0;
            let mut i = 0;
            while at < self.payload.len() {
                let n = self.chunks[i % self.chunks.len()].min(self.payload.len() - at);
                out.extend_from_slice(format!("{n:x}{}\r\n", self.ext).as_bytes());
                out.extend_from_slice(&self.payload[at..at + n]);
                out.extend_from_slice(b"\r\n");
                at += n;
                i += 1;
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(&self.payload);
        }
        out
    }
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE", "M-SEARCH", "FOO",
];

/// Host values, valid and not (the model, not this list, decides which).
const HOSTS: &[&str] = &[
    "example.com",
    "example.com:8080",
    "127.0.0.1:9000",
    "[::1]:80",
    "[::1]",
    "",
    "a.b-c_d~e",
    "host:",
    "xn--bcher-kva.example",
    "%41b",
    "bad host",
    "a@b",
    "h/x",
    "h?x",
    "[::1",
    "[zz]",
    "[1:2]",
    "h:80x",
    "h:8:8",
    "x[y]",
    "\"q\"",
];

const TES: &[&str] = &[
    "chunked",
    "Chunked",
    "CHUNKED",
    "chunked,",
    ", chunked",
    "gzip, chunked",
    "gzip",
    "chunked, gzip",
    "chunked, chunked",
    "identity",
    "\"chunked\"",
    "chunked;q=1",
    "",
    ",",
];

const CONNECTIONS: &[&str] = &[
    "close",
    "keep-alive",
    "Keep-Alive",
    "close, keep-alive",
    "x-custom",
    "X-Custom, close",
    "te",
    "",
];

const OTHER_FIELDS: &[(&str, &str)] = &[
    ("Accept", "application/json, text/event-stream"),
    ("User-Agent", "props/1.0"),
    ("Content-Type", "application/json"),
    ("Mcp-Session-Id", "t1.abc"),
    ("X-Custom", "1"),
    ("x-custom", "two words"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Proxy-Connection", "keep-alive"),
    ("Expect", "100-continue"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("X-Empty", ""),
];

const OWS: &[(&str, &str)] = &[(" ", ""), ("", ""), ("  ", " "), ("\t", "\t"), (" ", "  ")];

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            8 => 0x21..=0x7eu8,
            1 => Just(b' '),
            1 => Just(b'\t'),
            1 => 0x80..=0xffu8,
        ],
        0..16,
    )
    // httparse trims whitespace at both ends; keep the value's own edges visible.
    .prop_map(|mut v| {
        while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.pop();
        }
        while v.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.remove(0);
        }
        v
    })
}

fn field(
    name: impl Strategy<Value = String>,
    value: impl Strategy<Value = Value>,
) -> impl Strategy<Value = Field> {
    (name, value, select(OWS), prop::bool::weighted(0.1)).prop_map(|(name, value, ows, lf)| Field {
        name,
        value,
        ows,
        lf,
    })
}

fn fixed(values: &'static [&'static str]) -> impl Strategy<Value = Value> {
    select(values).prop_map(|v| Value::Fixed(Raw(v.as_bytes().to_vec())))
}

fn names(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(names).prop_map(str::to_owned)
}

fn host_field() -> impl Strategy<Value = Field> {
    field(
        names(&["Host", "host", "HOST"]),
        prop_oneof![
            6 => fixed(&HOSTS[..10]),
            1 => fixed(HOSTS),
        ],
    )
}

fn cl_field() -> impl Strategy<Value = Field> {
    let cl = prop_oneof![
        8 => Just(Cl::Exact),
        1 => (1..4usize).prop_map(Cl::Zeros),
        1 => Just(Cl::Twice),
        1 => (1..3u64).prop_map(Cl::Plus),
        2 => select(&[
            "", "abc", "-1", "+5", "1e3", "0x10", "5,", ",5", "5, 6", "18446744073709551616",
            "18446744073709551615", "00000000000000000000", "0", " 7 ",
        ][..])
        .prop_map(Cl::Raw),
    ];
    field(
        names(&["Content-Length", "content-length"]),
        cl.prop_map(Value::Length),
    )
}

fn te_field() -> impl Strategy<Value = Field> {
    field(
        names(&["Transfer-Encoding", "transfer-encoding"]),
        prop_oneof![
            6 => fixed(&TES[..3]),
            2 => fixed(TES),
            // An empty list is still a Transfer-Encoding (RFC 9112 §6.3).
            1 => fixed(&TES[TES.len() - 2..]),
        ],
    )
}

fn other_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        3 => select(OTHER_FIELDS).prop_flat_map(|(n, v)| field(Just(n.to_owned()), Just(Value::Fixed(Raw(v.as_bytes().to_vec()))))),
        1 => field(names(&["Connection", "connection"]), fixed(CONNECTIONS)),
        2 => field("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", value_bytes().prop_map(|v| Value::Fixed(Raw(v)))),
    ]
}

fn pchars(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => "[A-Za-z0-9._~!$&'()*+,;=:@-]",
            1 => "%[0-9A-Fa-f]{2}",
        ],
        0..max,
    )
    .prop_map(|v| v.concat())
}

fn origin() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(pchars(6), 1..4),
        proptest::option::weighted(
            0.4,
            proptest::collection::vec(
                prop_oneof![pchars(4), Just("/".to_owned()), Just("?".to_owned())],
                0..5,
            ),
        ),
    )
        .prop_map(|(segments, query)| {
            let mut t = String::new();
            for s in segments {
                t.push('/');
                t.push_str(&s);
            }
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q.concat());
            }
            t
        })
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => origin(),
        3 => (
            select(&["http", "https", "HTTP", "Https"][..]),
            prop_oneof![4 => select(&HOSTS[..5]), 1 => select(HOSTS), 1 => Just("user@h")],
            prop_oneof![Just(String::new()), origin(), Just("?x=1".to_owned())],
        )
            .prop_map(|(scheme, authority, rest)| format!("{scheme}://{authority}{rest}")),
        1 => Just("*".to_owned()),
        1 => (origin(), pchars(4)).prop_map(|(o, f)| format!("{o}#{f}")),
        2 => select(&[
            "ftp://h/x", "h:80", "a/b", "mailto:x", "//h/x", "http:/x", "http://", "http:///x",
            "http://h#f", "?x", "-", "**", "http://a:b@h/",
        ][..])
        .prop_map(str::to_owned),
    ]
}

prop_compose! {
    fn request()(
        leading in prop_oneof![12 => Just(""), 1 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r\n\r\n")],
        method in prop_oneof![10 => select(METHODS), 1 => Just("OPTIONS")],
        target in target(),
        major in prop_oneof![30 => Just(1u8), 1 => 0..=9u8],
        minor in prop_oneof![8 => Just(1u8), 3 => Just(0u8), 2 => 2..=9u8],
        hosts in prop_oneof![12 => proptest::collection::vec(host_field(), 1..=1), 1 => Just(vec![]), 1 => proptest::collection::vec(host_field(), 2..=2)],
        framing in prop_oneof![
            4 => Just(vec![]),
            4 => proptest::collection::vec(cl_field(), 1..=1),
            2 => proptest::collection::vec(cl_field(), 2..=2),
            4 => proptest::collection::vec(te_field(), 1..=1),
            1 => proptest::collection::vec(te_field(), 2..=2),
            1 => (cl_field(), te_field()).prop_map(|(a, b)| vec![a, b]),
        ],
        others in proptest::collection::vec(other_field(), 0..6),
        connection in proptest::option::weighted(0.3, field(names(&["Connection", "connection"]), fixed(CONNECTIONS))),
        payload in proptest::collection::vec(any::<u8>(), 0..80).prop_map(Raw),
        chunks in proptest::collection::vec(1..40usize, 1..4),
        ext in select(&["", ";a=b", " ;x", ";q=\"s p\""][..]),
        order in any::<prop::sample::Index>(),
    ) -> Req {
        let mut fields: Vec<Field> = hosts.into_iter().chain(framing).chain(connection).collect();
        // Other fields go before, between and after the interesting ones.
        for (k, f) in others.into_iter().enumerate() {
            let at = (order.index(1 << 16) + k * 7) % (fields.len() + 1);
            fields.insert(at, f);
        }
        Req { leading, method, target, major, minor, fields, payload, chunks, ext }
    }
}

/// Byte-level edits of generated requests.
fn mutated_request() -> impl Strategy<Value = Raw> {
    const INTERESTING: &[u8] = b"\r\n \t:,;#?/*@[]%\"\x00\x7f\x80\xff019aAzZ.";
    const FRAGMENTS: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r",
        b"\r\n\r\n",
        b"Host: x\r\n",
        b"Host: \r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 0\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: \r\n",
        b"Connection: close\r\n",
        b" HTTP/1.1",
        b"HTTP/1.",
        b" ",
        b": ",
        b"\r\n ",
    ];
    const REPLACEMENTS: &[(&[u8], &[u8])] = &[
        (b"\r\n", b"\n"),
        (b"\r\n", b"\r"),
        (b"\r\n", b"\r\n "),
        (b"\r\n", b"\r\n\t"),
        (b": ", b" : "),
        (b": ", b":"),
        (b"HTTP/1.1", b"HTTP/1.0"),
        (b"HTTP/1.1", b"HTTP/1.2"),
        (b"HTTP/1.1", b"HTTP/2.0"),
        (b"HTTP/1.1", b"HTTP/1.10"),
        (b" /", b"  /"),
        (b"chunked", b"chunked, chunked"),
        (b"chunked", b""),
        (b"Host", b"Hos t"),
        (b"Host", b"X-Host"),
        (b"Content-Length", b"Content-Length "),
    ];
    (
        request(),
        mutations(INTERESTING, FRAGMENTS, REPLACEMENTS, 4),
    )
        .prop_map(|(req, muts)| {
            let mut bytes = req.bytes();
            for m in &muts {
                m.apply(&mut bytes);
            }
            bytes
        })
}

/// Inputs for the properties that hold for any bytes.
fn any_request_bytes() -> impl Strategy<Value = Raw> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(Raw),
        1 => proptest::collection::vec(select(&b"GET / HTTP/1.1\r\n\r\nHost:x Content-Length: Transfer-Encoding: chunked *?#@[]09"[..]), 0..256).prop_map(Raw),
        2 => request().prop_map(|r| r.bytes()),
        4 => mutated_request(),
    ]
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => Just(1usize << 16),
        2 => 0..400usize,
        1 => Just(usize::MAX),
    ]
}

// ---------------------------------------------------------------------------
// httparse as the reference parser, and the RFC 9112 model
// ---------------------------------------------------------------------------

/// What httparse made of a request (owned: it may come from a patched copy).
#[derive(Debug, Clone)]
struct Parsed {
    len: usize,
    method: Vec<u8>,
    target: Vec<u8>,
    /// The minor version as sent (2..=9 for a patched `HTTP/1.x`).
    minor: u8,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where the empty lines httparse skips before a start line end.
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        if buf[at..].starts_with(b"\r\n") {
            at += 2;
        } else if buf[at..].starts_with(b"\n") {
            at += 1;
        } else {
            return at;
        }
    }
}

/// Where the minor digit of a request line `method SP target SP HTTP/1.D`
/// with D in 2..=9 is (followed by the line's end), if it is one.
fn higher_minor_at(buf: &[u8]) -> Option<usize> {
    let start = skip_empty_lines(buf);
    let mut spaces = buf[start..].iter().enumerate().filter(|(_, &b)| b == b' ');
    let (second, _) = spaces.nth(1)?;
    let version = start + second + 1;
    let v = buf.get(version..version + 9)?;
    (v.starts_with(b"HTTP/1.") && (b'2'..=b'9').contains(&v[7]) && (v[8] == b'\r' || v[8] == b'\n'))
        .then_some(version + 7)
}

/// httparse on `buf`, or on a copy with the minor digit patched to 1 when
/// the request says `HTTP/1.2`..`HTTP/1.9`. `Err(())`: httparse refused it
/// or it is incomplete.
fn reference_parse(buf: &[u8]) -> Result<Parsed, ()> {
    fn parse(buf: &[u8], minor: Option<u8>) -> Result<Parsed, Option<httparse::Error>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Ok(Parsed {
                len,
                method: req.method.unwrap().as_bytes().to_vec(),
                target: req.path.unwrap().as_bytes().to_vec(),
                minor: minor.unwrap_or(req.version.unwrap()),
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                    .collect(),
            }),
            Ok(httparse::Status::Partial) => Err(None),
            Err(e) => Err(Some(e)),
        }
    }
    match parse(buf, None) {
        Ok(p) => Ok(p),
        Err(Some(httparse::Error::Version)) => {
            let at = higher_minor_at(buf).ok_or(())?;
            let mut copy = buf.to_vec();
            copy[at] = b'1';
            parse(&copy, Some(buf[at] - b'0')).map_err(|_| ())
        }
        Err(_) => Err(()),
    }
}

/// What RFC 9112 (and Tether's documented choices) say of a parsed request.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// A MUST-refuse (or refuse-allowed, which Tether documents it does).
    Reject(&'static str),
    /// Must be accepted with this framing and persistence.
    Accept(Framing, bool),
    /// May be refused; if accepted, with this framing and persistence.
    Either(Framing, bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HostVerdict {
    Valid,
    Invalid,
    /// Outside what the model decides (bad percent-encoding, an IP literal
    /// that is not IPv6, ...): either answer is fine.
    Unsure,
}

fn split_host_port(v: &[u8]) -> Option<(&[u8], &[u8])> {
    if v.first() == Some(&b'[') {
        let end = v.iter().position(|&b| b == b']')?;
        Some((&v[..=end], &v[end + 1..]))
    } else {
        Some(match v.iter().position(|&b| b == b':') {
            Some(c) => (&v[..c], &v[c..]),
            None => (v, &[][..]),
        })
    }
}

fn port_ok(port: &[u8]) -> bool {
    match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// `uri-host [":" port]` (RFC 3986 §3.2.2, RFC 9112 §3.2).
fn host_verdict(v: &[u8]) -> HostVerdict {
    let unreserved_or_sub = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
    let Some((host, port)) = split_host_port(v) else {
        return HostVerdict::Invalid;
    };
    let strict = port_ok(port)
        && if host.first() == Some(&b'[') {
            std::str::from_utf8(&host[1..host.len() - 1])
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
                .is_some()
        } else {
            let mut i = 0;
            let mut ok = true;
            while i < host.len() {
                if host[i] == b'%' {
                    ok &= host.len() > i + 2
                        && host[i + 1].is_ascii_hexdigit()
                        && host[i + 2].is_ascii_hexdigit();
                    i += 3;
                } else {
                    ok &= unreserved_or_sub(host[i]);
                    i += 1;
                }
            }
            ok
        };
    if strict {
        return HostVerdict::Valid;
    }
    let allowed = |b: &u8| unreserved_or_sub(*b) || b":[]%".contains(b);
    let brackets_misplaced = if host.first() == Some(&b'[') {
        host[1..host.len() - 1]
            .iter()
            .any(|&b| b == b'[' || b == b']')
    } else {
        host.iter().any(|&b| b == b'[' || b == b']')
    };
    if !v.iter().all(allowed) || brackets_misplaced || !port_ok(port) {
        return HostVerdict::Invalid;
    }
    HostVerdict::Unsure
}

/// The target's form as the model sees it.
#[derive(Debug)]
enum FormModel {
    Origin,
    Asterisk,
    Absolute { authority: Vec<u8>, path: Vec<u8> },
}

fn list_items(values: &[&[u8]]) -> Vec<Vec<u8>> {
    values
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|i| i.trim_ascii().to_vec())
        .collect()
}

fn values<'a>(p: &'a Parsed, name: &str) -> Vec<&'a [u8]> {
    p.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
        .collect()
}

fn form_model(p: &Parsed) -> Result<(FormModel, HostVerdict), &'static str> {
    let t = &p.target[..];
    if t.contains(&b'#') {
        return Err("fragment in target");
    }
    if t.first() == Some(&b'/') {
        return Ok((FormModel::Origin, HostVerdict::Valid));
    }
    if t == b"*" {
        return if p.method == b"OPTIONS" {
            Ok((FormModel::Asterisk, HostVerdict::Valid))
        } else {
            Err("* without OPTIONS")
        };
    }
    let lower = t.to_ascii_lowercase();
    let rest = if lower.starts_with(b"http://") {
        &t[7..]
    } else if lower.starts_with(b"https://") {
        &t[8..]
    } else {
        return Err("neither origin, absolute http(s) nor * form");
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return Err("empty authority");
    }
    if authority.contains(&b'@') {
        return Err("userinfo in authority");
    }
    let verdict = host_verdict(authority);
    if verdict == HostVerdict::Invalid {
        return Err("invalid authority");
    }
    Ok((
        FormModel::Absolute {
            authority: authority.to_vec(),
            path: rest[end..].to_vec(),
        },
        verdict,
    ))
}

fn model(p: &Parsed) -> Verdict {
    use Verdict::*;
    let mut unsure = false;
    let (form, authority) = match form_model(p) {
        Ok(f) => f,
        Err(why) => return Reject(why),
    };
    unsure |= authority == HostVerdict::Unsure;
    let absolute = matches!(form, FormModel::Absolute { .. });

    let hosts = values(p, "host");
    match hosts[..] {
        [] if p.minor >= 1 => return Reject("no host in HTTP/1.1"),
        [] => {}
        [host] => match host_verdict(host) {
            HostVerdict::Valid => {}
            // RFC 9112 §3.2 (400 for an invalid Host) against §3.2.2 (a
            // proxy ignores Host when the target is absolute).
            HostVerdict::Invalid if absolute => unsure = true,
            HostVerdict::Invalid => return Reject("invalid host"),
            HostVerdict::Unsure => unsure = true,
        },
        _ => return Reject("more than one host"),
    }

    let te = values(p, "transfer-encoding");
    let cl = values(p, "content-length");
    let framing = if !te.is_empty() {
        if !cl.is_empty() {
            return Reject("transfer-encoding with content-length");
        }
        if p.minor == 0 {
            return Reject("transfer-encoding in HTTP/1.0");
        }
        // §6.3: chunked must be the final coding (else 400); Tether decodes
        // nothing else (501 is allowed for an unknown coding, §6.1), and
        // chunked twice is forbidden (§7).
        let codings: Vec<Vec<u8>> = list_items(&te)
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case(b"chunked") {
            return Reject("transfer coding other than one chunked");
        }
        Framing::Chunked
    } else if !cl.is_empty() {
        let items = list_items(&cl);
        // §8.6 of RFC 9110: a list of one repeated value MAY be accepted.
        unsure |= items.len() > 1;
        let mut length = None;
        for item in &items {
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Reject("invalid content-length");
            }
            let Some(n) = std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                return Reject("content-length overflows");
            };
            // Tether reads at most 19 digits: more (leading zeros) may be refused.
            unsure |= item.len() > 19;
            if length.is_some_and(|l| l != n) {
                return Reject("differing content-length values");
            }
            length = Some(n);
        }
        match length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    } else {
        Framing::None
    };

    let options = list_items(&values(p, "connection"));
    let close = options.iter().any(|o| o.eq_ignore_ascii_case(b"close"));
    let keep_alive = options
        .iter()
        .any(|o| o.eq_ignore_ascii_case(b"keep-alive"));
    let persistent = !close && (p.minor >= 1 || keep_alive);
    if unsure {
        Either(framing, persistent)
    } else {
        Accept(framing, persistent)
    }
}

// ---------------------------------------------------------------------------
// Checks shared by the properties
// ---------------------------------------------------------------------------

fn inside(r: &Range<usize>, buf: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        r.start <= r.end && r.end <= buf.len(),
        "range {r:?} outside {} bytes",
        buf.len()
    );
    Ok(())
}

fn check_request_ranges(buf: &[u8], limit: usize, h: &RequestHead) -> Result<(), TestCaseError> {
    prop_assert!(
        h.len <= buf.len() && h.len <= limit,
        "len {} of {} (limit {limit})",
        h.len,
        buf.len()
    );
    inside(&h.method, buf)?;
    inside(&h.target, buf)?;
    prop_assert!(h.method.end <= h.len && h.target.end <= h.len);
    if let TargetForm::Absolute { authority, path } = &h.form {
        inside(authority, buf)?;
        inside(path, buf)?;
        prop_assert!(
            h.target.start <= authority.start
                && authority.end == path.start
                && path.end == h.target.end
        );
    }
    for f in &h.fields.list {
        inside(&f.name, buf)?;
        inside(&f.value, buf)?;
        prop_assert!(f.name.end <= h.len && f.value.end <= h.len);
    }
    prop_assert!(h.minor <= 1);
    Ok(())
}

/// Tether agrees with httparse on everything it accepted.
fn check_against_httparse(buf: &[u8], h: &RequestHead) -> Result<(), TestCaseError> {
    let Ok(p) = reference_parse(buf) else {
        return Err(TestCaseError::fail(format!(
            "Tether accepted what httparse refuses: {}",
            show(buf)
        )));
    };
    prop_assert_eq!(h.len, p.len);
    prop_assert_eq!(&buf[h.method.clone()], &p.method[..]);
    prop_assert_eq!(&buf[h.target.clone()], &p.target[..]);
    prop_assert_eq!(h.minor, p.minor.min(1));
    prop_assert_eq!(h.fields.list.len(), p.headers.len());
    for (f, (name, value)) in h.fields.list.iter().zip(&p.headers) {
        prop_assert_eq!(&buf[f.name.clone()], &name[..]);
        prop_assert_eq!(&buf[f.value.clone()], &value[..]);
    }
    Ok(())
}

/// Tether's answer against the model's, for bytes that httparse parses.
fn check_against_model(buf: &[u8], limit: usize) -> Result<(), TestCaseError> {
    let Ok(p) = reference_parse(buf) else {
        return Ok(());
    };
    if p.len > limit || p.headers.len() >= MAX_FIELDS {
        return Ok(());
    }
    let got = RequestHead::parse(buf, limit);
    let verdict = model(&p);
    let shown = show(&buf[..p.len]);
    match (&verdict, &got) {
        (Verdict::Reject(_), Err(_)) => {}
        (Verdict::Either(..), Err(_)) => {}
        (Verdict::Accept(framing, keep) | Verdict::Either(framing, keep), Ok(Some(h))) => {
            prop_assert_eq!(&h.framing, framing, "framing of {}", shown);
            prop_assert_eq!(h.keep_alive, *keep, "keep-alive of {}", shown);
            prop_assert_eq!(h.len, p.len);
            let form = form_model(&p).expect("accepted by the model").0;
            match (&form, &h.form) {
                (FormModel::Origin, TargetForm::Origin)
                | (FormModel::Asterisk, TargetForm::Asterisk) => {}
                (
                    FormModel::Absolute { authority, path },
                    TargetForm::Absolute {
                        authority: a,
                        path: t,
                    },
                ) => {
                    prop_assert_eq!(&buf[a.clone()], &authority[..]);
                    prop_assert_eq!(&buf[t.clone()], &path[..]);
                }
                (want, got) => prop_assert!(false, "form {:?}, model {:?}: {}", got, want, shown),
            }
        }
        _ => prop_assert!(
            false,
            "model says {:?}, Tether {:?}: {}",
            verdict,
            got.map(|h| h.map(|h| h.framing)),
            shown
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1))]

    /// Any bytes: no panic, ranges inside the buffer, `len` within the
    /// buffer and the limit; "need more" only below the limit.
    #[test]
    fn request_ranges_stay_inside(buf in any_request_bytes(), limit in limit()) {
        match RequestHead::parse(&buf, limit) {
            Ok(Some(h)) => check_request_ranges(&buf, limit, &h)?,
            Ok(None) => prop_assert!(buf.len() < limit, "Ok(None) at {} bytes, limit {limit}", buf.len()),
            Err(_) => {}
        }
    }

    /// What Tether accepts, httparse parses to the same method, target,
    /// fields and length.
    #[test]
    fn request_agrees_with_httparse(buf in any_request_bytes(), limit in limit()) {
        if let Ok(Some(h)) = RequestHead::parse(&buf, limit) {
            check_against_httparse(&buf, &h)?;
        }
    }

    /// RFC 9112 model: the refusals Tether owes and the framing it must
    /// find, for generated requests and byte-level mutations of them.
    #[test]
    fn request_follows_the_rfc_model(
        buf in prop_oneof![2 => request().prop_map(|r| r.bytes()), 1 => mutated_request()],
        limit in prop_oneof![4 => Just(1usize << 16), 1 => 0..300usize],
    ) {
        check_against_model(&buf, limit)?;
        // A major version other than 1 is never served.
        let start = skip_empty_lines(&buf);
        if let Some(line) = buf[start..].split(|&b| b == b'\n').next() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let [.., b' ', b'H', b'T', b'T', b'P', b'/', major, b'.', minor] = line {
                if major.is_ascii_digit() && minor.is_ascii_digit() && *major != b'1' {
                    prop_assert!(!matches!(RequestHead::parse(&buf, limit), Ok(Some(_))), "HTTP/{}.{} served", *major as char, *minor as char);
                }
            }
        }
    }

    /// Every prefix of an accepted head is "need more bytes": a head that
    /// arrives in pieces is never refused for being cut.
    #[test]
    fn prefixes_of_an_accepted_head_wait(req in request(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 1..24)) {
        let buf = req.bytes();
        let limit = 1 << 16;
        if let Ok(Some(h)) = RequestHead::parse(&buf, limit) {
            for cut in cuts {
                let p = cut.index(h.len);
                let got = RequestHead::parse(&buf[..p], limit);
                prop_assert!(matches!(got, Ok(None)), "prefix of {} bytes gave {:?}: {}", p, got.map(|h| h.map(|h| h.len)), show(&buf[..p]));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// hyper as a second opinion
// ---------------------------------------------------------------------------

/// What hyper's service saw of the first request.
#[derive(Debug, Clone)]
struct HyperSaw {
    method: String,
    path: String,
    /// End-to-end fields but `Content-Length` (hyper keeps one of equal
    /// values; the length is compared as the body's), values escaped.
    headers: BTreeSet<(String, String)>,
    /// `None`: reading the body failed.
    body: Option<usize>,
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Runs hyper's HTTP/1 server on `bytes` over an in-memory stream.
fn hyper_sees(bytes: &[u8]) -> Option<HyperSaw> {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let seen: Arc<Mutex<Option<HyperSaw>>> = Arc::default();
    let record = seen.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let record = record.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.ok().map(|b| b.to_bytes().len());
                    let named: BTreeSet<String> = parts
                        .headers
                        .get_all(hyper::header::CONNECTION)
                        .iter()
                        .flat_map(|v| list_items(&[v.as_bytes()]))
                        .filter(|t| !t.is_empty())
                        .map(|t| String::from_utf8_lossy(&t).to_ascii_lowercase())
                        .collect();
                    let headers = parts
                        .headers
                        .iter()
                        .filter(|(n, _)| {
                            !HOP_BY_HOP.contains(&n.as_str()) && !named.contains(n.as_str())
                        })
                        .filter(|(n, _)| *n != hyper::header::CONTENT_LENGTH)
                        .map(|(n, v)| (n.as_str().to_owned(), show(v.as_bytes())))
                        .collect();
                    let path = match parts.uri.query() {
                        Some(q) => format!("{}?{q}", parts.uri.path()),
                        None => parts.uri.path().to_owned(),
                    };
                    let mut seen = record.lock().unwrap();
                    if seen.is_none() {
                        *seen = Some(HyperSaw {
                            method: parts.method.to_string(),
                            path,
                            headers,
                            body,
                        });
                    }
                    Ok::<_, Infallible>(hyper::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let talk = async move {
            // The server may close before reading everything: ignore write errors.
            let _ = client.write_all(bytes).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
        };
        let _ = tokio::join!(conn, talk);
    });
    let saw = seen.lock().unwrap().take();
    saw.filter(|s| s.body.is_some())
}

/// What Tether makes of the same bytes, in hyper's terms; `None`: refused,
/// or the body is not complete in `bytes`.
fn tether_sees(bytes: &[u8]) -> Option<HyperSaw> {
    let h = RequestHead::parse(bytes, 1 << 16).ok()??;
    let rest = &bytes[h.len..];
    let body = match h.framing {
        Framing::None => 0,
        Framing::Length(n) => (rest.len() as u64 >= n).then_some(n as usize)?,
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut n = 0;
            decoder.decode(rest, &mut |d: &[u8]| n += d.len()).ok()?;
            decoder.is_done().then_some(n)?
        }
        Framing::UntilClose => unreachable!("requests are never framed by close"),
    };
    let path = match &h.form {
        TargetForm::Origin | TargetForm::Asterisk => bytes[h.target.clone()].to_vec(),
        TargetForm::Absolute { path, .. } => {
            let p = &bytes[path.clone()];
            if p.first() == Some(&b'/') {
                p.to_vec()
            } else {
                [b"/".as_slice(), p].concat()
            }
        }
    };
    let headers = h
        .fields
        .list
        .iter()
        .filter(|f| {
            !matches!(
                f.kind,
                FieldKind::HopByHop
                    | FieldKind::Connection
                    | FieldKind::TransferEncoding
                    | FieldKind::ContentLength
            )
        })
        .map(|f| {
            (
                String::from_utf8_lossy(&bytes[f.name.clone()]).to_ascii_lowercase(),
                show(&bytes[f.value.clone()]),
            )
        })
        .collect();
    Some(HyperSaw {
        method: String::from_utf8_lossy(&bytes[h.method.clone()]).into_owned(),
        path: String::from_utf8_lossy(&path).into_owned(),
        headers,
        body: Some(body),
    })
}

/// Where Tether refuses what hyper's server accepts, on purpose: it is a
/// proxy, and each of these is a request two HTTP implementations can read
/// differently (RFC 9112 §3.2, §3.2.2, §6.1, §6.3, §7; RFC 9110 §4.2.1).
/// Each entry is checked on httparse's reading of the request.
/// A named difference and whether it applies to a request.
type Difference = (&'static str, fn(&Parsed) -> bool);

const TETHER_STRICTER: &[Difference] = &[
    ("Transfer-Encoding with Content-Length", |p| {
        !values(p, "transfer-encoding").is_empty() && !values(p, "content-length").is_empty()
    }),
    ("no Host in HTTP/1.1", |p| {
        p.minor >= 1 && values(p, "host").is_empty()
    }),
    ("more than one Host", |p| values(p, "host").len() > 1),
    ("a Host that is not uri-host [:port]", |p| {
        values(p, "host")
            .iter()
            .any(|h| host_verdict(h) != HostVerdict::Valid)
    }),
    ("a fragment in the target", |p| p.target.contains(&b'#')),
    (
        "a target other than origin, absolute http(s) or OPTIONS *",
        |p| {
            form_model(&Parsed {
                target: p.target.iter().copied().filter(|&b| b != b'#').collect(),
                ..p.clone()
            })
            .is_err()
        },
    ),
    (
        "an absolute target whose authority is not a plain host",
        |p| matches!(form_model(p), Ok((_, v)) if v != HostVerdict::Valid),
    ),
    ("a transfer coding other than exactly one chunked", |p| {
        let codings: Vec<Vec<u8>> = list_items(&values(p, "transfer-encoding"))
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
        !values(p, "transfer-encoding").is_empty()
            && (codings.len() != 1 || !codings[0].eq_ignore_ascii_case(b"chunked"))
    }),
    ("a Content-Length longer than 19 digits", |p| {
        list_items(&values(p, "content-length"))
            .iter()
            .any(|i| i.len() > 19)
    }),
];

/// Where hyper refuses what Tether accepts, on purpose.
const HYPER_STRICTER: &[Difference] = &[
    // RFC 9110 §2.5: a higher minor version is served as the highest known.
    ("HTTP/1.2 to HTTP/1.9, which Tether serves as 1.1", |p| {
        p.minor >= 2
    }),
    // RFC 9110 §8.6 allows either; hyper's server reads one number per field.
    ("a Content-Length list of one repeated value", |p| {
        values(p, "content-length")
            .iter()
            .any(|v| v.contains(&b','))
    }),
    // RFC 3986 §3.2.2 allows pct-encoded in a reg-name; http::Uri does not.
    (
        "a percent-encoded absolute-form authority",
        |p| matches!(form_model(p), Ok((FormModel::Absolute { authority, .. }, _)) if authority.contains(&b'%')),
    ),
    // RFC 9110 §5.6.1: a recipient ignores empty list elements; hyper's
    // server looks only at what follows the last comma of the last field.
    (
        "an empty element in a Transfer-Encoding list that is one chunked",
        |p| {
            let te = values(p, "transfer-encoding");
            let codings: Vec<Vec<u8>> = list_items(&te)
                .into_iter()
                .filter(|c| !c.is_empty())
                .collect();
            codings.len() == 1
                && codings[0].eq_ignore_ascii_case(b"chunked")
                && te
                    .iter()
                    .any(|v| v.split(|&b| b == b',').any(|i| i.trim_ascii().is_empty()))
        },
    ),
];

proptest! {
    #![proptest_config(config(4))]

    /// hyper's HTTP/1 server as a second opinion: where both accept, the
    /// same method, path and query, end-to-end fields and body length;
    /// where they differ, only for a reason listed above.
    #[test]
    fn request_agrees_with_hyper(req in request()) {
        let bytes = req.bytes();
        let tether = tether_sees(&bytes);
        let hyper = hyper_sees(&bytes);
        let parsed = reference_parse(&bytes);
        let reasons = |list: &[Difference]| -> Vec<&'static str> {
            match &parsed {
                Ok(p) => list.iter().filter(|(_, applies)| applies(p)).map(|(why, _)| *why).collect(),
                Err(()) => vec![],
            }
        };
        match (&tether, &hyper) {
            (Some(t), Some(h)) => {
                prop_assert_eq!(&t.method, &h.method, "method of {}", show(&bytes));
                prop_assert_eq!(&t.path, &h.path, "path of {}", show(&bytes));
                prop_assert_eq!(&t.headers, &h.headers, "fields of {}", show(&bytes));
                prop_assert_eq!(t.body, h.body, "body length of {}", show(&bytes));
            }
            (None, None) => {}
            (None, Some(_)) => {
                let why = reasons(TETHER_STRICTER);
                prop_assert!(!why.is_empty(), "Tether refuses, hyper accepts, for no listed reason: {}", show(&bytes));
            }
            (Some(_), None) => {
                let why = reasons(HYPER_STRICTER);
                prop_assert!(!why.is_empty(), "hyper refuses, Tether accepts, for no listed reason: {}", show(&bytes));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Resp {
    leading: &'static str,
    minor: u8,
    code: u16,
    /// `None`: the status line ends right after the code.
    reason: Option<Raw>,
    fields: Vec<(&'static str, String)>,
    head_request: bool,
}

impl Resp {
    fn bytes(&self) -> Raw {
        let mut out =
            format!("{}HTTP/1.{} {:03}", self.leading, self.minor, self.code).into_bytes();
        if let Some(reason) = &self.reason {
            out.push(b' ');
            out.extend_from_slice(reason);
        }
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.fields {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        Raw(out)
    }

    /// The framing RFC 9112 §6.3 gives this (valid) response.
    fn framing(&self) -> Framing {
        let has = |n: &str| {
            self.fields
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(n))
        };
        if self.head_request
            || (100..200).contains(&self.code)
            || self.code == 204
            || self.code == 304
        {
            Framing::None
        } else if has("transfer-encoding").is_some() {
            Framing::Chunked
        } else if let Some((_, n)) = has("content-length") {
            Framing::Length(n.parse().unwrap())
        } else {
            Framing::UntilClose
        }
    }
}

prop_compose! {
    fn response()(
        leading in prop_oneof![8 => Just(""), 1 => Just("\r\n"), 1 => Just("\n")],
        minor in prop_oneof![4 => Just(1u8), 2 => Just(0u8), 1 => 2..=9u8],
        code in prop_oneof![4 => 100..600u16, 1 => 0..1000u16, 1 => select(&[100u16, 101, 204, 304, 200][..])],
        reason in proptest::option::weighted(0.8, proptest::collection::vec(prop_oneof![
            1 => Just(b'\t'),
            8 => 0x20..=0x7eu8,
            3 => 0x80..=0xffu8,
        ], 0..24).prop_map(Raw)),
        cl in proptest::option::of(0..100_000u64),
        te in any::<bool>(),
        others in proptest::collection::vec(select(OTHER_FIELDS), 0..4),
        head_request in any::<bool>(),
    ) -> Resp {
        let mut fields: Vec<(&'static str, String)> = others.into_iter().map(|(n, v)| (n, v.to_owned())).collect();
        if let Some(n) = cl {
            fields.push(("Content-Length", n.to_string()));
        }
        if te {
            fields.insert(0, ("Transfer-Encoding", "chunked".to_owned()));
        }
        Resp { leading, minor, code, reason, fields, head_request }
    }
}

/// The reason phrase as the status line has it: what follows
/// `HTTP/1.x NNN ` up to the line's end.
fn raw_reason(buf: &[u8]) -> &[u8] {
    let start = skip_empty_lines(buf);
    let line = buf[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.get(12) {
        Some(b' ') => &line[13..],
        _ => &[],
    }
}

fn check_response(buf: &[u8], limit: usize, h: &ResponseHead) -> Result<(), TestCaseError> {
    prop_assert!(h.len <= buf.len() && h.len <= limit);
    inside(&h.reason, buf)?;
    for f in &h.fields.list {
        inside(&f.name, buf)?;
        inside(&f.value, buf)?;
    }
    prop_assert_eq!(
        &buf[h.reason.clone()],
        raw_reason(buf),
        "reason of {}",
        show(buf)
    );
    Ok(())
}

fn mutated_response() -> impl Strategy<Value = Raw> {
    const INTERESTING: &[u8] = b"\r\n \t:0129\x00\x7f\x80\xffH/.";
    const FRAGMENTS: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b" ",
        b"HTTP/1.1 200",
        b"Content-Length: 5\r\n",
        b"\xc3\xa9",
    ];
    (
        response(),
        mutations(INTERESTING, FRAGMENTS, LINE_END_EDITS, 3),
    )
        .prop_map(|(r, muts)| {
            let mut bytes = r.bytes();
            for m in &muts {
                m.apply(&mut bytes);
            }
            bytes
        })
}

proptest! {
    #![proptest_config(config(1))]

    /// Generated responses (no reason, an empty one, obs-text in it, HTTP/1.x):
    /// accepted, with the status, the raw reason bytes and the framing of
    /// RFC 9112 §6.3.
    #[test]
    fn response_reason_is_the_raw_bytes(r in response()) {
        let buf = r.bytes();
        let h = match ResponseHead::parse(&buf, usize::MAX, r.head_request) {
            Ok(Some(h)) => h,
            other => return Err(TestCaseError::fail(format!(
                "valid response refused ({:?}): {}",
                other.map(|h| h.map(|h| h.status)),
                show(&buf)
            ))),
        };
        prop_assert_eq!(h.status, r.code);
        prop_assert_eq!(&buf[h.reason.clone()], r.reason.as_ref().map_or(&[][..], |r| &r[..]));
        prop_assert_eq!(h.framing, r.framing());
        check_response(&buf, usize::MAX, &h)?;
    }

    /// Any bytes and mutated responses: no panic, ranges inside, and the
    /// reason is what the status line holds after the code.
    #[test]
    fn response_ranges_stay_inside(
        buf in prop_oneof![1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Raw), 3 => mutated_response()],
        limit in limit(),
        head_request in any::<bool>(),
    ) {
        match ResponseHead::parse(&buf, limit, head_request) {
            Ok(Some(h)) => check_response(&buf, limit, &h)?,
            Ok(None) => prop_assert!(buf.len() < limit),
            Err(_) => {}
        }
    }
}

#[test]
fn head_errors_are_the_documented_ones() {
    // Keeps `HeadError` in use here and pins the kinds the model relies on.
    let too_many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\nHost: h\r\n{too_many}\r\n");
    assert!(matches!(
        RequestHead::parse(head.as_bytes(), 1 << 20),
        Err(HeadError::TooManyFields)
    ));
    assert!(matches!(
        RequestHead::parse(b"GET / HTTP/2.0\r\n\r\n", 1 << 16),
        Err(HeadError::UnsupportedVersion)
    ));
}
