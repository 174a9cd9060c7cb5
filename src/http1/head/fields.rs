//! The fields of a head: what each means to the proxy (`FieldKind`), the
//! list of them with the `Connection` options read once, and the bytes a
//! name and a value are made of.

use std::cmp::Ordering;
use std::ops::Range;

use super::{span, HeadError, ROOM};

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
    pub(super) fn of(name: &[u8]) -> FieldKind {
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
pub(super) fn same_name(name: &[u8], known: &[u8]) -> bool {
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
    pub(super) fn collect(
        buf: &[u8],
        headers: &[httparse::Header<'_>],
    ) -> Result<Fields, HeadError> {
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
    pub(super) fn of_list(list: Vec<Field>, buf: &[u8]) -> Fields {
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

    pub(super) fn all<'a, 'b: 'a>(
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
    pub(super) fn persistent(&self, minor: u8) -> bool {
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
    pub(super) fn chunked_last(&self, buf: &[u8]) -> Option<bool> {
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
    pub(super) fn only_chunked(&self, buf: &[u8]) -> bool {
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
pub(super) fn pooled_list(n: usize) -> Vec<Field> {
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
pub(super) fn cmp_ignore_case(a: &[u8], b: &[u8]) -> Ordering {
    #[cfg(test)]
    super::tests::count_comparison();
    a.len().cmp(&b.len()).then_with(|| {
        a.iter()
            .map(u8::to_ascii_lowercase)
            .cmp(b.iter().map(u8::to_ascii_lowercase))
    })
}

/// A non-empty run of ASCII digits that fits in a u64.
pub(super) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}
