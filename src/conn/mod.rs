//! Stage 1, per connection: one client's HTTP/1.1 connection.
//!
//! The keep-alive loop: has the client side (`crate::downstream`) read each
//! request head within its size and time limits, then its body (MCP bodies
//! are single JSON-RPC messages, held whole: why in `docs/config.md`), hands
//! the request to `Proxy::handle`, and goes round again while both sides keep
//! the connection alive; a failed read is answered, counted and logged here
//! (`hostile`: rate-limited). One task per connection drives the client socket and,
//! during an exchange, the upstream socket too.
//!
//! A client that shuts down its sending side after a request (`nc -N`, some
//! HTTP/1.0 tools) is half-closed, not gone: it is answered, then the
//! connection closes. Whether such a close cancels the request depends on the
//! protocol revision (`Proxy::call`).
//!
//! This stage never panics on input; if anything below it does, the request
//! is answered 502 (when nothing was written yet), counted and logged once,
//! and the connection closes (`crate::panic`).

mod handshake;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::downstream::{hostile, is_disconnect, Client, ConnSettings, Held, ReadError};
use crate::error::ProxyError;
use crate::http1::head::HeadError;
use crate::metrics::{self, Metrics};
use crate::panic::CatchUnwind;
use crate::proxy::{Outcome, Proxy};
use crate::transport::Stream;

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
    // Built here, outside the task's future, which then holds the client
    // once (an async fn would also keep its moved-from arguments).
    let client = Client::new(Stream::Tcp(stream), peer, &settings);
    serve_client(client, proxy, metrics, settings, false)
}

/// Not an `async fn`: that would keep its arguments (the client, 200 bytes)
/// and a moved copy of them for the task's whole life; the block uses its
/// captures in place. `stream`: an HTTP/2 stream's in-memory client
/// (`serve_stream`), which has no connection steps of its own.
#[allow(clippy::manual_async_fn)]
fn serve_client(
    mut client: Client,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    settings: Arc<ConnSettings>,
    stream: bool,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let _open = (!stream).then(|| ConnGuard::new(&metrics));
        let steps = settings.proxy_protocol || settings.tls.is_some() || settings.http2.h2c;
        if !stream && steps {
            // Boxed: a plain HTTP/1.1 listener's task does not carry them.
            match Box::pin(begin(client, &proxy, &metrics, &settings)).await {
                Some(http1) => client = http1,
                None => return,
            }
        }
        let mut served = 0usize;
        loop {
            let one = serve_one(&mut client, &proxy, &metrics, &settings, served > 0);
            match CatchUnwind::new(one).await {
                Ok(Next::Again) => served += 1,
                Ok(Next::Close) => {
                    client.shutdown();
                    return;
                }
                Ok(Next::Ended) => return,
                Err(panic) => {
                    let what = crate::panic::describe(&*panic);
                    return Box::pin(after_panic(&mut client, what, &metrics)).await;
                }
            }
            client.release_idle_buffer();
        }
    }
}

/// A connection's own steps before HTTP/1.1: the PROXY header, the TLS
/// handshake, HTTP/2 (ALPN `h2`, or the h2c preface), which is served here
/// whole. `Some`: an HTTP/1.1 client, ready for its first request.
async fn begin(
    mut client: Client,
    proxy: &Arc<Proxy>,
    metrics: &Arc<Metrics>,
    settings: &Arc<ConnSettings>,
) -> Option<Client> {
    if settings.proxy_protocol {
        match client.read_proxy_header(settings.header_read_timeout).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(why) => {
                let why = format!("{why} (from {})", client.peer());
                hostile::note("proxy_protocol", &why);
                metrics
                    .connection_errors
                    .get_or_create(&metrics::Kind {
                        kind: "proxy_protocol",
                    })
                    .inc();
                return None;
            }
        }
    }
    if let Some(tls) = settings.tls.clone() {
        client = handshake::handshake(client, &tls, metrics, settings).await?;
    }
    let h2 = client.alpn_h2()
        || (settings.http2.h2c
            && !client.is_tls()
            && client
                .begins_with_h2_preface(settings.header_read_timeout)
                .await);
    if !h2 {
        return Some(client);
    }
    let secure = client.is_tls();
    let (stream, peer, read) = client.into_parts();
    metrics.http2_connections.inc();
    let io = crate::transport::Prefixed::new(read, stream);
    // Each stream is served by the same loop as a connection (`serve_stream`).
    let (p, m, s) = (proxy.clone(), metrics.clone(), settings.clone());
    let streams = move |client| serve_stream(client, p.clone(), m.clone(), s.clone());
    let serve = crate::http2::serve(io, peer, secure, streams, metrics.clone(), settings.clone());
    Box::pin(serve).await;
    None
}

/// One HTTP/2 stream's exchange, over an in-memory client (`crate::http2`):
/// the same loop as a connection's, without the connection's own steps.
pub fn serve_stream(
    client: Client,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    settings: Arc<ConnSettings>,
) -> impl std::future::Future<Output = ()> + Send {
    serve_client(client, proxy, metrics, settings, true)
}

/// Reads one request, has it answered, and says what comes next. (Free
/// functions over the client's narrow API, `downstream`: the client knows
/// nothing of the proxy.)
async fn serve_one(
    client: &mut Client,
    proxy: &Arc<Proxy>,
    metrics: &Metrics,
    settings: &Arc<ConnSettings>,
    kept_alive: bool,
) -> Next {
    client.begin_request();
    // The request's head, body and budget live in this future only, so
    // a relay that follows (perhaps a held stream for hours) keeps none
    // of them in the connection's task.
    // Boxed, for the same reason: the task's size is its largest phase,
    // and a held stream should pay for the relay's, not this one's.
    let outcome = match Box::pin(request(client, proxy, metrics, settings, kept_alive)).await {
        Ok(outcome) => outcome,
        Err(next) => return next,
    };
    let keep_alive = match outcome {
        Outcome::Answered { keep_alive } => keep_alive,
        Outcome::Relay(relay) => {
            if relay.is_stream() {
                // Perhaps held for hours: keep no timers armed meanwhile.
                client.forget_timers();
            }
            relay.run(client).await
        }
    };
    client.emit_access();
    if keep_alive && client.may_go_on() {
        Next::Again
    } else {
        Next::Close
    }
}

/// Reads a request and has it routed, up to the response head.
async fn request(
    client: &mut Client,
    proxy: &Arc<Proxy>,
    metrics: &Metrics,
    settings: &Arc<ConnSettings>,
    kept_alive: bool,
) -> Result<Outcome, Next> {
    let head = match client.read_head(settings, kept_alive).await {
        Ok(head) => head,
        Err(e) => return Err(Box::pin(fail(client, e, proxy, metrics)).await),
    };
    // Most bodies arrive with their head; waiting for one is boxed so its
    // future does not enlarge every connection's task.
    let (body, held) = match client.body_in_buf(&head, settings) {
        Some(body) => (body, Held::default()),
        None => match Box::pin(client.read_body(&head, settings)).await {
            Ok(read) => read,
            Err(e) => return Err(Box::pin(fail(client, e, proxy, metrics)).await),
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
            |r: std::ops::Range<usize>| String::from_utf8_lossy(&client.buf()[r]).into_owned();
        let target = text(head.target.clone());
        span.record("method", text(head.method.clone()));
        // Without the query: a legacy one carries the session token.
        span.record("target", target.split('?').next().unwrap_or_default());
    }
    let handle = Box::pin(proxy.handle(client, &head, body));
    let outcome = if span.is_disabled() {
        handle.await
    } else {
        tracing::Instrument::instrument(handle, span).await
    };
    drop(held);
    Ok(outcome)
}

/// Ends the connection after a failed read: answers when there is
/// something to say, counts it, closes.
async fn fail(client: &mut Client, e: ReadError, proxy: &Proxy, metrics: &Metrics) -> Next {
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
            if client.send_error(err, &body, true, false).await.is_ok() {
                client.linger().await;
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
        if client.send_error(&err, &body, true, false).await.is_ok() {
            client.linger().await;
        }
    }
    Next::Ended
}

/// After a panic below this connection: answers 502 if nothing of an
/// answer was written yet, counts and logs it once, closes.
async fn after_panic(client: &mut Client, what: String, metrics: &Metrics) {
    metrics.internal_errors.inc();
    tracing::error!(
        peer = %client.peer(),
        panic = %what,
        answered = client.answered(),
        "internal error in a connection task; connection closed"
    );
    if !client.answered() {
        let err = ProxyError::Internal;
        let body = err.body(&serde_json::Value::Null);
        let _ = client.send_error(&err, &body, true, false).await;
    }
    client.shutdown();
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
