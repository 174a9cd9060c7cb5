//! Stage 6: admin. `/healthz`, `/readyz`, `/metrics` (Prometheus text
//! format), the JSON API (`api`: backends, drain, config, reload) and the
//! status page (`page`, fed by `status` and `history`) on their own
//! listener, so they are never exposed on the proxy port.
//!
//! It changes the request path's state only through `Control`. It
//! speaks HTTP/1.1 with the proxy's own head parser (`http1::head`), so it
//! is held to the same rules and limits: head size and read time, one
//! `Host`, no `Transfer-Encoding` with `Content-Length`. Request bodies are
//! read (up to `MAX_BODY`) and ignored. A request a browser sent is answered
//! only at a `Host` the listener is known by (`host`: against DNS rebinding).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

mod api;
mod history;
mod host;
mod page;
mod status;

use crate::accept::AcceptErrors;
use crate::control::Control;
use crate::http1::head::{may_end_head, Framing, HeadError, RequestHead};
use crate::metrics::Metrics;

/// Largest request body the admin listener reads (and ignores).
const MAX_BODY: u64 = 64 * 1024;

pub struct Admin {
    registry: Registry,
    control: Arc<Control>,
    history: history::History,
}

/// The head limits the admin listener shares with the proxy listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
}

/// Who asks, as far as the admin API cares.
#[derive(Clone, Copy)]
struct Caller<'a> {
    authorization: Option<&'a [u8]>,
    /// Whether a browser sent it, and from which page (`api::browser`).
    browser: api::Browser,
}

/// An answer: status, content type, body, and any further header lines.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Cow<'static, str>,
    /// Header lines, each ending in CRLF.
    headers: &'static str,
}

impl Reply {
    fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: format!("{body}\n").into(),
            headers: "",
        }
    }

    fn text(status: StatusCode, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n").into(),
            headers: "",
        }
    }
}

impl Admin {
    pub fn new(registry: Registry, control: Arc<Control>) -> Self {
        // The first sample now, so a page opened at once has a point.
        let history = history::History::default();
        history.record(Instant::now(), history::Reading::read(&registry));
        Admin {
            registry,
            control,
            history,
        }
    }

    fn handle(&self, method: &[u8], path: &[u8], caller: Caller<'_>) -> Reply {
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        if method == b"POST" {
            return api::post(&self.control, path, caller);
        }
        if method != b"GET" && method != b"HEAD" {
            // OPTIONS too: no CORS preflight is ever granted, so no other
            // origin's script can send an `Authorization` header here.
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD or POST");
        }
        if let Some(asset) = page::asset(path) {
            return asset;
        }
        match path {
            b"/status" => {
                let now = self
                    .history
                    .current(&history::Reading::read(&self.registry));
                let body = status::status(&self.control, &self.history, now);
                Reply {
                    headers: page::HEADERS,
                    ..Reply::json(StatusCode::OK, &body)
                }
            }
            b"/healthz" => Reply::text(StatusCode::OK, "ok"),
            b"/readyz" => match self.control.ready() {
                Ok(()) => Reply::text(StatusCode::OK, "ready"),
                Err(why) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            b"/backends" => Reply::json(StatusCode::OK, &self.control.backends()),
            b"/config" => Reply::json(StatusCode::OK, &self.control.config_json()),
            b"/pools" => Reply::json(StatusCode::OK, &self.control.pools()),
            b"/routes" => Reply::json(StatusCode::OK, &self.control.routes()),
            b"/metrics" => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => Reply {
                        status: StatusCode::OK,
                        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        body: text.into(),
                        headers: "",
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "metrics encoding failed");
                        Reply::text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed")
                    }
                }
            }
            _ => Reply::text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    limits: Limits,
    mut errors: AcceptErrors,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    // The status page's history is sampled while the listener is up.
    let sampler = {
        let (admin, shutdown) = (admin.clone(), shutdown.clone());
        tokio::spawn(
            async move { history::sample(&admin.history, &admin.registry, shutdown).await },
        )
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, admin.clone(), limits));
                }
                Err(e) => errors.failed(&e).await,
            },
            Some(joined) = conns.join_next(), if !conns.is_empty() => {
                crate::accept::task_ended(joined, &metrics);
            }
            _ = shutdown.changed() => break,
        }
    }
    sampler.abort();
    conns.shutdown().await;
}

/// Serves one admin connection: requests in order while it stays alive.
async fn connection(mut stream: TcpStream, admin: Arc<Admin>, limits: Limits) {
    let mut buf = Vec::new();
    loop {
        let head = match read_head(&mut stream, &mut buf, limits).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(status) => {
                let reply = Reply::text(status, status.canonical_reason().unwrap_or("refused"));
                if write_reply(&mut stream, &reply, false, true, limits)
                    .await
                    .is_ok()
                {
                    linger(&mut stream).await;
                }
                return;
            }
        };
        let deadline = Instant::now() + limits.header_read_timeout;
        let body_end = match head.framing {
            Framing::None | Framing::UntilClose => head.len,
            Framing::Length(n) if n <= MAX_BODY => head.len + n as usize,
            Framing::Length(_) | Framing::Chunked => {
                let reply = match head.framing {
                    Framing::Chunked => Reply::text(StatusCode::LENGTH_REQUIRED, "length required"),
                    _ => Reply::text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                };
                if write_reply(&mut stream, &reply, false, true, limits)
                    .await
                    .is_ok()
                {
                    linger(&mut stream).await;
                }
                return;
            }
        };
        if head.expect_continue && buf.len() < body_end && head.minor == 1 {
            let go_on = b"HTTP/1.1 100 Continue\r\n\r\n";
            if bounded(limits, stream.write_all(go_on)).await.is_err() {
                return;
            }
        }
        while buf.len() < body_end {
            match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        let field = |name: &[u8]| {
            head.fields
                .list
                .iter()
                .find(|f| buf[f.name.clone()].eq_ignore_ascii_case(name))
                .map(|f| &buf[f.value.clone()])
        };
        // A browser says where a request comes from; curl, kubectl and
        // deploy scripts do not (`api::post` decides what a page may do).
        // A browser is answered only by a name this listener is known by
        // (`host`: a rebound hostile name is not).
        let host = field(b"host");
        let reply = if host::from_browser(field)
            && !host::allowed(host, &admin.control.config().admin_allowed_hosts)
        {
            host::refused(host)
        } else {
            let browser = api::browser(field(b"origin"), field(b"sec-fetch-site"), host);
            admin.handle(
                &buf[head.method.clone()],
                &buf[head.target.clone()],
                Caller {
                    authorization: field(b"authorization"),
                    browser,
                },
            )
        };
        let head_only = &buf[head.method.clone()] == b"HEAD";
        let close = !head.keep_alive;
        if write_reply(&mut stream, &reply, head_only, close, limits)
            .await
            .is_err()
            || close
        {
            return;
        }
        buf.drain(..body_end);
    }
}

/// Reads a request head within the limits; `Ok(None)`: the client closed
/// (or stayed idle) between requests.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limits: Limits,
) -> Result<Option<RequestHead>, StatusCode> {
    let deadline = Instant::now() + limits.header_read_timeout;
    let mut searched = 0usize;
    loop {
        // Parsed again only once its end may have arrived: linear in a
        // head trickled byte by byte.
        let fresh = &buf[searched.saturating_sub(3).min(buf.len())..];
        if !buf.is_empty()
            && (searched == 0 || buf.len() >= limits.max_header_bytes || may_end_head(fresh))
        {
            match RequestHead::parse(buf, limits.max_header_bytes) {
                Ok(Some(head)) => return Ok(Some(head)),
                Ok(None) => {}
                Err(HeadError::TooLarge | HeadError::TooManyFields) => {
                    return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                }
                Err(HeadError::UnsupportedVersion) => {
                    return Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED)
                }
                Err(HeadError::UnsupportedCoding) => return Err(StatusCode::NOT_IMPLEMENTED),
                Err(HeadError::Malformed(_)) => return Err(StatusCode::BAD_REQUEST),
            }
        }
        searched = buf.len();
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) | Ok(Err(_)) => return Ok(None),
            Err(_) if buf.is_empty() => return Ok(None),
            Err(_) => return Err(StatusCode::REQUEST_TIMEOUT),
        }
    }
}

/// After an error answer: reads and drops what the client still sends for
/// a moment, so closing with unread bytes does not reset the answer away.
async fn linger(stream: &mut TcpStream) {
    let mut sink = vec![0u8; 16 * 1024];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut sink).await {
            total += n;
            if n == 0 || total > 1 << 20 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// A write to a client that may have stopped reading, at most the head read time.
async fn bounded(
    limits: Limits,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(limits.header_read_timeout, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

async fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    head_only: bool,
    close: bool,
    limits: Limits,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n{}{}{}\r\n",
        reply.status.as_u16(),
        reply.status.canonical_reason().unwrap_or(""),
        reply.content_type,
        reply.body.len(),
        match reply.status {
            StatusCode::UNAUTHORIZED => "www-authenticate: Bearer\r\n",
            _ => "",
        },
        reply.headers,
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(reply.body.as_bytes());
    }
    bounded(limits, stream.write_all(&out)).await?;
    if close {
        let _ = stream.shutdown().await;
    }
    Ok(())
}
