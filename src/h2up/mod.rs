//! HTTP/2 to backends configured `protocol = "h2"`: a shared, multiplexed
//! connection per backend (more when the server's stream limit fills one),
//! reached through in-memory pipes that speak
//! HTTP/1.1, so the request path above stays one copy of the code.
//!
//! `forward::upstream` asks for a connection to an `h2` backend and gets an
//! in-memory pipe (`pipe`); the other end is a bridge task (`bridge`) that
//! reads each HTTP/1.1 request from the pipe (the project's own parser; the
//! body by its framing), sends it as an h2 stream on the backend's `Link`,
//! and writes the answer back as HTTP/1.1 (`translate`). The bridge serves
//! requests on its pipe one after another, so the idle list keeps pipes as it
//! keeps sockets; an idle bridge whose connection closed ends its pipe, and
//! the idle list drops it.
//!
//! The connection (`Link`) is made lazily and single-flight (the first request
//! dials, the others wait for it and share its failure), and made again once
//! it closes or the backend sent GOAWAY. Over `https://` only ALPN `h2` is
//! offered, and a server that picks anything else is a TLS failure; over
//! `http://` it is h2c with prior knowledge. The server's
//! `max_concurrent_streams` holds: a connection with that many streams open
//! gets a sibling (long-lived event streams must not hold calls back). A
//! PING every `PING_INTERVAL` unanswered for `PING_TIMEOUT` closes it.
//!
//! Flow control: each stream's window (`STREAM_WINDOW`) is given back only
//! as the pipe takes its bytes, so a slow reader stalls its own stream; the
//! connection's window is as large as h2 allows, so no number of stalled
//! streams closes it for the others. Per stream at most `STREAM_WINDOW` plus
//! the pipe's buffer is held.
//!
//! Safety of retries: a stream the server refused unprocessed
//! (`REFUSED_STREAM`, or above a GOAWAY's last stream id) is sent again,
//! once: on the same connection after a `REFUSED_STREAM` (one stream turned
//! away condemns no connection), on another after a GOAWAY; a request the
//! `h2` crate could not open at all (the connection was gone) went nowhere
//! and is sent on a new one. A request
//! that still reached no backend (no new connection could be had, or the
//! server refused it twice) closes the pipe with that reason, which Tether
//! reads as the backend's failure to connect: failed over from, or the
//! owner gone for a session, never a 502 of a call that may have run. Any other
//! failure after the request was sent closes the pipe without an answer: a
//! 502, never a replay. Tether dropping its end of the pipe (the client left,
//! a timeout) resets the stream with `CANCEL` at once.
//!
//! This module never imports `pool`, `forward` or `proxy`: `pool` holds a
//! `Link` per backend and the health checks use `once`.

mod bridge;
mod pipe;
mod translate;

pub use pipe::unsent;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use tokio::net::TcpStream;

use crate::error::UpstreamFailure;
use crate::tls::backend::Shared as BackendTls;
use crate::transport::Stream;

/// Each stream's receive window: what one stream may hold unread.
const STREAM_WINDOW: u32 = 256 << 10;
/// The connection's receive window: the largest HTTP/2 allows (2^31 - 1;
/// the protocol's default is 64 KiB), so streams that hold their windows
/// never starve the others: what the connection holds is bounded by the
/// streams' windows, not by this.
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// The pipe's buffer each way.
const PIPE: usize = 64 << 10;
/// Largest response head (HPACK-decoded) taken from a backend: as over
/// HTTP/1.1.
const MAX_HEADER_LIST: u32 = 64 << 10;
/// Streams opened before the server's SETTINGS name its limit: the limit
/// RFC 9113 recommends servers allow at least.
const INITIAL_STREAMS: usize = 100;
/// How often an HTTP/2 connection to a backend is checked with a PING, and
/// how long its answer may take.
/// (Shorter in unit tests, which watch a connection that stops answering.)
const PING_INTERVAL: Duration = match cfg!(test) {
    true => Duration::from_millis(200),
    false => Duration::from_secs(10),
};
const PING_TIMEOUT: Duration = PING_INTERVAL;
/// Most connections to one backend: past them a stream waits for a free one
/// on the least busy.
const MAX_CONNECTIONS: usize = 16;
/// Streams one connection may open: a client's stream ids are the odd
/// numbers below 2^31. A connection that used them is replaced before the
/// `h2` crate refuses every later request on it (a user error, which
/// condemns no connection: at 10,000 requests a second, after 30 hours).
const STREAM_IDS: u64 = (1 << 30) - 1;

/// Where a backend is and how to reach it.
#[derive(Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    pub tls: BackendTls,
    pub connect_timeout: Duration,
}

/// Why no connection could be had: what `forward::upstream` reports.
#[derive(Debug, Clone)]
pub struct DialError {
    pub failure: UpstreamFailure,
    pub detail: String,
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Carried by a pipe's read error when its request never reached the
/// backend (`pipe::unsent`).
impl std::error::Error for DialError {}

/// A backend's shared HTTP/2 connection, if one is up.
#[derive(Default)]
pub struct Link {
    /// The live connections; a new one is made only when every one has as
    /// many streams open as its server allows (a session's event stream
    /// holds one for hours: the calls must not queue behind them).
    current: Mutex<Vec<Conn>>,
    /// Held while dialing: one connection attempt at a time.
    dialing: tokio::sync::Mutex<()>,
    made: AtomicU64,
    /// Dials finished, and the last one's failure: a request that waited
    /// for a dial that failed fails with it (it does not dial again, one
    /// timeout after another).
    dials: AtomicU64,
    failure: Mutex<Option<DialError>>,
    /// Bumped by `forget`: a dial that was under way then is not kept.
    forgotten: AtomicU64,
    /// `STREAM_IDS` unless a test sets fewer (0: unset).
    stream_ids: u64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("made", &self.made.load(Ordering::Relaxed))
            .finish()
    }
}

/// One HTTP/2 connection (a handle to it; the connection task drives it).
#[derive(Clone)]
pub(crate) struct Conn {
    id: u64,
    send: SendRequest<Bytes>,
    /// True once the connection task ended, or a request found it going
    /// away: idle bridges watch it and close their pipes.
    closed: Arc<tokio::sync::watch::Sender<bool>>,
    /// Streams open on it (`Slot`s).
    open: Arc<AtomicUsize>,
    /// Streams given a slot on it so far (each may have opened one), and
    /// how many it may open (`STREAM_IDS`).
    opened: Arc<AtomicU64>,
    stream_ids: u64,
}

impl Conn {
    fn usable(&self) -> bool {
        !*self.closed.borrow() && self.opened.load(Ordering::Relaxed) < self.stream_ids
    }

    fn close(&self) {
        self.closed.send_replace(true);
    }

    /// A stream counted on it, if it is usable and has one to spare under
    /// the server's limit (checked and counted at once, so two requests
    /// never both take the last one).
    pub(crate) fn try_slot(&self) -> Option<Slot> {
        if !self.usable() {
            return None;
        }
        let limit = self.send.current_max_send_streams();
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= limit {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    return Some(Slot(self.open.clone()));
                }
                Err(now) => open = now,
            }
        }
    }

    /// A stream counted on it whatever its limit (the `h2` crate holds it
    /// until one ends).
    fn slot(&self) -> Slot {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Slot(self.open.clone())
    }
}

/// A connection handed out for one stream: the stream's slot on it, and
/// whether it was dialed for this request (a stream that cannot be opened on
/// a fresh connection is not tried on another).
pub(crate) struct Picked {
    pub conn: Conn,
    pub slot: Slot,
    pub dialed: bool,
}

/// A stream open on a connection, counted while it lives.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Link {
    /// The live connection, or a new one (dialed by the first caller; the
    /// others wait for it).
    pub(crate) async fn conn(&self, target: &Target) -> Result<Picked, DialError> {
        if let Some(picked) = self.live() {
            return Ok(picked);
        }
        let seen = self.dials.load(Ordering::Acquire);
        let _dialing = self.dialing.lock().await;
        if let Some(picked) = self.live() {
            return Ok(picked);
        }
        if self.dials.load(Ordering::Acquire) != seen {
            // A dial ended while this request waited for it, and failed.
            let failed = self
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(e) = failed {
                return Err(e);
            }
        }
        let generation = self.forgotten.load(Ordering::Acquire);
        let sibling = !self.lock().is_empty();
        let made = self.dial(target, sibling).await;
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = made.as_ref().err().cloned();
        self.dials.fetch_add(1, Ordering::AcqRel);
        let conn = made?;
        let slot = conn.slot();
        let mut current = self.lock();
        if self.forgotten.load(Ordering::Acquire) == generation {
            current.push(conn.clone());
        } else {
            // Forgotten while it was dialed: this request only, then it goes.
            conn.close();
        }
        Ok(Picked {
            conn,
            slot,
            dialed: true,
        })
    }

    async fn dial(&self, target: &Target, sibling: bool) -> Result<Conn, DialError> {
        let id = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        let io = dial(target).await?;
        let timeout = target.connect_timeout;
        let stream_ids = match self.stream_ids {
            0 => STREAM_IDS,
            n => n,
        };
        let made = handshake(io, id, &target.authority, sibling, stream_ids);
        tokio::time::timeout(timeout, made)
            .await
            .unwrap_or_else(|_| {
                Err(DialError {
                    failure: UpstreamFailure::Connect,
                    detail: format!(
                        "HTTP/2 handshake with {} timed out after {timeout:?}",
                        target.authority
                    ),
                })
            })
    }

    /// A live connection with a stream to spare, the oldest first (so the
    /// later ones empty, and close once idle: `keep_alive`); the ones that
    /// ended are dropped. At `MAX_CONNECTIONS` the least busy one, where the
    /// stream waits for a free one (a server that takes few streams, or none,
    /// does not get a connection per request).
    fn live(&self) -> Option<Picked> {
        let mut current = self.lock();
        current.retain(Conn::usable);
        let pick = |conn: &Conn, slot| Picked {
            conn: conn.clone(),
            slot,
            dialed: false,
        };
        if let Some(picked) = current
            .iter()
            .find_map(|c| c.try_slot().map(|slot| pick(c, slot)))
        {
            return Some(picked);
        }
        if current.len() < MAX_CONNECTIONS {
            return None;
        }
        let least = current
            .iter()
            .min_by_key(|c| c.open.load(Ordering::Relaxed))?;
        Some(pick(least, least.slot()))
    }

    /// `conn` is no good any more (it is going away, or refused a stream):
    /// the next request dials anew. Its streams in flight finish on it.
    pub(crate) fn discard(&self, conn: &Conn) {
        conn.close();
        self.lock().retain(|c| c.id != conn.id);
    }

    /// Lets the connections go (the backend left, or is no longer `h2`),
    /// and one being dialed now.
    pub fn forget(&self) {
        let mut current = self.lock();
        self.forgotten.fetch_add(1, Ordering::AcqRel);
        for conn in current.drain(..) {
            conn.close();
        }
    }

    /// A link whose connections each open at most `n` streams (tests).
    #[cfg(test)]
    pub(crate) fn with_stream_ids(n: u64) -> Link {
        Link {
            stream_ids: n,
            ..Link::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pipe to the backend over `link` (connected now, so a failure to reach
/// the backend is reported as one, with nothing sent).
pub async fn pipe(link: &Arc<Link>, target: &Target) -> Result<Stream, DialError> {
    // Its slot goes at once: the bridge counts a stream when it opens one.
    let conn = link.conn(target).await?.conn;
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let unsent = pipe::Unsent::default();
    tokio::spawn(bridge::serve(
        theirs,
        unsent.clone(),
        link.clone(),
        target.clone(),
        Some(conn),
    ));
    Ok(Stream::Boxed(Box::new(pipe::Pipe::new(ours, unsent))))
}

/// A pipe over a connection of its own, closed with the pipe (a health probe
/// checks that a new connection works, not the shared one).
pub async fn once(target: &Target) -> Result<Stream, DialError> {
    pipe(&Arc::new(Link::default()), target).await
}

/// TCP to the first address that answers, then TLS offering `h2` only for
/// `https://`, within `connect_timeout`.
async fn dial(target: &Target) -> Result<Stream, DialError> {
    let authority = &target.authority;
    let connect = async {
        let addrs = tokio::net::lookup_host(authority.as_str())
            .await
            .map_err(|e| DialError {
                failure: UpstreamFailure::Connect,
                detail: format!("resolve {authority}: {e}"),
            })?;
        let mut last = DialError {
            failure: UpstreamFailure::Connect,
            detail: format!("{authority} resolves to no address"),
        };
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return secure(target, tcp).await,
                Err(e) => {
                    let failure = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => UpstreamFailure::Refused,
                        _ => UpstreamFailure::Connect,
                    };
                    last = DialError {
                        failure,
                        detail: format!("connect {addr}: {e}"),
                    };
                }
            }
        }
        Err(last)
    };
    let timeout = target.connect_timeout;
    tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or_else(|_| {
            Err(DialError {
                failure: UpstreamFailure::Connect,
                detail: format!("connect (h2) to {authority} timed out after {timeout:?}"),
            })
        })
}

async fn secure(target: &Target, tcp: TcpStream) -> Result<Stream, DialError> {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    if target.scheme != Scheme::HTTPS {
        return Ok(Stream::Tcp(tcp));
    }
    let tls = target.tls.load_full();
    let authority = &target.authority;
    let stream = tls
        .connect_h2(authority.host(), tcp)
        .await
        .map_err(|e| DialError {
            failure: UpstreamFailure::Tls,
            detail: format!("TLS with {authority}: {e}"),
        })?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(DialError {
            failure: UpstreamFailure::Tls,
            detail: format!(
                "{authority} did not choose HTTP/2 by ALPN (protocol = \"h2\" offers only h2)"
            ),
        });
    }
    Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(
        stream,
    ))))
}

/// The HTTP/2 handshake on `io`; the connection task runs until the
/// connection ends.
async fn handshake(
    io: Stream,
    id: u64,
    authority: &Authority,
    sibling: bool,
    stream_ids: u64,
) -> Result<Conn, DialError> {
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // A response head as large as an HTTP/1.1 backend's may be.
        .max_header_list_size(MAX_HEADER_LIST)
        // Until the server's SETTINGS say otherwise (h2 assumes no limit,
        // so a burst at start would be refused past the server's).
        .initial_max_send_streams(INITIAL_STREAMS)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| DialError {
            // Nothing was sent yet: a failed preface is as a failed connect.
            failure: UpstreamFailure::Connect,
            detail: format!("HTTP/2 handshake with {authority}: {e}"),
        })?;
    let closed = Arc::new(tokio::sync::watch::Sender::new(false));
    let task_closed = closed.clone();
    let name = authority.to_string();
    let pings = connection.ping_pong();
    let open = Arc::new(AtomicUsize::new(0));
    let idle = sibling.then(|| open.clone());
    tokio::spawn(async move {
        let ended = async {
            match connection.await {
                Ok(()) => tracing::debug!(backend = %name, "HTTP/2 connection closed"),
                Err(e) if e.is_io() || e.is_go_away() => {
                    tracing::debug!(backend = %name, error = %e, "HTTP/2 connection ended")
                }
                Err(e) => tracing::warn!(backend = %name, error = %e, "HTTP/2 connection failed"),
            }
        };
        tokio::select! {
            () = ended => {}
            end = keep_alive(pings, idle) => match end {
                KeepAlive::Unanswered => tracing::warn!(
                    backend = %name,
                    "HTTP/2 connection answered no PING within {PING_TIMEOUT:?}: closed"
                ),
                KeepAlive::Idle => {
                    tracing::debug!(backend = %name, "idle extra HTTP/2 connection closed")
                }
            },
        }
        // Dropping the connection fails its streams in flight (502s).
        task_closed.send_replace(true);
    });
    Ok(Conn {
        id,
        send,
        closed,
        open,
        opened: Arc::default(),
        stream_ids,
    })
}

/// Why `keep_alive` gave a connection up.
enum KeepAlive {
    Unanswered,
    /// An extra connection (made when the others were full) with no stream
    /// open at two checks in a row: the load went down.
    Idle,
}

/// A PING every `PING_INTERVAL`; returns when one goes unanswered for
/// `PING_TIMEOUT` (a server or a path that stopped answering: without this,
/// its requests would wait out their own timeouts until TCP gave up, while
/// health probes, on connections of their own, find the backend well).
async fn keep_alive(pings: Option<h2::PingPong>, sibling: Option<Arc<AtomicUsize>>) -> KeepAlive {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    let mut idle_checks = 0;
    loop {
        tokio::time::sleep(PING_INTERVAL).await;
        if let Some(open) = &sibling {
            idle_checks = match open.load(Ordering::Acquire) {
                0 => idle_checks + 1,
                _ => 0,
            };
            if idle_checks >= 2 {
                return KeepAlive::Idle;
            }
        }
        let pong = tokio::time::timeout(PING_TIMEOUT, pings.ping(h2::Ping::opaque()));
        match pong.await {
            Ok(Ok(_)) => {}
            // The connection ended: its own task reports it.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return KeepAlive::Unanswered,
        }
    }
}

#[cfg(test)]
mod conn_tests;
#[cfg(test)]
mod tests;
