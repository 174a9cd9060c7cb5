//! The client side of a connection: its socket, what it sent (`buf`), its
//! read deadlines, and the narrow API the rest of Tether uses on it: read a
//! request head and body (within their limits and the global body budget),
//! watch the client while its request is answered (a pipelining client's
//! next bytes kept, a half-close or a reset seen), write Tether's own
//! answers, linger after an error. The fields are private; `conn` runs the
//! keep-alive loop over this, `proxy` and `forward::relay` answer through it.
//!
//! Every close after an error lingers briefly: closing a socket with unread
//! data makes the kernel send a reset, which destroys the answer before the
//! client reads it (nginx's "lingering close" exists for the same reason).

pub mod access;
mod body;
pub mod budget;
pub mod hostile;
pub mod proxy_protocol;
mod timer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::time::Instant;

pub use body::Body;
pub use budget::{BodyBudget, Held};

use crate::error::ProxyError;
use crate::forward::headers;
use crate::http1::buf;
use crate::http1::head::{may_end_head, HeadError, RequestHead};
use crate::lifecycle::Lifecycle;
use crate::transport::Stream;

/// Longest wait for a client to finish sending after an error answer.
const LINGER: Duration = Duration::from_secs(2);

/// The limits a client connection is held to.
#[derive(Clone)]
pub struct ConnSettings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_request_body: usize,
    pub request_body_timeout: Duration,
    /// Shared by every connection: body bytes held in memory, in all.
    pub budget: Arc<BodyBudget>,
    pub lifecycle: Arc<Lifecycle>,
    /// Every connection begins with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
    /// TLS, after any PROXY header.
    pub tls: Option<Arc<crate::tls::Terminator>>,
    pub http2: crate::config::Http2Settings,
}

/// A client connection.
pub struct Client {
    stream: Stream,
    peer: SocketAddr,
    /// `peer`'s address as text, for `X-Forwarded-For`.
    /// As text, for `X-Forwarded-For`: shared by an HTTP/2 connection's
    /// streams, so a stream does not format it again.
    peer_ip: std::sync::Arc<str>,
    /// Bytes received and not yet used: the current request, perhaps the
    /// start of the next. Unallocated while empty.
    buf: Vec<u8>,
    /// Most bytes kept in `buf` while an exchange runs (a pipelining client).
    watch_limit: usize,
    /// Bytes at the start of `buf` that belong to the request being answered.
    held: usize,
    /// A pipelining client sent more than `watch_limit` during an exchange:
    /// bytes were dropped, so the connection must close after it.
    overflowed: bool,
    /// The client shut down its sending side: nothing more will come, the
    /// connection closes after the current answer.
    half_closed: bool,
    /// Bytes of an answer to the current request have been written.
    answering: bool,
    /// The client reached Tether over TLS (itself, or the HTTP/2 connection
    /// an in-memory stream stands for): `X-Forwarded-Proto: https`.
    secure: bool,
    /// For the head and body read deadlines.
    read_timer: timer::LazyTimer,
    /// For the response timeout of the request being answered.
    response_timer: timer::LazyTimer,
    /// Longest wait for a write of Tether's own to a client that stopped reading.
    write_timeout: Duration,
    /// When a half-closed client is next checked for a reset.
    probe_at: Option<Instant>,
    /// Tether's own life: after a shutdown signal no connection is kept.
    lifecycle: Arc<Lifecycle>,
    /// The request head Tether wrote itself and read as it wrote it (an
    /// HTTP/2 stream's, `prefill_parsed`): the first `read_head` returns it.
    written: Option<Box<Result<RequestHead, HeadError>>>,
    /// The current request's access log line, when lines are wanted.
    access: Option<Box<access::AccessLog>>,
}

/// How often a half-closed client (not readable any more: its EOF stays
/// readable) is checked for a reset.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What the client did while an exchange was running.
#[derive(Debug, PartialEq, Eq)]
pub enum Watch {
    /// Closed its sending side (it may still read): from now on it is not
    /// watched, and the connection closes after the current answer.
    Closed,
    /// Reset its connection, or it failed.
    Gone,
}

pub enum ReadError {
    /// Closed by the client between requests, or idle too long after one.
    Done,
    Head(HeadError),
    Timeout,
    Io(std::io::Error),
    Body(ProxyError),
}

impl Client {
    /// A client connection just accepted, held to `settings`.
    pub fn new(stream: Stream, peer: SocketAddr, settings: &ConnSettings) -> Client {
        Client::with_peer_ip(stream, peer, ip_text(peer.ip()), settings)
    }

    /// A client whose address is already written as text (`peer_ip`).
    pub fn with_peer_ip(
        stream: Stream,
        peer: SocketAddr,
        peer_ip: std::sync::Arc<str>,
        settings: &ConnSettings,
    ) -> Client {
        if let Some(Err(e)) = stream.tcp().map(|s| s.set_nodelay(true)) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let secure = stream.is_tls();
        Client {
            stream,
            peer,
            peer_ip,
            buf: Vec::new(),
            watch_limit: settings.max_header_bytes,
            held: 0,
            overflowed: false,
            half_closed: false,
            answering: false,
            secure,
            read_timer: timer::LazyTimer::new(),
            response_timer: timer::LazyTimer::new(),
            write_timeout: settings.header_read_timeout,
            probe_at: None,
            lifecycle: settings.lifecycle.clone(),
            access: None,
            written: None,
        }
    }

    /// The stream, the client's address, and the bytes read and not used
    /// (after a PROXY header: the start of a TLS ClientHello).
    pub fn into_parts(self) -> (Stream, SocketAddr, Vec<u8>) {
        (self.stream, self.peer, self.buf)
    }

    /// What the client sent and is not used yet: the current request first.
    pub fn buf(&self) -> &[u8] {
        &self.buf
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The peer's address as text, for `X-Forwarded-For`.
    pub fn peer_ip(&self) -> &str {
        &self.peer_ip
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Shares the lifecycle (an event stream waits on it).
    pub fn lifecycle_arc(&self) -> Arc<Lifecycle> {
        self.lifecycle.clone()
    }

    /// The current request's access log line, when lines are wanted.
    pub fn access(&mut self) -> Option<&mut access::AccessLog> {
        self.access.as_deref_mut()
    }

    pub fn set_access(&mut self, line: Box<access::AccessLog>) {
        self.access = Some(line);
    }

    /// Logs the finished request's access line, if there is one.
    pub fn emit_access(&mut self) {
        if let Some(line) = self.access.take() {
            line.emit();
        }
    }

    /// A new request begins: nothing of its answer is written yet.
    pub fn begin_request(&mut self) {
        self.answering = false;
    }

    /// Whether anything of the current answer was written.
    pub fn answered(&self) -> bool {
        self.answering
    }

    /// Whether the connection may carry another request after this one.
    pub fn may_go_on(&self) -> bool {
        !self.overflowed && !self.half_closed && !self.lifecycle.closing()
    }

    /// A held stream follows: no timer stays armed for hours.
    pub fn forget_timers(&mut self) {
        self.read_timer = timer::LazyTimer::new();
        self.response_timer = timer::LazyTimer::new();
    }

    /// Bytes of the request that came before the client was made (an HTTP/2
    /// stream's request, already whole or begun), read as if from its stream.
    pub fn prefill(&mut self, bytes: Vec<u8>) {
        debug_assert!(self.buf.is_empty());
        self.buf = bytes;
    }

    /// As `prefill`, with the request head at the start of `bytes` already
    /// read (`RequestHead::from_written`: Tether wrote it), or refused.
    pub fn prefill_parsed(&mut self, bytes: Vec<u8>, head: Result<RequestHead, HeadError>) {
        self.prefill(bytes);
        self.written = Some(Box::new(head));
    }

    /// Between requests: an empty buffer goes back to the pool.
    pub fn release_idle_buffer(&mut self) {
        buf::release_if_empty(&mut self.buf);
    }

    /// Writes as much of `bytes` as goes without waiting; what it took is
    /// on its way once `try_flush` says so (TLS may hold records back).
    pub fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.stream.try_write(bytes)
    }

    /// Whether everything written is on its way (see `try_write`).
    pub fn try_flush(&mut self) -> bool {
        self.stream.try_flush()
    }

    /// Writes all of `bytes` and flushes, waiting as long as it takes.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.send_all(bytes).await
    }

    /// Whether the client reached Tether over TLS.
    pub fn is_tls(&self) -> bool {
        self.secure
    }

    /// The TLS client chose HTTP/2 (ALPN `h2`).
    pub fn alpn_h2(&self) -> bool {
        match &self.stream {
            Stream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
            _ => false,
        }
    }

    /// An in-memory stream standing for an HTTP/2 stream of a TLS connection.
    pub fn set_secure(&mut self, secure: bool) {
        self.secure = secure;
    }

    /// Whether the connection begins with the HTTP/2 preface (prior
    /// knowledge, `h2c`): reads until it does or cannot, within `timeout`.
    /// What was read stays in `buf` either way.
    pub async fn begins_with_h2_preface(&mut self, timeout: Duration) -> bool {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf[..n] != PREFACE[..n] {
                return false;
            }
            if n == PREFACE.len() {
                return true;
            }
            match self.read_more(deadline).await {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
        }
    }

    /// Closes our sending side.
    pub fn shutdown(&mut self) {
        // Never a wait: a TLS client that stopped reading cannot hold the task.
        self.stream.close_write();
    }

    /// Waits for a whole request head at the start of `buf`.
    pub async fn read_head(
        &mut self,
        settings: &ConnSettings,
        kept_alive: bool,
    ) -> Result<RequestHead, ReadError> {
        if let Some(written) = self.written.take() {
            return (*written).map_err(ReadError::Head);
        }
        // Armed only if the head is not there yet (a kept-alive client's next
        // request often is): no clock read on the common path.
        let mut deadline = None;
        // Bytes already known to hold no end of head. A head is parsed again
        // only once an empty line may have arrived (or the limit is reached),
        // so a client trickling a large head byte by byte costs linear time,
        // not a full parse per byte.
        let mut searched = 0usize;
        let mut parsed_once = false;
        loop {
            let limit = settings.max_header_bytes;
            let fresh = &self.buf[searched.saturating_sub(3).min(self.buf.len())..];
            // Parsed at least once as soon as bytes arrive, so garbage is
            // refused at once rather than when the head timer fires.
            let worth_parsing = !parsed_once || self.buf.len() >= limit || may_end_head(fresh);
            if !self.buf.is_empty() && worth_parsing {
                parsed_once = true;
                if let Some(head) = RequestHead::parse(&self.buf, limit).map_err(ReadError::Head)? {
                    return Ok(head);
                }
            }
            searched = self.buf.len();
            let started = !self.buf.is_empty();
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + settings.header_read_timeout);
            match self.read_more(deadline).await {
                Ok(0) if started => {
                    return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => return Err(ReadError::Done),
                Ok(_) => {}
                // An idle kept-alive connection ends quietly; not an error.
                Err(ReadError::Timeout) if kept_alive && !started => return Err(ReadError::Done),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the PROXY protocol header the listener expects before any HTTP
    /// (`proxy_protocol = true`), within `timeout`: the client's address
    /// becomes the one it names (a `LOCAL` header keeps the connection's).
    /// Bytes after it stay in `buf` for the request head. `Ok(false)`: the
    /// connection closed before sending anything (a TCP health check).
    pub async fn read_proxy_header(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match proxy_protocol::parse(&self.buf) {
                Ok(Some((header, len))) => {
                    self.buf.drain(..len);
                    if let proxy_protocol::Header::Proxied(addr) = header {
                        // A dual-stack balancer's ::ffff:a.b.c.d is a.b.c.d.
                        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                        self.peer = addr;
                        self.peer_ip = ip_text(addr.ip());
                    }
                    return Ok(true);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match self.read_more(deadline).await {
                Ok(0) if self.buf.is_empty() => return Ok(false),
                Ok(0) => return Err("closed before its PROXY header ended".into()),
                Ok(_) => {}
                Err(ReadError::Timeout) => {
                    return Err("no PROXY header within the header read timeout".into())
                }
                Err(ReadError::Io(e)) => return Err(e.to_string()),
                Err(_) => return Err("PROXY header unreadable".into()),
            }
        }
    }

    /// Reads what the client sent next into `buf`, by `deadline`. Ok(0): closed.
    async fn read_more(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        let (stream, timer, buf) = (&mut self.stream, &mut self.read_timer, &mut self.buf);
        // The read comes first: a kept-alive client's next request has often
        // arrived already, and then no timer is armed at all. While nothing
        // has come, no buffer is held.
        let read = std::future::poll_fn(|cx| {
            buf::ensure(buf);
            if buf.len() == buf.capacity() {
                buf.reserve(buf.len());
            }
            match stream.poll_read_vec(cx, buf) {
                Poll::Ready(result) => Poll::Ready(Some(result)),
                Poll::Pending => {
                    buf::release_if_empty(buf);
                    timer.poll_until(cx, deadline).map(|()| None)
                }
            }
        });
        match read.await {
            None => Err(ReadError::Timeout),
            Some(Err(e)) => Err(ReadError::Io(e)),
            Some(Ok(n)) => Ok(n),
        }
    }

    /// Watches the client during an exchange: keeps what it sends (a
    /// pipelining client's next requests, up to the head limit beyond the
    /// request being answered), and reports a close or a reset. Past the
    /// limit, bytes are read and dropped, so a disconnect is still seen, and
    /// the connection closes after this exchange (`overflowed`). Once the
    /// client has closed its side it is not watched any more (its socket
    /// stays readable for good).
    pub fn poll_watch(&mut self, cx: &mut Context<'_>) -> Poll<Watch> {
        if self.half_closed {
            return self.poll_reset(cx);
        }
        while self.stream.poll_read_ready(cx).is_ready() {
            let result = if self.buf.len().saturating_sub(self.held) < self.watch_limit {
                buf::ensure(&mut self.buf);
                if self.buf.len() == self.buf.capacity() {
                    // Room for what may come, not a doubling of a buffer
                    // full of a large body.
                    self.buf.reserve_exact(4096);
                }
                let result = self.stream.poll_read_vec(cx, &mut self.buf);
                buf::release_if_empty(&mut self.buf);
                result
            } else {
                let mut scratch = [0u8; 4096];
                let result = self.stream.poll_read_slice(cx, &mut scratch);
                if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
                    self.overflowed = true;
                }
                result
            };
            match result {
                // An in-memory peer (an HTTP/2 stream) never half-closes:
                // its end is the stream's reset.
                Poll::Ready(Ok(0))
                    if matches!(self.stream, Stream::Memory(_) | Stream::Boxed(_)) =>
                {
                    return Poll::Ready(Watch::Gone)
                }
                Poll::Ready(Ok(0)) => {
                    self.half_closed = true;
                    return Poll::Ready(Watch::Closed);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Watch::Gone),
                // Nothing more (the waker is registered).
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    /// Ready once `deadline` (the response timeout of the request being
    /// answered) has passed.
    pub fn poll_response_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        self.response_timer.poll_until(cx, deadline)
    }

    /// A half-closed client's socket stays readable (its EOF), so it is
    /// checked for a reset (the client gone for good) once a second instead.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Watch> {
        loop {
            let at = *self
                .probe_at
                .get_or_insert_with(|| Instant::now() + PROBE_EVERY);
            if self.read_timer.poll_until(cx, at).is_pending() {
                return Poll::Pending;
            }
            self.probe_at = None;
            if !matches!(self.stream.take_error(), Ok(None)) {
                return Poll::Ready(Watch::Gone);
            }
        }
    }

    /// Whether the client has shut down its sending side.
    pub fn half_closed(&self) -> bool {
        self.half_closed
    }

    /// Marks the first `n` bytes of `buf` as the request being answered (they
    /// do not count against what a pipelining client may send meanwhile).
    pub fn hold(&mut self, n: usize) {
        self.held = n;
    }

    /// Drops the first `n` bytes of `buf` (a request that has been handled).
    pub fn consume(&mut self, n: usize) {
        self.held = 0;
        self.buf.drain(..n.min(self.buf.len()));
        buf::release_if_empty(&mut self.buf);
        // A buffer that grew for a large body keeps none of that room once
        // its budget is given back (an exchange, or a held stream, may last).
        if self.buf.capacity() > 2 * buf::SIZE {
            let mut small = if self.buf.len() <= buf::SIZE {
                buf::take()
            } else {
                Vec::with_capacity(self.buf.len())
            };
            small.extend_from_slice(&self.buf);
            self.buf = small;
        }
    }

    /// Notes that bytes of the answer to the current request are on their way.
    pub fn answering(&mut self) {
        self.answering = true;
    }

    /// Writes an error answer Tether made itself (a JSON-RPC body, left out
    /// for a HEAD request, whose answer has none: RFC 9110 §9.3.2).
    pub async fn send_error(
        &mut self,
        err: &ProxyError,
        body: &[u8],
        close: bool,
        head_request: bool,
    ) -> std::io::Result<()> {
        self.send_json(err.status(), err.retry_after(), body, close, head_request)
            .await
    }

    /// Writes a JSON answer of Tether's own (a cached result).
    pub async fn send_own(
        &mut self,
        status: http::StatusCode,
        body: &[u8],
        close: bool,
        head_request: bool,
    ) -> std::io::Result<()> {
        self.send_json(status, None, body, close, head_request)
            .await
    }

    async fn send_json(
        &mut self,
        status: http::StatusCode,
        retry_after: Option<u32>,
        body: &[u8],
        close: bool,
        head_request: bool,
    ) -> std::io::Result<()> {
        self.answering = true;
        let mut out = buf::take();
        headers::own_response(&mut out, status, retry_after, body, close);
        if head_request {
            out.truncate(out.len() - body.len());
        }
        let result = self.write_bounded(&out).await;
        buf::give(out);
        result
    }

    /// Writes bytes of Tether's own to the client, waiting at most the head
    /// read timeout for a client that stopped reading (as the relay does).
    pub async fn write_bounded(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let sent = match self.stream.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if sent == bytes.len() && self.stream.try_flush() {
            return Ok(());
        }
        let rest = &bytes[sent..];
        tokio::time::timeout(self.write_timeout, self.stream.send_all(rest))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Closes our side, then reads and drops whatever the client still sends
    /// for a short while, so our answer is not destroyed by a reset.
    pub async fn linger(&mut self) {
        self.stream.close_write();
        let mut scratch = buf::take();
        let drain = async {
            let mut total = 0u64;
            loop {
                scratch.clear();
                match self.stream.read_buf(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
                if total > body::DRAIN_CAP {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        buf::give(scratch);
    }
}

/// An address as shared text, in one allocation (an IPv6 address is at
/// most 45 characters); an IPv4 client of a dual-stack listener as IPv4.
pub fn ip_text(ip: std::net::IpAddr) -> Arc<str> {
    let ip = ip.to_canonical();
    use std::io::Write as _;
    let mut text = [0u8; 64];
    let mut out = &mut text[..];
    let len = match write!(out, "{ip}") {
        Ok(()) => 64 - out.len(),
        Err(_) => return ip.to_string().into(),
    };
    std::str::from_utf8(&text[..len]).unwrap_or_default().into()
}

/// A client that went away: not a fault of anyone's.
pub fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

#[cfg(test)]
mod tests;
