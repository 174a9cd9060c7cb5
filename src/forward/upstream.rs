//! The upstream side: idle keep-alive connections per backend, and one
//! exchange on a connection (request bytes out, response head in).
//!
//! The request's own task drives the upstream socket: no connection task and
//! no channel between the two (what hyper's pooled client costs per request).
//! A connection goes back to its backend's idle list only when its response
//! was read to the end, neither side asked to close, and nothing gives reason
//! to doubt it; it is kept at most `timeouts.upstream_idle`, and less when
//! the backend announces a shorter `Keep-Alive: timeout` (so Tether lets go
//! before the backend closes it under a request).
//!
//! A reused connection races with the backend closing it for idleness. A
//! request is sent again on a new connection only when the backend provably
//! never read it: the write failed, or the connection was reset before any
//! response byte (a kernel resets data that arrives on a socket its
//! application closed, or a close with unread data). A clean close after the
//! request was written is a 502: the backend may have acted on it.
//!
//! A backend configured `protocol = "h2"` is reached the same way: its new
//! "connection" is a pipe to `h2up`'s bridge onto its one HTTP/2 connection
//! (the only branch is in `connect`), kept idle and reused like a socket.

use std::time::Duration;

use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncReadExt as _, AsyncWrite as _, Interest};
use tokio::net::TcpStream;

use crate::transport::Stream;
use tokio::time::Instant;

use crate::error::UpstreamFailure;
use crate::http1::buf;
use crate::http1::head::{HeadError, ResponseHead};
use crate::pool::{Backend, IdleConn, Protocol};

/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most idle connections kept per backend; the oldest go first.
const MAX_IDLE: usize = 1024;
/// After a reused connection ends without a response, how long to wait for
/// the reset that proves the backend had closed it before the request came.
/// On a LAN it follows within a round trip.
const RESET_WAIT: Duration = Duration::from_millis(100);

/// Settings of the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Longest wait for a response head (a JSON tool result arrives whole, so
    /// this bounds a tool call answered as JSON; an SSE answer starts at once).
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// How `https://` backends are reached.
    pub tls: std::sync::Arc<crate::tls::backend::BackendTls>,
}

/// A failed upstream call.
#[derive(Debug)]
pub struct UpstreamError {
    pub failure: UpstreamFailure,
    pub detail: String,
}

impl UpstreamSettings {
    pub fn of(config: &crate::config::Config) -> Self {
        UpstreamSettings {
            connect_timeout: config.timeouts.connect,
            response_timeout: config.timeouts.response,
            pool_idle_timeout: config.timeouts.upstream_idle,
            tls: config.backend_tls.clone(),
        }
    }
}

impl UpstreamError {
    fn io(detail: impl Into<String>) -> Self {
        UpstreamError {
            failure: UpstreamFailure::Io,
            detail: detail.into(),
        }
    }
}

/// A response head read from a backend, with the connection it came on.
pub struct Response {
    pub stream: Stream,
    /// The head's bytes, then whatever part of the body came with them.
    pub buf: Vec<u8>,
    pub head: ResponseHead,
    /// Whether the whole request was written (the backend may answer early);
    /// if not, the connection cannot carry another request.
    pub request_complete: bool,
}

/// Connections to every backend (each backend keeps its idle ones).
pub struct Upstream {
    /// Set again by a reload; plain atomics (nanoseconds), read on every
    /// request without the cost of a shared pointer.
    connect_timeout: AtomicDuration,
    response_timeout: AtomicDuration,
    pool_idle_timeout: AtomicDuration,
    tls: crate::tls::backend::Shared,
}

/// A `Duration` a reload may change, read with one relaxed load.
struct AtomicDuration(std::sync::atomic::AtomicU64);

impl AtomicDuration {
    fn new(d: Duration) -> Self {
        AtomicDuration(std::sync::atomic::AtomicU64::new(nanos(d)))
    }

    fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn set(&self, d: Duration) {
        self.0.store(nanos(d), std::sync::atomic::Ordering::Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How one attempt on one connection ended, when it did not give a response.
enum Attempt {
    /// A kept-alive connection was closed by the backend before it answered:
    /// the request was not taken, so a new connection may carry it.
    Stale,
    Failed(UpstreamError),
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Self {
        Upstream {
            connect_timeout: AtomicDuration::new(settings.connect_timeout),
            response_timeout: AtomicDuration::new(settings.response_timeout),
            pool_idle_timeout: AtomicDuration::new(settings.pool_idle_timeout),
            tls: std::sync::Arc::new(arc_swap::ArcSwap::new(settings.tls.clone())),
        }
    }

    /// New timeouts, for the requests that start from now on.
    pub fn reconfigure(&self, settings: &UpstreamSettings) {
        self.connect_timeout.set(settings.connect_timeout);
        self.response_timeout.set(settings.response_timeout);
        self.pool_idle_timeout.set(settings.pool_idle_timeout);
        // Kept when nothing changes (its system roots stay read, its sessions
        // resumable); files it names are read again, as a reload promises.
        if self.tls.load().settings() != settings.tls.settings() || settings.tls.has_files() {
            self.tls.store(settings.tls.clone());
        }
    }

    /// How `https://` backends are reached (health checks use it too).
    pub fn tls(&self) -> &crate::tls::backend::Shared {
        &self.tls
    }

    /// Sends `request` (a whole HTTP/1.1 request) to `backend` and reads the
    /// response head. Untimed: the caller holds it to `response_timeout()`
    /// (a per-connection timer is cheaper than a tokio timer per request).
    pub async fn exchange(
        &self,
        backend: &Backend,
        request: &[u8],
        head_request: bool,
    ) -> Result<Response, UpstreamError> {
        self.attempts(backend, request, head_request).await
    }

    /// Longest wait for a response head.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout.get()
    }

    async fn attempts(
        &self,
        backend: &Backend,
        request: &[u8],
        head_request: bool,
    ) -> Result<Response, UpstreamError> {
        if let Some(stream) = self.checkout(backend) {
            match attempt(stream, true, request, head_request).await {
                Ok(response) => return Ok(response),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Stale) => {
                    tracing::debug!(backend = %backend.id, "kept-alive connection was closed; retrying on a new one");
                }
            }
        }
        // Boxed: connecting is rare (connections are reused) and its future is
        // large; unboxed it would enlarge every connection's task while idle.
        let stream = Box::pin(self.connect(backend)).await?;
        match attempt(stream, false, request, head_request).await {
            Ok(response) => Ok(response),
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::Stale) => Err(UpstreamError::io("connection closed before a response")),
        }
    }

    /// A new connection to `backend`, trying each address its name resolves to.
    async fn connect(&self, backend: &Backend) -> Result<Stream, UpstreamError> {
        if backend.protocol() == Protocol::H2 {
            return self.connect_h2(backend).await;
        }
        let connect = async {
            let addrs = tokio::net::lookup_host(backend.authority.as_str())
                .await
                .map_err(|e| UpstreamError {
                    failure: UpstreamFailure::Connect,
                    detail: format!("resolve {}: {e}", backend.authority),
                })?;
            let mut last = UpstreamError {
                failure: UpstreamFailure::Connect,
                detail: format!("{} resolves to no address", backend.authority),
            };
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(error = %e, "set_nodelay failed");
                        }
                        if backend.scheme != http::uri::Scheme::HTTPS {
                            return Ok(Stream::Tcp(stream));
                        }
                        let tls = self.tls.load_full();
                        let host = backend.authority.host();
                        return match tls.connect(host, stream).await {
                            Ok(s) => Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s)))),
                            Err(e) => Err(UpstreamError {
                                failure: UpstreamFailure::Tls,
                                detail: format!("TLS with {} ({addr}): {e}", backend.authority),
                            }),
                        };
                    }
                    Err(e) => {
                        let failure = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            UpstreamFailure::Refused
                        } else {
                            UpstreamFailure::Connect
                        };
                        last = UpstreamError {
                            failure,
                            detail: format!("connect {addr}: {e}"),
                        };
                    }
                }
            }
            Err(last)
        };
        let timeout = self.connect_timeout.get();
        tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or_else(|_| {
                let what = match backend.scheme == http::uri::Scheme::HTTPS {
                    true => "connect and TLS handshake",
                    false => "connect",
                };
                Err(UpstreamError {
                    failure: UpstreamFailure::Connect,
                    detail: format!(
                        "{what} to {} timed out after {timeout:?}",
                        backend.authority
                    ),
                })
            })
    }

    /// A pipe to an `h2` backend, bridged onto its shared HTTP/2 connection
    /// (made now if there is none, so failing to reach it is reported as such).
    async fn connect_h2(&self, backend: &Backend) -> Result<Stream, UpstreamError> {
        let target = crate::h2up::Target {
            scheme: backend.scheme.clone(),
            authority: backend.authority.clone(),
            tls: self.tls.clone(),
            connect_timeout: self.connect_timeout.get(),
        };
        crate::h2up::pipe(&backend.h2_link, &target)
            .await
            .map_err(|e| UpstreamError {
                failure: e.failure,
                detail: e.detail,
            })
    }

    /// The most recently used idle connection to `backend`, if one is fresh enough.
    fn checkout(&self, backend: &Backend) -> Option<Stream> {
        let mut list = backend.idle.lock().unwrap_or_else(|e| e.into_inner());
        let idle_timeout = self.pool_idle_timeout.get();
        let now = Instant::now();
        while let Some(conn) = list.pop() {
            if now.duration_since(conn.since) >= idle_timeout {
                // The rest are older still.
                list.clear();
                break;
            }
            let mut conn = conn;
            if now < conn.expires && conn.stream.still_idle() {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Keeps a connection whose exchange ended cleanly for the next request.
    /// `announced`: the backend's `Keep-Alive: timeout`; the connection is let
    /// go a second before it (at least half of it), so Tether never reuses it
    /// in the moment the backend closes it. Zero: not kept.
    pub fn checkin(&self, backend: &Backend, stream: Stream, announced: Option<Duration>) {
        let keep = match announced {
            Some(t) if t.is_zero() => return,
            Some(t) => t
                .saturating_sub(Duration::from_secs(1))
                .max(t / 2)
                .min(self.pool_idle_timeout.get()),
            None => self.pool_idle_timeout.get(),
        };
        let mut list = backend.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock `Backend::retire` clears the list under: a
        // backend removed while this request ran keeps no connection.
        if backend.is_retired() {
            return;
        }
        if list.len() >= MAX_IDLE {
            list.remove(0);
        }
        let since = Instant::now();
        list.push(IdleConn {
            stream,
            since,
            expires: since + keep,
        });
    }

    /// Closes idle connections past their time. Run periodically, so a
    /// backend that stops getting requests does not keep them forever.
    pub fn sweep(&self, backends: &[std::sync::Arc<Backend>]) {
        let idle_timeout = self.pool_idle_timeout.get();
        let now = Instant::now();
        for backend in backends {
            let mut list = backend.idle.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|conn| now.duration_since(conn.since) < idle_timeout && now < conn.expires);
        }
    }

    /// Idle connections kept for `backend` (for tests and metrics).
    #[cfg(test)]
    pub fn idle_count(&self, backend: &Backend) -> usize {
        backend.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn sweep_interval(&self) -> Duration {
        (self.pool_idle_timeout.get() / 2).max(Duration::from_millis(100))
    }
}

/// Whether a reused connection that just ended without a response is reset
/// within `RESET_WAIT`: the proof that the backend had closed it before
/// reading the request (see the module's notes).
async fn reset_follows(stream: &Stream) -> bool {
    match stream.tcp() {
        Some(tcp) => tcp_reset_follows(tcp).await,
        None => false,
    }
}

async fn tcp_reset_follows(stream: &TcpStream) -> bool {
    let reset = async {
        loop {
            match stream.ready(Interest::ERROR).await {
                Ok(ready) if ready.is_error() => return,
                Ok(_) => tokio::task::yield_now().await,
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(RESET_WAIT, reset).await;
    matches!(
        stream.take_error(),
        Ok(Some(e)) if is_reset(&e)
    )
}

/// The failure an `h2` backend's bridge closed its pipe with, when the
/// request never reached the backend (no connection, no stream): reported
/// as that failure to connect, so the proxy fails over from it.
fn unsent(e: &std::io::Error) -> Option<UpstreamError> {
    crate::h2up::unsent(e).map(|why| UpstreamError {
        failure: why.failure,
        detail: why.detail.clone(),
    })
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

/// Writes the request and reads the response head on one connection.
///
/// A backend may answer before it has read the whole request (a 413 for a
/// large body): writing stops as soon as response bytes arrive, and the
/// connection is then not reused.
async fn attempt(
    mut stream: Stream,
    reused: bool,
    request: &[u8],
    head_request: bool,
) -> Result<Response, Attempt> {
    let fail = |detail: String| Attempt::Failed(UpstreamError::io(detail));
    let mut buf = buf::take();
    let mut written = 0;
    let mut flushed = false;
    let write = std::future::poll_fn(|cx| loop {
        let step = if written == request.len() {
            // TLS may hold its last records; a socket has nothing to flush.
            Pin::new(&mut stream).poll_flush(cx).map_ok(|()| 0)
        } else {
            Pin::new(&mut stream).poll_write(cx, &request[written..])
        };
        match step {
            Poll::Ready(Ok(_)) if written == request.len() => {
                flushed = true;
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                // Blocked on writing (or flushing): has the backend answered already?
                if stream.poll_read_ready(cx).is_ready() {
                    buf::ensure(&mut buf);
                    match stream.poll_read_vec(cx, &mut buf) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()))
                        }
                        Poll::Ready(Ok(_)) => return Poll::Ready(Ok(())),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                }
                return Poll::Pending;
            }
        }
    });
    let written_out = write.await;
    // Any byte from the backend (an interim 1xx answer too, which is dropped
    // from `buf` below) means it read the request: never a retry after that.
    let mut received = !buf.is_empty();
    if let Err(e) = written_out {
        if let Some(e) = unsent(&e) {
            return Err(Attempt::Failed(e));
        }
        // A kept-alive connection the backend had closed: the request never
        // reached a live socket, so a new connection may carry it.
        if reused && !received {
            return Err(Attempt::Stale);
        }
        return Err(fail(format!("write request: {e}")));
    }
    let request_complete = written == request.len() && flushed;
    loop {
        if !buf.is_empty() {
            match ResponseHead::parse(&buf, MAX_RESPONSE_HEAD, head_request) {
                Ok(None) => {}
                Ok(Some(head)) if head.status == 101 => {
                    return Err(fail(
                        "backend switched protocols, which Tether does not relay".into(),
                    ))
                }
                Ok(Some(head)) if head.status < 200 => {
                    // 100 Continue and other interim answers: Tether sends the
                    // whole body anyway, so they carry nothing for the client.
                    buf.drain(..head.len);
                    continue;
                }
                Ok(Some(head)) => {
                    return Ok(Response {
                        stream,
                        buf,
                        head,
                        request_complete,
                    })
                }
                Err(e @ (HeadError::TooLarge | HeadError::TooManyFields)) => {
                    return Err(fail(format!("response head: {e}")))
                }
                Err(e) => return Err(fail(format!("invalid response head: {e}"))),
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        match stream.read_buf(&mut buf).await {
            Err(e) => {
                if let Some(why) = unsent(&e) {
                    return Err(Attempt::Failed(why));
                }
                // Reset by a socket that was closed when the request arrived
                // (a kept-alive connection the backend had just closed): not
                // taken.
                if reused && !received && is_reset(&e) {
                    return Err(Attempt::Stale);
                }
                return Err(fail(format!("read response head: {e}")));
            }
            // A clean close after the request was written is not retried: the
            // backend may have acted on it (a tool call must not run twice),
            // unless the reset that follows proves it never read it.
            Ok(0) if reused && !received && reset_follows(&stream).await => {
                return Err(Attempt::Stale)
            }
            Ok(0) => {
                return Err(fail(
                    "connection closed before a complete response head".into(),
                ))
            }
            Ok(_) => received = true,
        }
    }
}

#[cfg(test)]
mod tests;
