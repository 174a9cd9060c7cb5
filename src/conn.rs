//! Stage 1, per connection: one client's HTTP/1.1 connection.
//!
//! Reads each request head within its size and time limits, then its body
//! (MCP bodies are single JSON-RPC messages, held whole: why in
//! `docs/config.md`), hands the request to `Proxy::handle`, and goes round
//! again while both sides keep the connection alive. One task per connection
//! drives the client socket and, during an exchange, the upstream socket too.
//!
//! A body over the limit is read to its end and thrown away before the 413 is
//! sent (within the body timeout and `DRAIN_CAP` bytes), and every close after
//! an error lingers briefly: closing a socket with unread data makes the
//! kernel send a reset, which destroys the answer before the client reads it
//! (nginx's "lingering close" exists for the same reason).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::forward::headers;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{Framing, HeadError, RequestHead};
use crate::http1::{buf, io};
use crate::metrics::{self, Metrics};
use crate::proxy::{Outcome, Proxy};

/// Most bytes read and discarded from a body that is already over the limit.
pub const DRAIN_CAP: u64 = 64 << 20;
/// Longest wait for a client to finish sending after an error answer.
const LINGER: Duration = Duration::from_secs(2);

/// The limits a client connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_request_body: usize,
    pub request_body_timeout: Duration,
}

/// A client connection.
pub struct Client {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// `peer`'s address as text, for `X-Forwarded-For`.
    pub peer_ip: String,
    /// Bytes received and not yet used: the current request, perhaps the
    /// start of the next. Unallocated while empty.
    pub buf: Vec<u8>,
    /// Most bytes kept in `buf` while an exchange runs (a pipelining client).
    watch_limit: usize,
    /// Bytes at the start of `buf` that belong to the request being answered.
    held: usize,
    /// A pipelining client sent more than `watch_limit` during an exchange:
    /// bytes were dropped, so the connection must close after it.
    overflowed: bool,
}

/// A request's body, where it is.
#[derive(Debug)]
pub enum Body {
    /// In the client's buffer, right after the head.
    InBuf(Range<usize>),
    /// Decoded from the chunked coding.
    Owned(Vec<u8>),
}

impl Body {
    pub fn bytes<'a>(&'a self, client_buf: &'a [u8]) -> &'a [u8] {
        match self {
            Body::InBuf(range) => &client_buf[range.clone()],
            Body::Owned(bytes) => bytes,
        }
    }
}

/// What the client did while an exchange was running.
#[derive(Debug, PartialEq, Eq)]
pub enum Watch {
    /// Sent bytes (kept), or nothing after all.
    Quiet,
    /// Closed or reset its connection.
    Gone,
}

enum ReadError {
    /// Closed by the client between requests, or idle too long after one.
    Done,
    Head(HeadError),
    Timeout,
    Io(std::io::Error),
    Body(ProxyError),
}

/// Serves one client connection until either side closes it.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    settings: ConnSettings,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let _open = ConnGuard::new(&metrics);
    let mut client = Client {
        stream,
        peer,
        peer_ip: peer.ip().to_string(),
        buf: Vec::new(),
        watch_limit: settings.max_header_bytes,
        held: 0,
        overflowed: false,
    };
    let mut served = 0usize;
    loop {
        let head = match client.read_head(&settings, served > 0).await {
            Ok(head) => head,
            Err(e) => return Box::pin(client.fail(e, &proxy, &metrics)).await,
        };
        // Most bodies arrive with their head; waiting for one is boxed so its
        // future does not enlarge every connection's task.
        let body = match client.body_in_buf(&head, &settings) {
            Some(body) => body,
            None => match Box::pin(client.read_body(&head, &settings)).await {
                Ok(body) => body,
                Err(e) => return Box::pin(client.fail(e, &proxy, &metrics)).await,
            },
        };
        // Boxed: routing and the upstream call are a large future, needed only
        // until the response head is in; a relay that follows (perhaps a held
        // stream for hours) runs in this task's small state instead.
        let keep_alive = match Box::pin(proxy.handle(&mut client, &head, body)).await {
            Outcome::Answered { keep_alive } => keep_alive,
            Outcome::Relay(relay) => relay.run(&mut client).await,
        };
        served += 1;
        if !keep_alive || client.overflowed {
            let _ = client.stream.shutdown().await;
            return;
        }
        buf::release_if_empty(&mut client.buf);
    }
}

impl Client {
    /// Waits for a whole request head at the start of `buf`.
    async fn read_head(
        &mut self,
        settings: &ConnSettings,
        kept_alive: bool,
    ) -> Result<RequestHead, ReadError> {
        let deadline = Instant::now() + settings.header_read_timeout;
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
            let worth_parsing = !parsed_once || self.buf.len() >= limit || has_empty_line(fresh);
            if !self.buf.is_empty() && worth_parsing {
                parsed_once = true;
                if let Some(head) = RequestHead::parse(&self.buf, limit).map_err(ReadError::Head)? {
                    return Ok(head);
                }
            }
            searched = self.buf.len();
            let started = !self.buf.is_empty();
            match self.read_more(deadline).await {
                Ok(0) if started => {
                    return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => return Err(ReadError::Done),
                Ok(_) => {}
                // hyper's head timer used to cut idle keep-alive connections the
                // same way; an idle close is not an error.
                Err(ReadError::Timeout) if kept_alive && !started => return Err(ReadError::Done),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what the client sent next into `buf`, by `deadline`. Ok(0): closed.
    async fn read_more(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        loop {
            buf::ensure(&mut self.buf);
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(self.buf.len());
            }
            // Try first: a kept-alive client's next request has often arrived
            // already, and then no timer is armed at all.
            match io::read_now(&mut self.stream, &mut self.buf) {
                Ok(Some(n)) => return Ok(n),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
            buf::release_if_empty(&mut self.buf);
            let ready = std::future::poll_fn(|cx| self.stream.poll_read_ready(cx));
            match tokio::time::timeout_at(deadline, ready).await {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Err(e)) => return Err(ReadError::Io(e)),
                Ok(Ok(())) => {}
            }
        }
    }

    /// The body `head` announces, if it is already whole in `buf` and within the limit.
    fn body_in_buf(&self, head: &RequestHead, settings: &ConnSettings) -> Option<Body> {
        match head.framing {
            Framing::None | Framing::UntilClose => Some(Body::InBuf(head.len..head.len)),
            Framing::Length(len) if len <= settings.max_request_body as u64 => {
                let end = head.len + len as usize;
                (self.buf.len() >= end).then_some(Body::InBuf(head.len..end))
            }
            Framing::Length(_) | Framing::Chunked => None,
        }
    }

    /// Reads the body `head` announces, within the body limits.
    async fn read_body(
        &mut self,
        head: &RequestHead,
        settings: &ConnSettings,
    ) -> Result<Body, ReadError> {
        let limit = settings.max_request_body as u64;
        let too_large = || {
            ReadError::Body(ProxyError::BodyTooLarge {
                limit: settings.max_request_body,
            })
        };
        let deadline = Instant::now() + settings.request_body_timeout;
        match head.framing {
            Framing::None | Framing::UntilClose => Ok(Body::InBuf(head.len..head.len)),
            Framing::Length(len) if len > limit => {
                // A client waiting for `100 Continue` has sent nothing yet: answer
                // at once and it never sends the body. So does one announcing a
                // body too large to be worth reading.
                if head.expect_continue || len > DRAIN_CAP {
                    return Err(too_large());
                }
                self.discard(head.len as u64 + len, deadline).await?;
                Err(too_large())
            }
            Framing::Length(len) => {
                let end = head.len + len as usize;
                if self.buf.len() < end {
                    self.continue_if_expected(head).await?;
                }
                while self.buf.len() < end {
                    self.buf.reserve(end - self.buf.len());
                    self.read_body_more(deadline).await?;
                }
                Ok(Body::InBuf(head.len..end))
            }
            Framing::Chunked => {
                self.continue_if_expected(head).await?;
                let mut decoder = ChunkedDecoder::new();
                let mut body = Vec::new();
                let mut seen = 0u64;
                let mut at = head.len;
                loop {
                    let used = decoder
                        .decode(&self.buf[at..], &mut |data| {
                            seen += data.len() as u64;
                            if seen <= limit {
                                body.extend_from_slice(data);
                            }
                        })
                        .map_err(|e| ReadError::Body(ProxyError::BodyRead(e.to_string())))?;
                    at += used;
                    if seen > limit {
                        body = Vec::new();
                        if seen > DRAIN_CAP {
                            return Err(too_large());
                        }
                    }
                    // Keep only the head and what is not decoded yet.
                    self.buf.drain(head.len..at);
                    at = head.len;
                    if decoder.is_done() {
                        break;
                    }
                    self.read_body_more(deadline).await?;
                }
                if seen > limit {
                    // The body is consumed: the connection stays usable, but a
                    // client that sent this much is told once and let go.
                    return Err(too_large());
                }
                Ok(Body::Owned(body))
            }
        }
    }

    async fn continue_if_expected(&mut self, head: &RequestHead) -> Result<(), ReadError> {
        if head.expect_continue && head.minor == 1 {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(ReadError::Io)?;
        }
        Ok(())
    }

    /// Reads more of a body by `deadline`: a close mid-body or the deadline
    /// passing is the body's error (400, 408), not the connection's.
    async fn read_body_more(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        match self.read_more(deadline).await {
            Ok(0) => Err(ReadError::Body(ProxyError::BodyRead(
                "connection closed mid-body".into(),
            ))),
            Ok(n) => Ok(n),
            Err(ReadError::Timeout) => Err(ReadError::Body(ProxyError::BodyTimeout)),
            Err(e) => Err(e),
        }
    }

    /// Reads and drops bytes until `total` have been received, by `deadline`.
    async fn discard(&mut self, total: u64, deadline: Instant) -> Result<(), ReadError> {
        let mut seen = self.buf.len() as u64;
        while seen < total {
            self.buf.clear();
            seen += self.read_body_more(deadline).await? as u64;
        }
        self.buf.clear();
        Ok(())
    }

    /// Called when the client's socket is readable during an exchange: keeps
    /// what it sent (a pipelining client's next requests, up to the head
    /// limit beyond the request being answered), or reports that it has gone.
    /// Past the limit, bytes are read and dropped, so a disconnect is still
    /// seen, and the connection closes after this exchange (`overflowed`).
    pub fn on_readable(&mut self) -> Watch {
        let result = if self.buf.len().saturating_sub(self.held) < self.watch_limit {
            buf::ensure(&mut self.buf);
            let result = self.stream.try_read_buf(&mut self.buf);
            buf::release_if_empty(&mut self.buf);
            result
        } else {
            let mut scratch = [0u8; 4096];
            let result = self.stream.try_read(&mut scratch);
            if matches!(result, Ok(n) if n > 0) {
                self.overflowed = true;
            }
            result
        };
        match result {
            Ok(0) => Watch::Gone,
            Ok(_) => Watch::Quiet,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Watch::Quiet,
            Err(_) => Watch::Gone,
        }
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
    }

    /// Writes a response Tether made itself.
    pub async fn send_own(
        &mut self,
        status: StatusCode,
        body: &[u8],
        close: bool,
    ) -> std::io::Result<()> {
        let mut out = buf::take();
        headers::own_response(&mut out, status, body, close);
        let result = self.stream.write_all(&out).await;
        buf::give(out);
        result
    }

    /// Ends the connection after a failed read: answers when there is
    /// something to say, counts it, closes.
    async fn fail(mut self, e: ReadError, proxy: &Proxy, metrics: &Metrics) {
        let (kind, status) = match &e {
            ReadError::Done => return,
            ReadError::Head(HeadError::TooLarge | HeadError::TooManyFields) => (
                "header_too_large",
                Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            ),
            ReadError::Head(HeadError::UnsupportedCoding) => {
                ("parse", Some(StatusCode::NOT_IMPLEMENTED))
            }
            ReadError::Head(HeadError::Malformed(_)) => ("parse", Some(StatusCode::BAD_REQUEST)),
            ReadError::Timeout => ("header_timeout", None),
            ReadError::Io(e) if is_disconnect(e) => {
                tracing::debug!(error = %e, "client connection closed early");
                return;
            }
            ReadError::Io(_) => ("io", None),
            ReadError::Body(err) => {
                let body = proxy.reject(err, None, &[]);
                if self.send_own(err.status(), &body, true).await.is_ok() {
                    self.linger().await;
                }
                return;
            }
        };
        let detail = match &e {
            ReadError::Head(h) => h.to_string(),
            ReadError::Io(io) => io.to_string(),
            _ => "head not received within the header read timeout".into(),
        };
        tracing::info!(kind, error = %detail, "client connection error");
        metrics
            .connection_errors
            .get_or_create(&metrics::Kind { kind })
            .inc();
        if let Some(status) = status {
            let body = format!(
                "{{\"error\":\"{}\"}}",
                status.canonical_reason().unwrap_or("")
            );
            if self.send_own(status, body.as_bytes(), true).await.is_ok() {
                self.linger().await;
            }
        }
    }

    /// Closes our side, then reads and drops whatever the client still sends
    /// for a short while, so our answer is not destroyed by a reset.
    async fn linger(mut self) {
        let _ = self.stream.shutdown().await;
        let mut scratch = buf::take();
        let drain = async {
            let mut total = 0u64;
            loop {
                scratch.clear();
                match self.stream.read_buf(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
                if total > DRAIN_CAP {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        buf::give(scratch);
    }
}

/// Whether `bytes` hold the empty line that ends a head (`\n\n` or `\n\r\n`).
fn has_empty_line(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .any(|w| w[0] == b'\n' && (w[1] == b'\n' || w[1] == b'\r'))
}

/// A client that went away: not a fault of anyone's.
fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Counts an open client connection for as long as it lives.
struct ConnGuard(Arc<Metrics>);

impl ConnGuard {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.connections.inc();
        ConnGuard(metrics.clone())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}
