//! HTTP/2 from clients (the `h2` crate): over TLS when ALPN picks `h2`, and
//! with prior knowledge (`h2c`) on a plain listener that opts in.
//!
//! Each stream is served, in memory, by the same request path an HTTP/1.1
//! connection takes (`stream`): its request is written as one HTTP/1.1
//! exchange into an in-memory `Client`, which `conn` serves exactly as a
//! socket's (routing, sessions, tokens, validation, relays, limits), and the
//! HTTP/1.1 answer it writes goes out as the stream's response (`io`: the
//! client's byte stream is the h2 stream). So every flow of every era behaves
//! the same over HTTP/2, by construction; the cost is writing each head as
//! HTTP/1.1 (the request's is read as it is written, not parsed again) and
//! parsing the answer's back (`docs/benchmarks.md`).
//!
//! Per connection: at most `http2.max_concurrent_streams` streams at once
//! (SETTINGS), header lists within `limits.max_header_bytes`, flow control per
//! stream (a slow stream's window fills and only it waits), and a guard
//! against rapid-reset floods (CVE-2023-44487): streams the client resets
//! before their answer ends are counted, and past `RESET_LIMIT` within
//! `RESET_WINDOW` the connection gets a GOAWAY (`ENHANCE_YOUR_CALM`) and
//! closes; the `h2` crate bounds streams reset before they are accepted. A
//! graceful shutdown sends GOAWAY: streams in flight finish, no new ones
//! start.

mod io;
mod stream;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::downstream::{Client, ConnSettings};
use crate::metrics::{self, Metrics};

/// Window of the rapid-reset guard.
const RESET_WINDOW: Duration = Duration::from_secs(10);

/// Client resets allowed per connection within `RESET_WINDOW`: twice the
/// stream limit (a client cancelling everything it has open, twice over).
fn reset_limit(max_streams: u32) -> u32 {
    (2 * max_streams).max(20)
}

/// Client resets of one connection, as a leaky bucket: each adds one, and
/// the level drains at `limit` per `RESET_WINDOW`, so no window boundary
/// lets a burst of twice the limit through.
pub(crate) struct Resets {
    bucket: Mutex<(Instant, f64)>,
    limit: u32,
}

impl Resets {
    fn new(limit: u32) -> Self {
        Resets {
            bucket: Mutex::new((Instant::now(), 0.0)),
            limit,
        }
    }

    fn drained(&self, b: &mut (Instant, f64)) {
        let now = Instant::now();
        let rate = f64::from(self.limit) / RESET_WINDOW.as_secs_f64();
        b.1 = (b.1 - now.duration_since(b.0).as_secs_f64() * rate).max(0.0);
        b.0 = now;
    }

    /// Counts one reset.
    pub(crate) fn note(&self) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        self.drained(&mut b);
        b.1 += 1.0;
    }

    fn flooded(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        self.drained(&mut b);
        b.1 > f64::from(self.limit)
    }
}

/// After a GOAWAY with no stream left, how long the client has to close
/// before Tether does (h2 waits for the answer to its PING otherwise).
const GOAWAY_GRACE: Duration = Duration::from_secs(2);

/// Serves one HTTP/2 connection until either side ends it. `secure`: it
/// came over TLS (its streams' backends see `X-Forwarded-Proto: https`).
/// `streams` serves each stream's in-memory client (the connection loop of
/// `crate::conn`, which hands it in: this module does not reach back).
pub async fn serve<T, S, F>(
    io: T,
    peer: SocketAddr,
    secure: bool,
    streams: S,
    metrics: Arc<Metrics>,
    settings: Arc<ConnSettings>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Client) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let serve_stream = Arc::new(streams);
    let h2 = &settings.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        // Room for a request body in flight without a round trip per 64 KiB,
        // bounded per stream and per connection.
        .initial_window_size(256 << 10)
        .initial_connection_window_size(1 << 20)
        // What a stream may hold for a client that does not read.
        .max_send_buffer_size(64 << 10);
    let handshake = tokio::time::timeout(settings.header_read_timeout, builder.handshake(io));
    let mut conn: h2::server::Connection<T, bytes::Bytes> = match handshake.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return error(&metrics, "http2", &format!("handshake: {e} (from {peer})")),
        Err(_) => {
            return error(
                &metrics,
                "http2",
                &format!("no preface in time (from {peer})"),
            )
        }
    };
    let resets = Arc::new(Resets::new(reset_limit(h2.max_concurrent_streams)));
    let peer_ip = crate::downstream::ip_text(peer.ip());
    let mut streams = JoinSet::new();
    let mut closing = Box::pin(settings.lifecycle.clone().until_closing());
    let mut goaway = false;
    let mut calmed = false;
    // A connection with no stream open is idle: after `header_read_timeout`
    // (as an idle HTTP/1.1 connection) it gets a GOAWAY, and after
    // `GOAWAY_GRACE` more it is closed.
    let mut idle = Box::pin(tokio::time::sleep(settings.header_read_timeout));
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((_, mut respond))) if calmed => respond.send_reset(h2::Reason::REFUSED_STREAM),
                Some(Ok((request, respond))) => {
                    metrics.http2_streams.inc();
                    let cx = stream::Context {
                        peer,
                        peer_ip: peer_ip.clone(),
                        secure,
                        metrics: metrics.clone(),
                        settings: settings.clone(),
                        resets: resets.clone(),
                    };
                    // Boxed: the task then holds a pointer, not the stream's
                    // whole future, which it would copy at each stage.
                    streams.spawn(Box::pin(stream::serve(request, respond, cx, serve_stream.clone())));
                }
                Some(Err(e)) => {
                    if e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) && !e.is_remote() {
                        // The h2 crate's own guard: streams reset before they
                        // were accepted, or a flood of frames.
                        error(&metrics, "rapid_reset", &format!("{e} (from {peer}): GOAWAY"));
                    } else if !(e.is_io() || e.is_go_away() && e.is_remote()) {
                        error(&metrics, "http2", &format!("{e} (from {peer})"));
                    }
                    break;
                }
                None => break,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    let wait = if goaway { GOAWAY_GRACE } else { settings.header_read_timeout };
                    idle.as_mut().reset(Instant::now() + wait);
                }
            }
            () = &mut closing, if !goaway => {
                conn.graceful_shutdown();
                goaway = true;
                idle.as_mut().reset(Instant::now() + GOAWAY_GRACE);
            }
            () = &mut idle, if streams.is_empty() => {
                if goaway {
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    break;
                }
                conn.graceful_shutdown();
                goaway = true;
                idle.as_mut().reset(Instant::now() + GOAWAY_GRACE);
            }
        }
        if !calmed && resets.flooded() {
            calmed = true;
            error(
                &metrics,
                "rapid_reset",
                &format!(
                    "more than {} stream resets within {RESET_WINDOW:?} (from {peer}): GOAWAY",
                    resets.limit
                ),
            );
            conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
            streams.abort_all();
        }
    }
}

fn error(metrics: &Metrics, kind: &'static str, detail: &str) {
    crate::downstream::hostile::note(kind, detail);
    metrics
        .connection_errors
        .get_or_create(&metrics::Kind { kind })
        .inc();
}
