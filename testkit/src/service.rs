//! Per-request entry point of a replica: record, apply the injected delay and failure, route.
//!
//! Route handlers return a [`Reply`] and never deal with disconnect accounting; this file arms a
//! guard for every request and either disarms it (full responses) or hands it to the streaming
//! body. It must never panic on what a client sends: bad input becomes a 4xx.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::replica::{DisconnectGuard, SeenRequest, Shared};
use crate::sse::ChannelBody;
use crate::{legacy, streamable};

pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// Request bodies above this are refused; MCP messages in tests are tiny.
const MAX_BODY: usize = 4 * 1024 * 1024;

pub(crate) const MCP_SESSION_ID: &str = "mcp-session-id";

/// What a route handler answers.
pub(crate) enum Reply {
    /// A complete response.
    Full(Response<Bytes>),
    /// An SSE stream fed by the paired sender; `legacy_session` is forgotten when it ends;
    /// `drained` reports frames written (see `ChannelBody::with_drained`).
    Stream {
        response: Response<()>,
        rx: mpsc::UnboundedReceiver<Bytes>,
        legacy_session: Option<String>,
        drained: Option<watch::Sender<usize>>,
    },
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let guard = DisconnectGuard::new(shared.clone());
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::debug!(%error, "could not read request body");
            guard.disarm();
            return finish_full(text(StatusCode::BAD_REQUEST, "could not read request body"));
        }
    };
    shared.record(SeenRequest {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts.headers.clone(),
        body: body.clone(),
    });

    let delay = shared.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = match shared.fail() {
        Some(status) => Reply::Full(injected_failure(&shared, status)),
        None => route(&shared, &parts, body).await,
    };

    match reply {
        Reply::Full(response) => {
            guard.disarm();
            finish_full(response)
        }
        Reply::Stream {
            response,
            rx,
            legacy_session,
            drained,
        } => {
            let body = ChannelBody::new(rx, guard.with_legacy_session(legacy_session))
                .with_drained(drained);
            response.map(|()| body.boxed_unsync())
        }
    }
}

async fn route(shared: &Arc<Shared>, parts: &http::request::Parts, body: Bytes) -> Reply {
    let path = parts.uri.path();
    let messages_path = shared.config.legacy_messages_path.trim_end_matches('/');
    if path == "/mcp" || path == "/mcp/" {
        streamable::handle(shared, parts, &body).await
    } else if path == "/sse" && parts.method == Method::GET {
        legacy::open_stream(shared)
    } else if path.trim_end_matches('/') == messages_path && parts.method == Method::POST {
        legacy::post_message(shared, parts, body)
    } else {
        Reply::Full(text(StatusCode::NOT_FOUND, "Not Found"))
    }
}

fn finish_full(response: Response<Bytes>) -> Response<ResponseBody> {
    response.map(|bytes| Full::new(bytes).boxed_unsync())
}

fn injected_failure(shared: &Shared, status: u16) -> Response<Bytes> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    text(
        status,
        &format!(
            "replica {}: injected failure {}",
            shared.name,
            status.as_u16()
        ),
    )
}

// === response helpers ===

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Bytes> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(body.to_owned()),
    )
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Bytes> {
    with_type(status, "application/json", Bytes::from(body.to_string()))
}

pub(crate) fn empty(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The head of an SSE response.
pub(crate) fn sse_head() -> Response<()> {
    let mut response = Response::new(());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A JSON-RPC error object not tied to a request id.
pub(crate) fn rpc_error(code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": null})
}

/// Add `Mcp-Session-Id: id` to a response head.
pub(crate) fn set_session_header<B>(response: &mut Response<B>, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(MCP_SESSION_ID, value);
    }
}
