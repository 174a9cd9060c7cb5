//! The legacy transport's first SSE event: find it, and rewrite its endpoint URL.
//!
//! Written by hand on purpose: the bytes we emit must be the server's bytes
//! with one value replaced (line ends, comments, `id:` fields and everything
//! after the event untouched), and it runs on every legacy stream, so a general
//! SSE parser that re-serialises events would be both wrong and slower.
//!
//! The scanner follows the WHATWG `text/event-stream` rules: lines end in
//! CRLF, LF or CR; a line starting with `:` is a comment; a leading UTF-8 BOM
//! is skipped; a blank line dispatches an event only if a `data` field was
//! seen. It is incremental, so bytes are looked at once however the stream is
//! chunked. It works on bytes and only turns a complete `data` line into text,
//! so a UTF-8 character split across chunks is never an issue.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The first event of a stream, as byte ranges into the scanned buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstEvent {
    /// One past the last byte of the event (its blank line's terminator included).
    pub end: usize,
    /// The value of the last `event` field, if any.
    pub event: Option<Range<usize>>,
    /// The value of each `data` field, in order.
    pub data: Vec<Range<usize>>,
}

/// Incremental scanner for the first dispatched event of an SSE stream.
#[derive(Debug, Default)]
pub struct FirstEventScanner {
    /// Start of the first byte not yet consumed as part of a line.
    pos: usize,
    /// The previous line ended in a CR that was the last byte seen: a LF that
    /// follows belongs to that terminator and is skipped.
    skip_lf: bool,
    event: Option<Range<usize>>,
    data: Vec<Range<usize>>,
}

impl FirstEventScanner {
    /// Looks at `buf` (everything received so far; it only ever grows) and
    /// returns the first event once its blank line has arrived.
    pub fn feed(&mut self, buf: &[u8]) -> Option<FirstEvent> {
        if self.pos == 0 && !self.skip_lf {
            if buf.len() < BOM.len() && BOM.starts_with(buf) {
                return None; // could still be a BOM
            }
            if buf.starts_with(BOM) {
                self.pos = BOM.len();
            }
        }
        loop {
            if self.skip_lf {
                match buf.get(self.pos) {
                    None => return None,
                    Some(b'\n') => self.pos += 1,
                    Some(_) => {}
                }
                self.skip_lf = false;
            }
            let rest = &buf[self.pos..];
            let eol = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
            let line = self.pos..self.pos + eol;
            let mut next = line.end + 1;
            if rest[eol] == b'\r' {
                match buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            self.pos = next;
            if line.is_empty() {
                if !self.data.is_empty() {
                    return Some(FirstEvent {
                        end: next,
                        event: self.event.take(),
                        data: std::mem::take(&mut self.data),
                    });
                }
                self.event = None; // a blank line without data dispatches nothing
                continue;
            }
            self.field(buf, line);
        }
    }

    fn field(&mut self, buf: &[u8], line: Range<usize>) {
        let text = &buf[line.clone()];
        if text[0] == b':' {
            return; // comment
        }
        let (name, value) = match text.iter().position(|&b| b == b':') {
            Some(colon) => {
                let mut start = line.start + colon + 1;
                if buf.get(start) == Some(&b' ') && start < line.end {
                    start += 1;
                }
                (&text[..colon], start..line.end)
            }
            None => (text, line.end..line.end),
        };
        match name {
            b"event" => self.event = Some(value),
            b"data" => self.data.push(value),
            _ => {} // id, retry and unknown fields change nothing here
        }
    }
}

/// Rewrites a legacy `endpoint` URL: the session parameter's value becomes
/// `seal(value)`, and an absolute URL naming the backend becomes relative
/// (clients reject an endpoint on another origin than the SSE URL's).
///
/// Returns `None` when the URL has no session parameter or sealing refused.
pub fn rewrite_endpoint(
    url: &str,
    backend_authority: &str,
    seal: impl FnOnce(&str) -> Option<String>,
) -> Option<String> {
    let url = strip_own_origin(url, backend_authority);
    let query_start = url.find('?')? + 1;
    let query_end = url[query_start..]
        .find('#')
        .map_or(url.len(), |i| query_start + i);
    // Exactly one plain session parameter, or the URL is left as it is.
    let value = crate::classify::query::legacy_param(&url[query_start..query_end]).ok()??;
    let value = query_start + value.start..query_start + value.end;
    let token = seal(&url[value.clone()])?;
    let mut out = String::with_capacity(url.len() + token.len());
    out.push_str(&url[..value.start]);
    out.push_str(&token);
    out.push_str(&url[value.end..]);
    Some(out)
}

/// `http://backend:port/path?q` -> `/path?q` when the authority is the backend's.
fn strip_own_origin<'a>(url: &'a str, backend_authority: &str) -> &'a str {
    let after_scheme = ["http://", "https://", "//"].iter().find_map(|scheme| {
        let head = url.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &url[scheme.len()..])
    });
    let Some(rest) = after_scheme else {
        return url;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if !rest[..end].eq_ignore_ascii_case(backend_authority) {
        return url;
    }
    match &rest[end..] {
        "" => "/",
        path if path.starts_with('/') => path,
        // `http://host?x` has an empty path; keep the query on `/`.
        _ => url,
    }
}

/// How the look at a legacy stream's first event ended (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An `endpoint` event whose session id is now sealed.
    Rewritten,
    /// The first event was something else (a Streamable GET stream, say).
    NotEndpoint,
    /// An `endpoint` event without a session parameter, or not one URL.
    NoSessionParam,
    /// No complete event within the buffering limit.
    TooLarge,
    /// The stream ended before its first event was complete.
    Ended,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rewritten => "rewritten",
            Outcome::NotEndpoint => "not_endpoint",
            Outcome::NoSessionParam => "no_session_param",
            Outcome::TooLarge => "too_large",
            Outcome::Ended => "ended",
        }
    }
}

/// Seals an upstream session id into a token (`None`: leave it as it is).
pub type SealFn = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Buffers the start of a stream until its first event is known, then gives
/// back those bytes, rewritten if the event is a legacy `endpoint`.
pub struct EndpointRewriter {
    scanner: FirstEventScanner,
    buf: BytesMut,
    limit: usize,
    backend_authority: String,
    seal: SealFn,
}

impl EndpointRewriter {
    /// `limit`: the most bytes held back while looking for the first event.
    pub fn new(limit: usize, backend_authority: String, seal: SealFn) -> Self {
        EndpointRewriter {
            scanner: FirstEventScanner::default(),
            buf: BytesMut::new(),
            limit,
            backend_authority,
            seal,
        }
    }

    /// Takes the next chunk. Returns the bytes to send on once the first
    /// event is decided; every later chunk then passes untouched.
    pub fn push(&mut self, chunk: &[u8]) -> Option<(Bytes, Outcome)> {
        self.buf.extend_from_slice(chunk);
        // The event must end within the first `limit` bytes, however large
        // the read that brought it.
        let scanned = self.buf.len().min(self.limit);
        let Some(event) = self.scanner.feed(&self.buf[..scanned]) else {
            if self.buf.len() > self.limit {
                return Some((self.buf.split().freeze(), Outcome::TooLarge));
            }
            return None;
        };
        let is_endpoint = event
            .event
            .as_ref()
            .is_some_and(|r| &self.buf[r.clone()] == b"endpoint");
        if !is_endpoint {
            return Some((self.buf.split().freeze(), Outcome::NotEndpoint));
        }
        let [data] = event.data.as_slice() else {
            return Some((self.buf.split().freeze(), Outcome::NoSessionParam));
        };
        let rewritten = std::str::from_utf8(&self.buf[data.clone()])
            .ok()
            .and_then(|url| rewrite_endpoint(url, &self.backend_authority, &self.seal));
        let Some(url) = rewritten else {
            return Some((self.buf.split().freeze(), Outcome::NoSessionParam));
        };
        let mut out = BytesMut::with_capacity(self.buf.len() + url.len());
        out.extend_from_slice(&self.buf[..data.start]);
        out.extend_from_slice(url.as_bytes());
        out.extend_from_slice(&self.buf[data.end..]);
        Some((out.freeze(), Outcome::Rewritten))
    }

    /// The stream ended (or failed) first: whatever was held goes on as it is.
    pub fn finish(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// Where the first event in `buf` ends: just past the blank line that ends
/// it (lines end in CRLF, LF or CR). Used to group bytes, never to change
/// them.
pub fn event_end(buf: &[u8]) -> Option<usize> {
    Splitter::new().next(buf)
}

/// Finds where events end in a buffer that grows, resuming where it stopped
/// (so a large event arriving in many reads is scanned once, not once per
/// read). Positions are relative to the start of the event being scanned.
#[derive(Debug, Clone)]
pub struct Splitter {
    /// Bytes of the current event already scanned.
    pos: usize,
    /// `pos` is at the start of a line.
    line_start: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new()
    }
}

impl Splitter {
    pub fn new() -> Self {
        Splitter {
            pos: 0,
            line_start: true,
        }
    }

    /// Bytes of `buf` scanned so far (a CR at its end waits for the next
    /// byte: it may begin a CRLF).
    pub fn scanned(&self) -> usize {
        self.pos
    }

    /// Where the event that begins at `buf[0]` ends, if it does within
    /// `buf`; the splitter then starts over for the next event, which begins
    /// there. `buf` must extend the bytes given before.
    pub fn next(&mut self, buf: &[u8]) -> Option<usize> {
        let mut i = self.pos;
        while i < buf.len() {
            let b = buf[i];
            if b == b'\n' || b == b'\r' {
                let mut end = i + 1;
                if b == b'\r' {
                    match buf.get(end) {
                        Some(b'\n') => end += 1,
                        Some(_) => {}
                        None => break,
                    }
                }
                if self.line_start {
                    *self = Splitter::new();
                    return Some(end);
                }
                self.line_start = true;
                i = end;
            } else {
                self.line_start = false;
                i += 1;
            }
        }
        self.pos = i;
        None
    }

    /// `n` bytes were taken off the front of the buffer (never more than
    /// were scanned).
    pub fn consumed(&mut self, n: usize) {
        self.pos = self.pos.saturating_sub(n);
    }
}

/// The lines of an event, each with its line ending.
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = event;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => i + 2,
            Some(i) => i + 1,
            None => rest.len(),
        };
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

/// A `data` line's value, if `line` is one (the field name alone, or
/// followed by `:` and an optional space).
fn data_value(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"data")?;
    match rest.split_first() {
        None => Some(b""),
        Some((b':', value)) => Some(value.strip_prefix(b" ").unwrap_or(value)),
        Some(_) => None,
    }
}

/// An event's data: its `data` lines joined with LF, as a client reads it;
/// `None` when it has none.
pub fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for value in lines(event).filter_map(data_value) {
        match &mut data {
            None => data = Some(value.to_vec()),
            Some(d) => {
                d.push(b'\n');
                d.extend_from_slice(value);
            }
        }
    }
    data
}

/// `event` with its data replaced by `data` (one line: `data` holds no line
/// break), every other line as it was.
pub fn write_event(event: &[u8], data: &[u8], out: &mut Vec<u8>) {
    let mut written = false;
    for line in lines(event) {
        if data_value(line).is_none() {
            out.extend_from_slice(line);
        } else if !written {
            written = true;
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests;
