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

use std::cmp::Ordering;
use std::ops::Range;

use target::{check_host, target_form};

/// Most fields in one head; more is answered 431.
pub const MAX_FIELDS: usize = 128;

/// Fields Tether may add to a request on its way to a backend
/// (`X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`, one spare): room
/// for them when Tether reads back a head it wrote (`parse_forwarded`).
pub const ADDED_FIELDS: usize = 4;

/// Room for the most fields any head may have here.
const ROOM: usize = MAX_FIELDS + ADDED_FIELDS;

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
    /// `Mcp-Method` (2026-07-28): the JSON-RPC method, for routing.
    McpMethod,
    /// `Mcp-Name` (2026-07-28): the tool, prompt, resource or task a request names.
    McpName,
    /// `MCP-Protocol-Version`.
    ProtocolVersion,
    /// The name of a field Tether reads, with `_` for `-` (`Mcp_Session_Id`):
    /// CGI-style servers read it as that field, so a request with one is
    /// refused (it could carry a session id or a length past Tether's checks).
    Confusable,
}

impl FieldKind {
    /// By length first: one or two comparisons per field, not sixteen.
    fn of(name: &[u8]) -> FieldKind {
        let is = |known: &[u8]| same_name(name, known);
        match name.len() {
            2 if is(b"te") => FieldKind::HopByHop,
            4 if is(b"host") => FieldKind::Host,
            6 if is(b"expect") => FieldKind::Expect,
            7 if is(b"trailer") || is(b"upgrade") => FieldKind::HopByHop,
            8 if is(b"mcp-name") => FieldKind::McpName,
            10 if is(b"connection") => FieldKind::Connection,
            10 if is(b"keep-alive") => FieldKind::HopByHop,
            10 if is(b"mcp-method") => FieldKind::McpMethod,
            12 if is(b"content-type") => FieldKind::ContentType,
            14 if is(b"content-length") => FieldKind::ContentLength,
            14 if is(b"mcp-session-id") => FieldKind::SessionId,
            15 if is(b"x-forwarded-for") => FieldKind::ForwardedFor,
            16 if is(b"proxy-connection") => FieldKind::HopByHop,
            17 if is(b"transfer-encoding") => FieldKind::TransferEncoding,
            17 if is(b"x-forwarded-proto") => FieldKind::ForwardedProto,
            20 if is(b"mcp-protocol-version") => FieldKind::ProtocolVersion,
            _ if name.contains(&b'_') => {
                let dashed: Vec<u8> = name
                    .iter()
                    .map(|&b| if b == b'_' { b'-' } else { b })
                    .collect();
                match FieldKind::of(&dashed) {
                    FieldKind::Other => FieldKind::Other,
                    _ => FieldKind::Confusable,
                }
            }
            _ => FieldKind::Other,
        }
    }
}

/// Whether a field name (a token, as the parser checked) equals `known`, a
/// lowercase name of letters and `-`, without regard to case. For token
/// bytes `b | 0x20 == k` holds exactly when `b` is `k` or its capital (no
/// other token byte maps onto a lowercase letter or `-`), so eight bytes are
/// compared at a time: this ran for every field of both heads.
fn same_name(name: &[u8], known: &[u8]) -> bool {
    const LOWER: u64 = 0x2020_2020_2020_2020;
    if name.len() != known.len() {
        return false;
    }
    let mut a = name.chunks_exact(8);
    let mut b = known.chunks_exact(8);
    for (x, y) in a.by_ref().zip(b.by_ref()) {
        let x = u64::from_le_bytes(x.try_into().unwrap_or_default());
        let y = u64::from_le_bytes(y.try_into().unwrap_or_default());
        if x | LOWER != y {
            return false;
        }
    }
    a.remainder()
        .iter()
        .zip(b.remainder())
        .all(|(&x, &y)| x | 0x20 == y)
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

/// The fields of a parsed head, shared by requests and responses.
#[derive(Debug, Clone)]
pub struct Fields {
    pub list: Vec<Field>,
    /// `Connection` lists `close`.
    close: bool,
    /// `Connection` lists `keep-alive`.
    keep_alive: bool,
}

impl Fields {
    fn collect(buf: &[u8], headers: &[httparse::Header<'_>]) -> Result<Fields, HeadError> {
        let mut list = pooled_list(headers.len());
        for h in headers {
            let name = span(buf, h.name.as_bytes())
                .ok_or(HeadError::Malformed("field name outside the head"))?;
            // An empty value has no bytes to point at; any empty range will do.
            let value = span(buf, h.value).unwrap_or(0..0);
            list.push(Field {
                kind: FieldKind::of(&buf[name.clone()]),
                name,
                value,
            });
        }
        Ok(Fields::of_list(list, buf))
    }

    /// The fields of `list`, whose kinds are set: `Connection` read.
    fn of_list(list: Vec<Field>, buf: &[u8]) -> Fields {
        let mut fields = Fields {
            list,
            close: false,
            keep_alive: false,
        };
        fields.read_connection(buf);
        fields
    }

    /// Reads the `Connection` options: `close`, `keep-alive`, and the names
    /// of fields meant for this hop only (RFC 9110 §7.6.1), which become
    /// [`FieldKind::HopByHop`]. Linear in the tokens: each is looked up in
    /// the (at most [`MAX_FIELDS`]) field names sorted once, so a head with
    /// thousands of tokens costs no more than a few comparisons per token.
    fn read_connection(&mut self, buf: &[u8]) {
        let mut named = false;
        for f in self.list.iter().filter(|f| f.kind == FieldKind::Connection) {
            for t in tokens(&buf[f.value.clone()]) {
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else {
                    named = true;
                }
            }
        }
        if !named {
            return;
        }
        let name = |i: u8| &buf[self.list[usize::from(i)].name.clone()];
        let mut others = [0u8; ROOM];
        let mut n = 0;
        for (i, f) in self.list.iter().enumerate() {
            if f.kind == FieldKind::Other {
                others[n] = i as u8; // i < ROOM <= 256
                n += 1;
            }
        }
        let others = &mut others[..n];
        others.sort_unstable_by(|&a, &b| cmp_ignore_case(name(a), name(b)));
        let mut hop = [false; ROOM];
        for f in self.list.iter().filter(|f| f.kind == FieldKind::Connection) {
            for t in tokens(&buf[f.value.clone()]) {
                let first = others.partition_point(|&i| cmp_ignore_case(name(i), t).is_lt());
                for &i in others[first..]
                    .iter()
                    .take_while(|&&i| cmp_ignore_case(name(i), t).is_eq())
                {
                    hop[usize::from(i)] = true;
                }
            }
        }
        for (f, hop) in self.list.iter_mut().zip(hop) {
            if hop {
                f.kind = FieldKind::HopByHop;
            }
        }
    }

    /// The first value of a field of this kind.
    pub fn get<'a>(&self, buf: &'a [u8], kind: FieldKind) -> Option<&'a [u8]> {
        self.list
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| &buf[f.value.clone()])
    }

    /// How many fields of this kind there are.
    pub fn count(&self, kind: FieldKind) -> usize {
        self.list.iter().filter(|f| f.kind == kind).count()
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
    fn persistent(&self, minor: u8) -> bool {
        !self.close && (minor > 0 || self.keep_alive)
    }

    /// The one `Content-Length`, if any: every value must be the same number.
    pub fn content_length(&self, buf: &[u8]) -> Result<Option<u64>, HeadError> {
        // The usual case: one field, one plain number.
        let mut lengths = self
            .list
            .iter()
            .filter(|f| f.kind == FieldKind::ContentLength);
        match (lengths.next(), lengths.next()) {
            (None, _) => return Ok(None),
            (Some(f), None) => {
                if let Some(n) = parse_decimal(&buf[f.value.clone()]) {
                    return Ok(Some(n));
                }
            }
            _ => {}
        }
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

    /// Whether the last transfer coding is `chunked` (`None` if no field; a
    /// field with no coding in it still counts as one whose last is not).
    fn chunked_last(&self, buf: &[u8]) -> Option<bool> {
        let mut last = None;
        for value in self.all(buf, FieldKind::TransferEncoding) {
            match tokens(value).last() {
                Some(t) => last = Some(t.eq_ignore_ascii_case(b"chunked")),
                None => last = last.or(Some(false)),
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

/// Field lists are reused per thread (two heads per request).
const KEPT_LIST: usize = 32;

/// A field list from the thread's free ones, or a new one for about `n`.
fn pooled_list(n: usize) -> Vec<Field> {
    FREE_LISTS
        .try_with(|free| free.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(KEPT_LIST.min(n.max(16))))
}

thread_local! {
    static FREE_LISTS: std::cell::RefCell<Vec<Vec<Field>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for Fields {
    fn drop(&mut self) {
        let mut list = std::mem::take(&mut self.list);
        if list.capacity() == 0 || list.capacity() > KEPT_LIST {
            return;
        }
        list.clear();
        let _ = FREE_LISTS.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < 64 {
                free.push(list);
            }
        });
    }
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

/// A `tchar` (RFC 9110 §5.6.2): what a field name is made of.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
            || matches!(
                b as u8,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// A byte a field value may hold (RFC 9110 §5.5: VCHAR, SP, HTAB,
/// obs-text), as an HTTP/1.1 parse takes it.
pub fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

/// The comma-separated tokens of a list-valued field, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A total order on field names, equal exactly when they are equal without
/// regard to ASCII case: by length, then bytewise lowercased (what the
/// binary search in `read_connection` needs; not alphabetical).
fn cmp_ignore_case(a: &[u8], b: &[u8]) -> Ordering {
    #[cfg(test)]
    tests::count_comparison();
    a.len().cmp(&b.len()).then_with(|| {
        a.iter()
            .map(u8::to_ascii_lowercase)
            .cmp(b.iter().map(u8::to_ascii_lowercase))
    })
}

/// A non-empty run of ASCII digits that fits in a u64.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

mod target;

#[cfg(test)]
mod tests;
