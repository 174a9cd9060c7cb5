//! Request and response heads: parsed once, kept as ranges of the bytes that
//! arrived, with each field tagged by what a proxy must do with it.
//!
//! Framing follows RFC 9112 §6.3 strictly on the client side (request
//! smuggling): `Transfer-Encoding` other than plain `chunked` is refused, and
//! so is `Transfer-Encoding` together with `Content-Length` or differing
//! `Content-Length` values (§6.3 allows rejecting both). A request must carry
//! exactly one valid `Host` (HTTP/1.1) or at most one (HTTP/1.0), and its
//! target must be in origin form (`/path?query`), absolute form with an
//! `http`/`https` scheme (whose authority then replaces `Host`, §3.2.2), or
//! `*` for `OPTIONS` (§3.2).
//!
//! Every range stored here is proved to lie inside the parsed buffer
//! ([`span`]): `httparse` may hand back a string that is not part of the
//! input (an empty reason phrase, for one), and an offset computed from its
//! address would be garbage.

use std::ops::Range;

#[cfg(test)]
use fields::same_name;
pub use fields::{is_tchar, is_value_byte, tokens, Field, FieldKind, Fields};
use fields::{parse_decimal, pooled_list};
use target::{check_host, target_form};

/// Most fields in one head; more is answered 431.
pub const MAX_FIELDS: usize = 128;

/// Fields Tether may add to a request on its way to a backend
/// (`X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`, one spare): room
/// for them when Tether reads back a head it wrote (`parse_forwarded`).
pub const ADDED_FIELDS: usize = 4;

/// Room for the most fields any head may have here.
const ROOM: usize = MAX_FIELDS + ADDED_FIELDS;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the server closes the connection.
    UntilClose,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than the limit")]
    TooLarge,
    #[error("more than {MAX_FIELDS} header fields")]
    TooManyFields,
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
    /// A major version other than 1 (RFC 9110 §2.5: 505).
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
}

/// Where `sub` lies in `buf`, if it is a part of it. `httparse` returns
/// slices of its input, but not always (an empty reason phrase is a static
/// `""`): offsets are only taken from slices proved to be inside.
pub fn span(buf: &[u8], sub: &[u8]) -> Option<Range<usize>> {
    let start = (sub.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let end = start.checked_add(sub.len())?;
    (end <= buf.len()).then_some(start..end)
}

/// The form of a request target (RFC 9112 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`: the target is the origin form.
    Origin,
    /// `http://authority/path?query`. `path` is what follows the authority
    /// (empty, or starting with `?`, means the path `/`).
    Absolute {
        authority: Range<usize>,
        path: Range<usize>,
    },
    /// `*`, for `OPTIONS`.
    Asterisk,
}

/// Where a writer of a request head put its parts (`RequestHead::from_written`).
pub struct WrittenRequest {
    method: Range<usize>,
    target: Range<usize>,
    list: Vec<Field>,
}

impl WrittenRequest {
    pub fn new(method: Range<usize>, target: Range<usize>) -> WrittenRequest {
        WrittenRequest {
            method,
            target,
            list: pooled_list(16),
        }
    }

    /// A field line written: where its name and its value are.
    pub fn field(&mut self, name: Range<usize>, value: Range<usize>) {
        self.list.push(Field {
            name,
            value,
            kind: FieldKind::Other,
        });
    }
}

/// A client's request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Bytes of the head, including the empty line.
    pub len: usize,
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub form: TargetForm,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (and later 1.x minor versions, which
    /// are served as 1.1: RFC 9110 §2.5).
    pub minor: u8,
    pub fields: Fields,
    pub framing: Framing,
    /// Whether the client lets the connection stay open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    /// Parses a request head at the start of `buf`; `Ok(None)` means more
    /// bytes are needed. `limit` bounds the head's size.
    pub fn parse(buf: &[u8], limit: usize) -> Result<Option<RequestHead>, HeadError> {
        RequestHead::parse_within::<MAX_FIELDS>(buf, limit)
    }

    /// As `parse`, for a request head Tether wrote itself on its way to a
    /// backend (read back by the HTTP/2 upstream bridge): a client's head
    /// of `MAX_FIELDS` fields with the ones Tether adds still fits.
    pub fn parse_forwarded(buf: &[u8], limit: usize) -> Result<Option<RequestHead>, HeadError> {
        RequestHead::parse_within::<ROOM>(buf, limit)
    }

    /// As `parse`, for a request head Tether wrote itself from a client's
    /// request (an HTTP/2 stream's), `added` of its fields being Tether's:
    /// the client's own are held to `MAX_FIELDS`.
    pub fn parse_written(
        buf: &[u8],
        limit: usize,
        added: usize,
    ) -> Result<Option<RequestHead>, HeadError> {
        let head = RequestHead::parse_within::<ROOM>(buf, limit)?;
        match head {
            Some(h) if h.fields.list.len() > MAX_FIELDS + added.min(ADDED_FIELDS) => {
                Err(HeadError::TooManyFields)
            }
            head => Ok(head),
        }
    }

    fn parse_within<const FIELDS: usize>(
        buf: &[u8],
        limit: usize,
    ) -> Result<Option<RequestHead>, HeadError> {
        // Uninitialized: filling 128 empty headers was ~400 instructions
        // a parse, more than the rest of this function.
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(len)) if len <= limit => len,
            Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) if buf.len() >= limit => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
            Err(httparse::Error::Version) => {
                return parse_as_http11(
                    buf,
                    limit,
                    Line::Request,
                    RequestHead::parse_within::<FIELDS>,
                )
            }
            Err(_) => return Err(HeadError::Malformed("not an HTTP/1 request")),
        };
        let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
            return Ok(None);
        };
        let inside = |s: &str| span(buf, s.as_bytes()).ok_or(HeadError::Malformed("request line"));
        let (method, target) = (inside(method)?, inside(path)?);
        let fields = Fields::collect(buf, req.headers)?;
        RequestHead::interpret(buf, len, method, target, minor, fields).map(Some)
    }

    /// As `parse_written` would read `buf`, a request head Tether wrote
    /// itself (an HTTP/2 stream's, `len` bytes) where it noted its parts
    /// (`written`), without tokenising it again. The method, target and
    /// values are the `http` crate's, which hold what a parse takes; a
    /// name is held to a token (the `h2` crate takes names HTTP/1.1
    /// refuses: `"`); then what the bytes decide (limits, framing, `Host`,
    /// `Connection`).
    pub fn from_written(
        buf: &[u8],
        len: usize,
        written: WrittenRequest,
        limit: usize,
        added: usize,
    ) -> Result<RequestHead, HeadError> {
        let WrittenRequest {
            method,
            target,
            mut list,
        } = written;
        // In the order a parse finds them: a field it cannot read or more
        // than it has room for (whichever comes first), a head over the
        // limit, then what the head says, then more of the client's fields
        // than allowed (`parse_written`).
        let len_in = len.min(buf.len());
        let within = |r: &Range<usize>| r.start <= r.end && r.end <= len_in;
        if !(within(&method) && within(&target)) {
            return Err(HeadError::Malformed("request line"));
        }
        // A value is an `http::HeaderValue`'s, which holds exactly the
        // bytes a parse takes (`is_value_byte`); a name, an
        // `http::HeaderName`'s, is a token or holds a `"` (tests hold the
        // crate to both). So the names are looked at only when the head
        // has a `"` at all (that look costs about 500 instructions a
        // request; a scan of each name cost 800, of each value 1,600 more).
        let quoted = buf[..len_in].contains(&b'"');
        for (i, f) in list.iter().enumerate() {
            if i == ROOM {
                return Err(HeadError::TooManyFields);
            }
            if !(within(&f.name) && within(&f.value)) {
                return Err(HeadError::Malformed("field outside the head"));
            }
            let name = &buf[f.name.clone()];
            if name.is_empty() || quoted && !name.iter().all(|&b| is_tchar(b)) {
                return Err(HeadError::Malformed("not an HTTP/1 request"));
            }
        }
        if len > limit || len > buf.len() {
            return Err(HeadError::TooLarge);
        }
        for f in &mut list {
            // The value without the whitespace around it, as a parser reads it.
            let value = &buf[f.value.clone()];
            let lead = value.len() - value.trim_ascii_start().len();
            let trail = value.len() - value.trim_ascii_end().len();
            f.value = if lead == value.len() {
                f.value.start..f.value.start
            } else {
                f.value.start + lead..f.value.end - trail
            };
            f.kind = FieldKind::of(&buf[f.name.clone()]);
        }
        let head = RequestHead::interpret(buf, len, method, target, 1, Fields::of_list(list, buf))?;
        if head.fields.list.len() > MAX_FIELDS + added.min(ADDED_FIELDS) {
            return Err(HeadError::TooManyFields);
        }
        Ok(head)
    }

    /// The request head of the parts a parse or a writer found.
    fn interpret(
        buf: &[u8],
        len: usize,
        method: Range<usize>,
        target: Range<usize>,
        minor: u8,
        fields: Fields,
    ) -> Result<RequestHead, HeadError> {
        let form = target_form(buf, target.clone(), &buf[method.clone()])?;
        if fields.count(FieldKind::Confusable) > 0 {
            return Err(HeadError::Malformed(
                "'_' for '-' in the name of a field Tether reads",
            ));
        }
        check_host(buf, &fields, minor, &form)?;
        let framing = match (fields.chunked_last(buf), fields.content_length(buf)?) {
            (Some(_), Some(_)) => {
                return Err(HeadError::Malformed(
                    "transfer-encoding with content-length",
                ))
            }
            (Some(_), None) if minor == 0 => {
                return Err(HeadError::Malformed("transfer-encoding in HTTP/1.0"))
            }
            // RFC 9112 §6.3: where the body ends cannot be known: 400.
            (Some(false), None) => {
                return Err(HeadError::Malformed(
                    "chunked is not the final transfer coding",
                ))
            }
            // A coding before `chunked` that Tether does not decode: 501.
            (Some(true), None) if !fields.only_chunked(buf) => {
                return Err(HeadError::UnsupportedCoding)
            }
            (Some(_), None) => Framing::Chunked,
            (None, Some(0)) | (None, None) => Framing::None,
            (None, Some(n)) => Framing::Length(n),
        };
        let keep_alive = fields.persistent(minor);
        let expect_continue = fields
            .get(buf, FieldKind::Expect)
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
        Ok(RequestHead {
            len,
            method,
            target,
            form,
            minor: minor.min(1),
            fields,
            framing,
            keep_alive,
            expect_continue,
        })
    }

    /// The authority an absolute-form target names: it replaces `Host`.
    pub fn target_authority(&self) -> Option<Range<usize>> {
        match &self.form {
            TargetForm::Absolute { authority, .. } => Some(authority.clone()),
            _ => None,
        }
    }
}

/// A backend's response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    /// The reason phrase as the backend sent it (possibly empty, possibly
    /// with obs-text bytes, which are relayed unchanged).
    pub reason: Range<usize>,
    pub fields: Fields,
    pub framing: Framing,
    /// Whether the connection can carry another request after this body.
    pub keep_alive: bool,
    /// The head has no body here (HEAD, 1xx, 204, 304) yet declares one: a
    /// backend that sends it anyway leaves bytes nobody asked for.
    pub declares_unsent_body: bool,
}

impl ResponseHead {
    /// Parses a response head at the start of `buf` to a request whose method
    /// was HEAD or not (a HEAD response has no body whatever it says).
    pub fn parse(
        buf: &[u8],
        limit: usize,
        head_request: bool,
    ) -> Result<Option<ResponseHead>, HeadError> {
        ResponseHead::parse_within::<MAX_FIELDS>(buf, limit, head_request)
    }

    /// As `parse`, for a response head Tether wrote itself for a client (read
    /// back by the HTTP/2 stream's writer): a backend's head of `MAX_FIELDS`
    /// fields with the ones Tether adds (framing, `connection`, a sealed
    /// session id, a cookie) still fits.
    pub fn parse_written(
        buf: &[u8],
        limit: usize,
        head_request: bool,
    ) -> Result<Option<ResponseHead>, HeadError> {
        ResponseHead::parse_within::<ROOM>(buf, limit, head_request)
    }

    fn parse_within<const FIELDS: usize>(
        buf: &[u8],
        limit: usize,
        head_request: bool,
    ) -> Result<Option<ResponseHead>, HeadError> {
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
            Ok(httparse::Status::Complete(len)) if len <= limit => len,
            Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) if buf.len() >= limit => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
            Err(httparse::Error::Version) => {
                return parse_as_http11(buf, limit, Line::Status, |b, l| {
                    ResponseHead::parse_within::<FIELDS>(b, l, head_request)
                })
            }
            Err(_) => return Err(HeadError::Malformed("not an HTTP/1 response")),
        };
        let (Some(status), Some(minor)) = (resp.code, resp.version) else {
            return Ok(None);
        };
        let reason = raw_reason(buf);
        let fields = Fields::collect(buf, resp.headers)?;
        let framing =
            if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                Framing::None
            } else {
                match fields.chunked_last(buf) {
                    // Tether decodes the chunked coding and re-frames the body
                    // for the client; another coding would reach it unlabelled.
                    Some(_) if !fields.only_chunked(buf) => {
                        return Err(HeadError::UnsupportedCoding)
                    }
                    Some(_) => Framing::Chunked,
                    None => match fields.content_length(buf)? {
                        Some(n) => Framing::Length(n),
                        None => Framing::UntilClose,
                    },
                }
            };
        // Both `Transfer-Encoding` and `Content-Length`, or a transfer coding
        // in HTTP/1.0: where the body ends cannot be trusted (RFC 9112 §6.1,
        // §6.3), so the connection is not reused.
        let ambiguous = fields.chunked_last(buf).is_some()
            && (minor == 0 || fields.get(buf, FieldKind::ContentLength).is_some());
        let keep_alive = framing != Framing::UntilClose && !ambiguous && fields.persistent(minor);
        let declares_unsent_body = framing == Framing::None
            && (fields.chunked_last(buf).is_some()
                || fields.content_length(buf).ok().flatten().unwrap_or(0) > 0);
        Ok(Some(ResponseHead {
            len,
            status,
            reason,
            fields,
            framing,
            keep_alive,
            declares_unsent_body,
        }))
    }

    /// The idle time the backend announces in `Keep-Alive: timeout=N`, in seconds.
    pub fn keep_alive_timeout(&self, buf: &[u8]) -> Option<u64> {
        self.fields
            .list
            .iter()
            .filter(|f| buf[f.name.clone()].eq_ignore_ascii_case(b"keep-alive"))
            .flat_map(|f| tokens(&buf[f.value.clone()]))
            .find_map(|param| {
                let (name, value) = param.split_at(param.iter().position(|&b| b == b'=')?);
                let value = value[1..].trim_ascii();
                name.trim_ascii()
                    .eq_ignore_ascii_case(b"timeout")
                    .then(|| parse_decimal(value))?
            })
    }
}

/// Which start line a head has.
#[derive(Clone, Copy)]
enum Line {
    /// `method SP target SP HTTP/1.x`
    Request,
    /// `HTTP/1.x SP code [SP reason]`
    Status,
}

/// Where the start line begins: after the empty lines `httparse` skips.
fn line_start(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match buf.get(at..) {
            Some([b'\r', b'\n', ..]) => at += 2,
            Some([b'\n', ..]) => at += 1,
            _ => return at,
        }
    }
}

/// A head whose version `httparse` refused. `HTTP/1.x` with x > 1 is served
/// as HTTP/1.1 (RFC 9110 §2.5: a recipient of a higher minor version treats
/// it as the highest it implements); another major version is refused (505);
/// anything else is malformed, as soon as a byte shows it. The head is parsed
/// again from a copy with the minor digit replaced, which keeps every byte
/// offset (and so every range) valid in the original buffer. Rare, so the
/// copy does not matter.
fn parse_as_http11<T>(
    buf: &[u8],
    limit: usize,
    line: Line,
    parse: impl Fn(&[u8], usize) -> Result<Option<T>, HeadError>,
) -> Result<Option<T>, HeadError> {
    let malformed = HeadError::Malformed("not an HTTP/1 message");
    let more = || {
        if buf.len() >= limit {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        }
    };
    let start = line_start(buf);
    let version_at = match line {
        Line::Status => start,
        // After `method SP target SP` (httparse accepted both).
        Line::Request => {
            let mut spaces = buf[start..]
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b' ')
                .map(|(i, _)| start + i + 1);
            match (spaces.next(), spaces.next()) {
                (Some(_), Some(at)) => at,
                _ => return more(),
            }
        }
    };
    // `HTTP/D.D`, then what must follow it.
    const SHAPE: &[u8; 8] = b"HTTP/#.#";
    let version = &buf[version_at..buf.len().min(version_at + 8)];
    let fits = version.iter().zip(SHAPE).all(|(&b, &want)| {
        if want == b'#' {
            b.is_ascii_digit()
        } else {
            b == want
        }
    });
    if !fits {
        return Err(malformed);
    }
    let Some(&after) = buf.get(version_at + 8) else {
        return more();
    };
    let ends_right = match line {
        Line::Request => after == b'\r' || after == b'\n',
        Line::Status => after == b' ' || after == b'\r' || after == b'\n',
    };
    match (ends_right, version[5], version[7]) {
        (false, _, _) => Err(malformed),
        // A start line longer than the limit: the copy below would not hold it.
        (true, _, _) if version_at + 9 > limit => Err(HeadError::TooLarge),
        // 1.0 and 1.1 were refused for another reason.
        (true, b'1', b'0' | b'1') => Err(malformed),
        (true, b'1', _) => {
            let mut copy = buf[..buf.len().min(limit.saturating_add(1))].to_vec();
            copy[version_at + 7] = b'1';
            parse(&copy, limit)
        }
        (true, _, _) => Err(HeadError::UnsupportedVersion),
    }
}

/// The reason phrase of a complete status line, from the bytes themselves:
/// after `HTTP/1.x SP DDD` and one SP, to the line's end.
fn raw_reason(buf: &[u8]) -> Range<usize> {
    let start = line_start(buf);
    let Some(len) = buf[start..].iter().position(|&b| b == b'\n') else {
        return 0..0;
    };
    let mut end = start + len;
    if end > start && buf[end - 1] == b'\r' {
        end -= 1;
    }
    (start + 13).min(end)..end
}

/// Whether `bytes` hold the empty line that ends a head (`\n\n` or
/// `\n\r\n`): worth parsing again once they do.
pub fn may_end_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .any(|w| w[0] == b'\n' && (w[1] == b'\n' || w[1] == b'\r'))
}

mod fields;
mod target;

#[cfg(test)]
mod tests;
