//! A fake MCP replica that costs as little CPU as possible, for `bench/run.sh`:
//! the benchmark measures proxies, so the replica must not be the bottleneck.
//!
//! Speaks just enough MCP over HTTP/1.1 (hyper, one thread):
//!
//! - `POST /mcp` without `Mcp-Session-Id` whose body holds `"initialize"`: a new
//!   session id `<tag>-<32 hex>` in `Mcp-Session-Id` and a fixed initialize result.
//! - `POST /mcp` without a session but with `Mcp-Method` (2026-07-28): the same
//!   fixed `tools/call` result.
//! - `POST /mcp` with `Mcp-Session-Id`: a fixed small `tools/call` result and the
//!   header echoed. An id without this replica's `<tag>-` prefix gets the SDK's
//!   404, so a proxy that loses stickiness shows up as non-2xx answers in wrk.
//!   No session table: the prefix check is the whole session lookup.
//! - `GET /sse`: a legacy HTTP+SSE stream whose first event is
//!   `event: endpoint` / `data: /messages?sessionId=<tag>-<hex>`, then held open.
//!   `GET /sse?tick_ms=N` also sends `event: tick` / `data: <unix time in ns>`
//!   every N ms, so a client can measure per-event latency (arrival - stamp).
//! - `POST /messages?sessionId=...`: 202 Accepted.
//!
//! Usage: `fast-replica [--listen ADDR | --port PORT] [--tag TAG]` (defaults:
//! 127.0.0.1, port 0, tag `s1`). Prints `fast-replica: listening on ADDR` once bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpListener;

const MCP_SESSION_ID: &str = "mcp-session-id";
const TOOL_RESULT: &str =
    r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ok"}]}}"#;
const INIT_RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"fast-replica","version":"0"}}}"#;
const NOT_FOUND: &str =
    r#"{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}"#;

struct Replica {
    tag: String,
    /// Session ids are `<tag>-<random prefix><counter>`: unique without a lock or a table.
    salt: u64,
    next: AtomicU64,
}

impl Replica {
    fn new_session_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:016x}{:016x}", self.tag, self.salt, n)
    }

    fn owns(&self, id: &[u8]) -> bool {
        let tag = self.tag.as_bytes();
        id.len() > tag.len() && id.starts_with(tag) && id[tag.len()] == b'-'
    }
}

fn main() {
    let mut addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut tag = "s1".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let parsed = match (arg.as_str(), value) {
            ("--listen", Some(v)) => v.parse().map(|a| addr = a).map_err(|e| e.to_string()),
            ("--port", Some(v)) => v
                .parse::<u16>()
                .map(|p| addr.set_port(p))
                .map_err(|e| e.to_string()),
            ("--tag", Some(v)) => {
                tag = v;
                Ok(())
            }
            (other, _) => Err(format!("unknown or incomplete option {other}")),
        };
        if let Err(e) = parsed {
            eprintln!(
                "fast-replica: {e}\nusage: fast-replica [--listen ADDR | --port PORT] [--tag TAG]"
            );
            std::process::exit(2);
        }
    }
    let replica = Box::leak(Box::new(Replica {
        tag,
        salt: rand::thread_rng().gen(),
        next: AtomicU64::new(0),
    }));
    // One thread: the replica shares a core with the load generator, and a
    // single-threaded runtime has no cross-thread wakeups to pay for.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime.and_then(|rt| rt.block_on(serve(addr, replica)));
    if let Err(e) = result {
        eprintln!("fast-replica: {e}");
        std::process::exit(1);
    }
}

async fn serve(addr: SocketAddr, replica: &'static Replica) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("fast-replica: listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors: back off rather than spin.
                eprintln!("fast-replica: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(replica, req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    replica: &'static Replica,
    req: Request<Incoming>,
) -> Result<Response<ReplicaBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if parts.method == Method::GET && path == "/sse" {
        return Ok(sse(replica, parts.uri.query()));
    }
    // Read the whole body so the connection can be reused.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(full(StatusCode::BAD_REQUEST, "text/plain", "bad body")),
    };
    if parts.method != Method::POST {
        return Ok(full(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST only",
        ));
    }
    if path.starts_with("/messages") {
        return Ok(full(StatusCode::ACCEPTED, "text/plain", ""));
    }
    if path != "/mcp" {
        return Ok(full(StatusCode::NOT_FOUND, "text/plain", "not found"));
    }
    match parts.headers.get(MCP_SESSION_ID) {
        Some(id) if replica.owns(id.as_bytes()) => {
            let mut resp = full(StatusCode::OK, "application/json", TOOL_RESULT);
            resp.headers_mut().insert(MCP_SESSION_ID, id.clone());
            Ok(resp)
        }
        Some(_) => Ok(full(StatusCode::NOT_FOUND, "application/json", NOT_FOUND)),
        // A 2026-07-28 request: no session, the same small result.
        None if parts.headers.contains_key("mcp-method") => {
            Ok(full(StatusCode::OK, "application/json", TOOL_RESULT))
        }
        None if contains(&body, b"\"initialize\"") => {
            let mut resp = full(StatusCode::OK, "application/json", INIT_RESULT);
            if let Ok(id) = HeaderValue::try_from(replica.new_session_id()) {
                resp.headers_mut().insert(MCP_SESSION_ID, id);
            }
            Ok(resp)
        }
        None => Ok(full(
            StatusCode::BAD_REQUEST,
            "application/json",
            r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"},"id":null}"#,
        )),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn full(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> Response<ReplicaBody> {
    let mut resp = Response::new(ReplicaBody::Full(Some(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn sse(replica: &Replica, query: Option<&str>) -> Response<ReplicaBody> {
    let tick = query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("tick_ms=")))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(|ms| {
            let period = Duration::from_millis(ms);
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
    let first = format!(
        "event: endpoint\ndata: /messages?sessionId={}\n\n",
        replica.new_session_id()
    );
    let mut resp = Response::new(ReplicaBody::Stream {
        first: Some(Bytes::from(first)),
        tick,
    });
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A fixed body, or an SSE stream that never ends by itself.
enum ReplicaBody {
    Full(Option<Bytes>),
    Stream {
        first: Option<Bytes>,
        tick: Option<tokio::time::Interval>,
    },
}

impl Body for ReplicaBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ReplicaBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ReplicaBody::Stream { first, tick } => {
                if let Some(first) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                let Some(tick) = tick else {
                    return Poll::Pending; // held until the client goes away
                };
                match tick.poll_tick(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(_) => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos());
                        let event = format!("event: tick\ndata: {now}\n\n");
                        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ReplicaBody::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ReplicaBody::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            ReplicaBody::Full(None) => http_body::SizeHint::with_exact(0),
            ReplicaBody::Stream { .. } => http_body::SizeHint::default(),
        }
    }
}
