//! Stage 5: forward. The upstream call and everything done to bytes in transit.
//!
//! - `headers`: hop-by-hop fields, `X-Forwarded-*`, `Host`.
//! - `sse`: the legacy transport's first-event scanner and endpoint rewrite.
//! - `body`: the downstream response body (streaming, idle timeout, guards).
//!
//! This stage never chooses a backend and never decides what a failure means
//! for a session; it reports what happened and `proxy` decides.

pub mod body;
pub mod headers;
pub mod sse;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::UpstreamFailure;
use crate::pool::Backend;

/// Settings of the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Longest wait for a response head (a JSON tool result arrives whole, so
    /// this bounds a tool call answered as JSON; an SSE answer starts at once).
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
}

/// A failed upstream call.
#[derive(Debug)]
pub struct UpstreamError {
    pub failure: UpstreamFailure,
    pub detail: String,
}

/// The pooled HTTP/1.1 client to every backend. Keep-alive connections are
/// reused per backend; TCP_NODELAY is set so small SSE events are not held.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Upstream {
            client,
            response_timeout: settings.response_timeout,
        }
    }

    /// Sends `req` (whose URI holds only a path and query) to `backend`.
    pub async fn send(
        &self,
        backend: &Backend,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut uri = Uri::builder()
            .scheme(backend.scheme.clone())
            .authority(backend.authority.clone());
        if let Some(pq) = req.uri().path_and_query() {
            uri = uri.path_and_query(pq.clone());
        }
        *req.uri_mut() = uri.build().map_err(|e| UpstreamError {
            failure: UpstreamFailure::Connect,
            detail: e.to_string(),
        })?;
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError {
                failure: failure_of(&e),
                detail: error_chain(&e),
            }),
            Err(_) => Err(UpstreamError {
                failure: UpstreamFailure::Timeout,
                detail: format!("no response within {:?}", self.response_timeout),
            }),
        }
    }
}

fn failure_of(e: &hyper_util::client::legacy::Error) -> UpstreamFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return UpstreamFailure::Refused;
            }
        }
        source = err.source();
    }
    if e.is_connect() {
        UpstreamFailure::Connect
    } else {
        UpstreamFailure::Io
    }
}

/// The whole cause chain on one line, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}
