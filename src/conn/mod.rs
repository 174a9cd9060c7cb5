//! Stage 1, per connection: one client's HTTP/1.1 connection.
//!
//! Reads each request head within its size and time limits, then its body
//! (MCP bodies are single JSON-RPC messages, held whole: why in
//! `docs/config.md`; `body` reads them, within a global budget), hands the
//! request to `Proxy::handle`, and goes round again while both sides keep the
//! connection alive. One task per connection drives the client socket and,
//! during an exchange, the upstream socket too.
//!
//! Every close after an error lingers briefly: closing a socket with unread
//! data makes the kernel send a reset, which destroys the answer before the
//! client reads it (nginx's "lingering close" exists for the same reason).
//!
//! A client that shuts down its sending side after a request (`nc -N`, some
//! HTTP/1.0 tools) is half-closed, not gone: it is answered, then the
//! connection closes. Whether such a close cancels the request depends on the
//! protocol revision (`Proxy::call`).
//!
//! This stage never panics on input; if anything below it does, the request
//! is answered 502 (when nothing was written yet), counted and logged once,
//! and the connection closes (`crate::panic`).

pub mod access;
mod body;
pub mod budget;
mod hostile;
mod timer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use body::Body;
pub use budget::BodyBudget;

use crate::error::ProxyError;
use crate::forward::headers;
use crate::http1::head::{may_end_head, HeadError, RequestHead};
use crate::http1::{buf, io};
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, Metrics};
use crate::panic::CatchUnwind;
use crate::proxy::{Outcome, Proxy};

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
    /// The client shut down its sending side: nothing more will come, the
    /// connection closes after the current answer.
    half_closed: bool,
    /// Bytes of an answer to the current request have been written.
    answering: bool,
    /// For the head and body read deadlines.
    read_timer: timer::LazyTimer,
    /// For the response timeout of the request being answered.
    response_timer: timer::LazyTimer,
    /// Longest wait for a write of Tether's own to a client that stopped reading.
    write_timeout: Duration,
    /// When a half-closed client is next checked for a reset.
    probe_at: Option<Instant>,
    /// Tether's own life: after a shutdown signal no connection is kept.
    pub lifecycle: Arc<Lifecycle>,
    /// The current request's access log line, when lines are wanted.
    pub access: Option<Box<access::AccessLog>>,
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

enum ReadError {
    /// Closed by the client between requests, or idle too long after one.
    Done,
    Head(HeadError),
    Timeout,
    Io(std::io::Error),
    Body(ProxyError),
}

/// What to do after one request.
enum Next {
    Again,
    Close,
    /// The connection was ended already (an error answered, or a close).
    Ended,
}

/// Serves one client connection until either side closes it.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    settings: Arc<ConnSettings>,
) -> impl std::future::Future<Output = ()> + Send {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    // Built here, outside the task's future, which then holds the client
    // once (an async fn would also keep its moved-from arguments).
    let client = Client {
        stream,
        peer,
        peer_ip: peer.ip().to_string(),
        buf: Vec::new(),
        watch_limit: settings.max_header_bytes,
        held: 0,
        overflowed: false,
        half_closed: false,
        answering: false,
        read_timer: timer::LazyTimer::new(),
        response_timer: timer::LazyTimer::new(),
        write_timeout: settings.header_read_timeout,
        probe_at: None,
        lifecycle: settings.lifecycle.clone(),
        access: None,
    };
    serve_client(client, proxy, metrics, settings)
}

/// Not an `async fn`: that would keep its arguments (the client, 200 bytes)
/// and a moved copy of them for the task's whole life; the block uses its
/// captures in place.
#[allow(clippy::manual_async_fn)]
fn serve_client(
    mut client: Client,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    settings: Arc<ConnSettings>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let _open = ConnGuard::new(&metrics);
        let mut served = 0usize;
        loop {
            let one = client.serve_one(&proxy, &metrics, &settings, served > 0);
            match CatchUnwind::new(one).await {
                Ok(Next::Again) => served += 1,
                Ok(Next::Close) => {
                    let _ = client.stream.shutdown().await;
                    return;
                }
                Ok(Next::Ended) => return,
                Err(panic) => {
                    let what = crate::panic::describe(&*panic);
                    return Box::pin(client.after_panic(what, &metrics)).await;
                }
            }
            buf::release_if_empty(&mut client.buf);
        }
    }
}

impl Client {
    /// Reads one request, has it answered, and says what comes next.
    async fn serve_one(
        &mut self,
        proxy: &Arc<Proxy>,
        metrics: &Metrics,
        settings: &Arc<ConnSettings>,
        kept_alive: bool,
    ) -> Next {
        self.answering = false;
        // The request's head, body and budget live in this future only, so
        // a relay that follows (perhaps a held stream for hours) keeps none
        // of them in the connection's task.
        // Boxed, for the same reason: the task's size is its largest phase,
        // and a held stream should pay for the relay's, not this one's.
        let outcome = match Box::pin(self.request(proxy, metrics, settings, kept_alive)).await {
            Ok(outcome) => outcome,
            Err(next) => return next,
        };
        let keep_alive = match outcome {
            Outcome::Answered { keep_alive } => keep_alive,
            Outcome::Relay(relay) => {
                if relay.is_stream() {
                    // Perhaps held for hours: keep no timers armed meanwhile.
                    self.read_timer = timer::LazyTimer::new();
                    self.response_timer = timer::LazyTimer::new();
                }
                relay.run(self).await
            }
        };
        if let Some(line) = self.access.take() {
            line.emit();
        }
        if keep_alive && !self.overflowed && !self.half_closed && !self.lifecycle.closing() {
            Next::Again
        } else {
            Next::Close
        }
    }

    /// Reads a request and has it routed, up to the response head.
    async fn request(
        &mut self,
        proxy: &Arc<Proxy>,
        metrics: &Metrics,
        settings: &Arc<ConnSettings>,
        kept_alive: bool,
    ) -> Result<Outcome, Next> {
        let head = match self.read_head(settings, kept_alive).await {
            Ok(head) => head,
            Err(e) => return Err(Box::pin(self.fail(e, proxy, metrics)).await),
        };
        // Most bodies arrive with their head; waiting for one is boxed so its
        // future does not enlarge every connection's task.
        let (body, held) = match self.body_in_buf(&head, settings) {
            Some(body) => (body, budget::Held::default()),
            None => match Box::pin(self.read_body(&head, settings)).await {
                Ok(read) => read,
                Err(e) => return Err(Box::pin(self.fail(e, proxy, metrics)).await),
            },
        };
        // Boxed: routing and the upstream call are a large future, needed only
        // until the response head is in. The body's budget goes back after.
        // Its span (debug) names the request in every line logged under it.
        let span = tracing::debug_span!(
            "request",
            method = tracing::field::Empty,
            target = tracing::field::Empty
        );
        if !span.is_disabled() {
            let text =
                |r: std::ops::Range<usize>| String::from_utf8_lossy(&self.buf[r]).into_owned();
            let target = text(head.target.clone());
            span.record("method", text(head.method.clone()));
            // Without the query: a legacy one carries the session token.
            span.record("target", target.split('?').next().unwrap_or_default());
        }
        let handle = Box::pin(proxy.handle(self, &head, body));
        let outcome = if span.is_disabled() {
            handle.await
        } else {
            tracing::Instrument::instrument(handle, span).await
        };
        drop(held);
        Ok(outcome)
    }

    /// Waits for a whole request head at the start of `buf`.
    async fn read_head(
        &mut self,
        settings: &ConnSettings,
        kept_alive: bool,
    ) -> Result<RequestHead, ReadError> {
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
            let (stream, timer) = (&self.stream, &mut self.read_timer);
            let ready = std::future::poll_fn(|cx| {
                if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                    return Poll::Ready(Some(ready));
                }
                timer.poll_until(cx, deadline).map(|()| None)
            });
            match ready.await {
                None => return Err(ReadError::Timeout),
                Some(Err(e)) => return Err(ReadError::Io(e)),
                Some(Ok(())) => {}
            }
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
                Ok(0) => {
                    self.half_closed = true;
                    return Poll::Ready(Watch::Closed);
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(Watch::Gone),
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
        self.answering = true;
        let mut out = buf::take();
        headers::own_response(&mut out, err.status(), err.retry_after(), body, close);
        if head_request {
            out.truncate(out.len() - body.len());
        }
        let result = self.write_bounded(&out).await;
        buf::give(out);
        result
    }

    /// Writes bytes of Tether's own to the client, waiting at most the head
    /// read timeout for a client that stopped reading (as the relay does).
    pub(super) async fn write_bounded(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let sent = match self.stream.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if sent == bytes.len() {
            return Ok(());
        }
        let rest = &bytes[sent..];
        tokio::time::timeout(self.write_timeout, self.stream.write_all(rest))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Ends the connection after a failed read: answers when there is
    /// something to say, counts it, closes.
    async fn fail(&mut self, e: ReadError, proxy: &Proxy, metrics: &Metrics) -> Next {
        let kind = match &e {
            ReadError::Done => return Next::Ended,
            ReadError::Head(HeadError::TooLarge | HeadError::TooManyFields) => "header_too_large",
            ReadError::Head(_) => "parse",
            ReadError::Timeout => "header_timeout",
            ReadError::Io(e) if is_disconnect(e) => {
                tracing::debug!(error = %e, "client connection closed early");
                return Next::Ended;
            }
            ReadError::Io(_) => "io",
            ReadError::Body(err) => {
                let body = proxy.reject(err, None, &[]);
                if self.send_error(err, &body, true, false).await.is_ok() {
                    self.linger().await;
                }
                return Next::Ended;
            }
        };
        let detail = match &e {
            ReadError::Head(h) => h.to_string(),
            ReadError::Io(io) => io.to_string(),
            _ => "head not received within the header read timeout".into(),
        };
        hostile::note(kind, &detail);
        metrics
            .connection_errors
            .get_or_create(&metrics::Kind { kind })
            .inc();
        if let ReadError::Head(head) = e {
            let err = ProxyError::Head(head);
            let body = err.body(&serde_json::Value::Null);
            if self.send_error(&err, &body, true, false).await.is_ok() {
                self.linger().await;
            }
        }
        Next::Ended
    }

    /// After a panic below this connection: answers 502 if nothing of an
    /// answer was written yet, counts and logs it once, closes.
    async fn after_panic(&mut self, what: String, metrics: &Metrics) {
        metrics.internal_errors.inc();
        tracing::error!(
            peer = %self.peer,
            panic = %what,
            answered = self.answering,
            "internal error in a connection task; connection closed"
        );
        if !self.answering {
            let err = ProxyError::Internal;
            let body = err.body(&serde_json::Value::Null);
            let _ = self.send_error(&err, &body, true, false).await;
        }
        let _ = self.stream.shutdown().await;
    }

    /// Closes our side, then reads and drops whatever the client still sends
    /// for a short while, so our answer is not destroyed by a reset.
    async fn linger(&mut self) {
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
                if total > body::DRAIN_CAP {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        buf::give(scratch);
    }
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

#[cfg(test)]
mod tests;
