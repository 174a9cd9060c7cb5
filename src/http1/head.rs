//! Request and response heads: parsed once, kept as ranges of the bytes that
//! arrived, with each field tagged by what a proxy must do with it.
//!
//! Framing follows RFC 9112 §6.3 strictly on the client side (request
//! smuggling): `Transfer-Encoding` other than plain `chunked` is refused, and
//! so is `Transfer-Encoding` together with `Content-Length` or differing
//! `Content-Length` values (§6.3 allows rejecting both).

use std::ops::Range;

/// Most fields in one head; more is answered 431.
pub const MAX_FIELDS: usize = 128;

/// What a field means to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, and any
    /// field named in `Connection`: meant for one hop only.
    HopByHop,
    Expect,
    SessionId,
    ContentType,
    ForwardedFor,
    ForwardedProto,
}

impl FieldKind {
    fn of(name: &[u8]) -> FieldKind {
        const KINDS: [(&[u8], FieldKind); 14] = [
            (b"host", FieldKind::Host),
            (b"content-length", FieldKind::ContentLength),
            (b"transfer-encoding", FieldKind::TransferEncoding),
            (b"connection", FieldKind::Connection),
            (b"keep-alive", FieldKind::HopByHop),
            (b"proxy-connection", FieldKind::HopByHop),
            (b"te", FieldKind::HopByHop),
            (b"trailer", FieldKind::HopByHop),
            (b"upgrade", FieldKind::HopByHop),
            (b"expect", FieldKind::Expect),
            (b"mcp-session-id", FieldKind::SessionId),
            (b"content-type", FieldKind::ContentType),
            (b"x-forwarded-for", FieldKind::ForwardedFor),
            (b"x-forwarded-proto", FieldKind::ForwardedProto),
        ];
        KINDS
            .iter()
            .find(|(known, _)| known.len() == name.len() && known.eq_ignore_ascii_case(name))
            .map_or(FieldKind::Other, |&(_, kind)| kind)
    }
}

/// One header field: where its name and value are in the head's bytes.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
    pub kind: FieldKind,
}

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
}

/// The fields of a parsed head, shared by requests and responses.
#[derive(Debug, Clone)]
pub struct Fields {
    pub list: Vec<Field>,
}

impl Fields {
    fn collect(buf: &[u8], headers: &[httparse::Header<'_>]) -> Fields {
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let mut list: Vec<Field> = headers
            .iter()
            .map(|h| Field {
                name: at(h.name.as_bytes()),
                value: at(h.value),
                kind: FieldKind::of(h.name.as_bytes()),
            })
            .collect();
        // Fields named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
        let named: Vec<Range<usize>> = list
            .iter()
            .filter(|f| f.kind == FieldKind::Connection)
            .flat_map(|f| tokens(&buf[f.value.clone()]).map(&at))
            .collect();
        for token in named {
            let token = &buf[token];
            for f in list.iter_mut().filter(|f| f.kind == FieldKind::Other) {
                if buf[f.name.clone()].eq_ignore_ascii_case(token) {
                    f.kind = FieldKind::HopByHop;
                }
            }
        }
        Fields { list }
    }

    /// The first value of a field of this kind.
    pub fn get<'a>(&self, buf: &'a [u8], kind: FieldKind) -> Option<&'a [u8]> {
        self.list
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| &buf[f.value.clone()])
    }

    fn all<'a, 'b: 'a>(
        &'b self,
        buf: &'a [u8],
        kind: FieldKind,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.list
            .iter()
            .filter(move |f| f.kind == kind)
            .map(move |f| &buf[f.value.clone()])
    }

    /// Whether the connection persists after this message (RFC 9112 §9.3):
    /// never with `close`; in HTTP/1.0 only with `keep-alive`.
    fn persistent(&self, buf: &[u8], minor: u8) -> bool {
        !self.connection_has(buf, b"close")
            && (minor > 0 || self.connection_has(buf, b"keep-alive"))
    }

    /// Whether a `Connection` field lists `option` (`close`, `keep-alive`).
    fn connection_has(&self, buf: &[u8], option: &[u8]) -> bool {
        self.all(buf, FieldKind::Connection)
            .flat_map(tokens)
            .any(|t| t.eq_ignore_ascii_case(option))
    }

    /// The one `Content-Length`, if any: every value must be the same number.
    fn content_length(&self, buf: &[u8]) -> Result<Option<u64>, HeadError> {
        let mut length = None;
        for value in self.all(buf, FieldKind::ContentLength) {
            for item in value.split(|&b| b == b',') {
                let n = parse_decimal(item.trim_ascii())
                    .ok_or(HeadError::Malformed("invalid content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Malformed("conflicting content-length"));
                }
                length = Some(n);
            }
        }
        Ok(length)
    }

    /// Whether the last transfer coding is `chunked` (`None` if no field).
    fn chunked_last(&self, buf: &[u8]) -> Option<bool> {
        let mut last = None;
        for value in self.all(buf, FieldKind::TransferEncoding) {
            if let Some(t) = tokens(value).last() {
                last = Some(t.eq_ignore_ascii_case(b"chunked"));
            }
        }
        last
    }

    /// Whether the codings are exactly one `chunked` (all Tether accepts from clients).
    fn only_chunked(&self, buf: &[u8]) -> bool {
        let mut codings = self.all(buf, FieldKind::TransferEncoding).flat_map(tokens);
        codings
            .next()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none()
    }
}

/// A client's request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Bytes of the head, including the empty line.
    pub len: usize,
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
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
        let mut headers = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= limit => len,
            Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) if buf.len() >= limit => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
            Err(_) => return Err(HeadError::Malformed("not an HTTP/1 request")),
        };
        let base = buf.as_ptr() as usize;
        let at = |s: &str| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
            return Ok(None);
        };
        let (method, target) = (at(method), at(path));
        let fields = Fields::collect(buf, req.headers);
        let framing = match (fields.chunked_last(buf), fields.content_length(buf)?) {
            (Some(_), Some(_)) => {
                return Err(HeadError::Malformed(
                    "transfer-encoding with content-length",
                ))
            }
            (Some(_), None) if minor == 0 => {
                return Err(HeadError::Malformed("transfer-encoding in HTTP/1.0"))
            }
            (Some(_), None) if !fields.only_chunked(buf) => {
                return Err(HeadError::UnsupportedCoding)
            }
            (Some(_), None) => Framing::Chunked,
            (None, Some(0)) | (None, None) => Framing::None,
            (None, Some(n)) => Framing::Length(n),
        };
        let keep_alive = fields.persistent(buf, minor);
        let expect_continue = fields
            .get(buf, FieldKind::Expect)
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
        Ok(Some(RequestHead {
            len,
            method,
            target,
            minor: minor.min(1),
            fields,
            framing,
            keep_alive,
            expect_continue,
        }))
    }
}

/// A backend's response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub reason: Range<usize>,
    pub fields: Fields,
    pub framing: Framing,
    /// Whether the connection can carry another request after this body.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// Parses a response head at the start of `buf` to a request whose method
    /// was HEAD or not (a HEAD response has no body whatever it says).
    pub fn parse(
        buf: &[u8],
        limit: usize,
        head_request: bool,
    ) -> Result<Option<ResponseHead>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= limit => len,
            Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) if buf.len() >= limit => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
            Err(_) => return Err(HeadError::Malformed("not an HTTP/1 response")),
        };
        let (Some(status), Some(minor)) = (resp.code, resp.version) else {
            return Ok(None);
        };
        let reason = resp.reason.map_or(0..0, |r| {
            let start = r.as_ptr() as usize - buf.as_ptr() as usize;
            start..start + r.len()
        });
        let fields = Fields::collect(buf, resp.headers);
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
        let keep_alive =
            framing != Framing::UntilClose && !ambiguous && fields.persistent(buf, minor);
        Ok(Some(ResponseHead {
            len,
            status,
            reason,
            fields,
            framing,
            keep_alive,
        }))
    }
}

/// The comma-separated tokens of a list-valued field, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A non-empty run of ASCII digits that fits in a u64.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests;
