//! One request's way through Tether: classify -> affinity -> pool -> forward.
//!
//! `handle` never fails: every outcome is a response (the backend's, or a
//! JSON-RPC error Tether writes), a metric and, when it is news, a log line.
//! A request that carries a session goes to its owner or gets 404, never
//! elsewhere; a request without one goes to the pool's pick, and to the next
//! backend if that one refused the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::affinity::{Affinity, Owned, TokenKind, Unroutable};
use crate::classify::{self, SessionRef};
use crate::config::Config;
use crate::error::{jsonrpc_id, ProxyError, UpstreamFailure};
use crate::forward::body::ProxyBody;
use crate::forward::sse::EndpointRewriter;
use crate::forward::{headers, Upstream, UpstreamSettings};
use crate::metrics::{self, Metrics};
use crate::pool::{Backend, Outstanding, Pool};
use crate::request_body;

/// What the request path needs from the configuration.
#[derive(Debug, Clone)]
struct Settings {
    preserve_host: bool,
    max_request_body: usize,
    request_body_timeout: std::time::Duration,
    stream_idle: Option<std::time::Duration>,
    sse_scan_bytes: usize,
}

/// The proxy service shared by every connection.
pub struct Proxy {
    pool: ArcSwap<Pool>,
    affinity: Affinity,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    settings: Settings,
}

impl Proxy {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let backends = config
            .backends
            .iter()
            .map(|b| Arc::new(Backend::new(b.scheme.clone(), b.authority.clone())))
            .collect();
        let upstream = Upstream::new(&UpstreamSettings {
            connect_timeout: config.timeouts.connect,
            response_timeout: config.timeouts.response,
            pool_idle_timeout: config.timeouts.upstream_idle,
        });
        Proxy {
            pool: ArcSwap::from_pointee(Pool::new(backends, config.balance)),
            affinity: Affinity::new(&config.key),
            upstream,
            metrics,
            settings: Settings {
                preserve_host: config.preserve_host,
                max_request_body: config.limits.max_request_body,
                request_body_timeout: config.timeouts.request_body,
                stream_idle: config.timeouts.stream_idle,
                sse_scan_bytes: config.limits.sse_scan_bytes,
            },
        }
    }

    /// The current backends (discovery and reload will swap this).
    pub fn pool(&self) -> arc_swap::Guard<Arc<Pool>> {
        self.pool.load()
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let session = classify::session_ref(&parts);
        let body = match self.read_body(&parts, body).await {
            Ok(body) => body,
            Err(e) => return self.reject(e, &Bytes::new(), None),
        };
        headers::to_upstream(&mut parts.headers, peer.ip(), self.settings.preserve_host);
        // Backends get HTTP/1.1 whatever the client spoke.
        parts.version = http::Version::HTTP_11;
        let pool = self.pool.load_full();
        match session {
            Some(session) => self.forward_owned(parts, body, session, &pool).await,
            None => self.forward_new(parts, body, &pool).await,
        }
    }

    /// Collects the request body within the size and time limits. MCP bodies
    /// are single JSON-RPC messages; holding one lets a refused connection be
    /// retried elsewhere and lets errors echo the request's id.
    async fn read_body(&self, parts: &Parts, body: Incoming) -> Result<Bytes, ProxyError> {
        let (limit, timeout) = (
            self.settings.max_request_body,
            self.settings.request_body_timeout,
        );
        request_body::read(parts, body, limit, timeout).await
    }

    /// A request in a session: its owner, or 404.
    async fn forward_owned(
        self: &Arc<Self>,
        mut parts: Parts,
        body: Bytes,
        session: SessionRef,
        pool: &Pool,
    ) -> Response<ProxyBody> {
        let owned = match self.affinity.resolve(&session, pool).and_then(|owned| {
            self.affinity
                .restore(&mut parts, &session, &owned)
                .map(|()| owned)
        }) {
            Ok(owned) => owned,
            Err(why) => return self.unroutable(why, &body),
        };
        let backend = owned.backend.clone();
        let outstanding = backend.track();
        let method = parts.method.clone();
        let req = Request::from_parts(parts, Full::new(body.clone()));
        match self.upstream.send(&backend, req).await {
            Ok(resp) => self.respond(resp, &backend, outstanding, Some(&owned), &method, false),
            Err(e) => {
                self.count_upstream_error(&backend, e.failure);
                if e.failure == UpstreamFailure::Refused {
                    // The owner is down: its sessions are gone with it.
                    return self.unroutable(Unroutable::OwnerGone(backend.id.clone()), &body);
                }
                tracing::warn!(backend = %backend.id, failure = e.failure.as_str(), detail = %e.detail, "upstream call failed");
                let err = ProxyError::Upstream {
                    backend: backend.id.clone(),
                    failure: e.failure,
                    detail: e.detail,
                };
                self.reject(err, &body, Some(&backend))
            }
        }
    }

    /// A request without a session: the pool's pick, then the next one if
    /// the pick refused the connection (nothing was sent, so it is safe).
    async fn forward_new(
        self: &Arc<Self>,
        parts: Parts,
        body: Bytes,
        pool: &Pool,
    ) -> Response<ProxyBody> {
        let legacy_get = classify::may_open_legacy_stream(&parts);
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut last_error = None;
        while let Some(backend) = pool.pick(&tried) {
            let outstanding = backend.track();
            let req = clone_request(&parts, &body);
            match self.upstream.send(&backend, req).await {
                Ok(resp) => {
                    return self.respond(
                        resp,
                        &backend,
                        outstanding,
                        None,
                        &parts.method,
                        legacy_get,
                    )
                }
                Err(e) => {
                    self.count_upstream_error(&backend, e.failure);
                    tracing::warn!(backend = %backend.id, failure = e.failure.as_str(), detail = %e.detail, "upstream call failed");
                    let retry = e.failure.nothing_sent();
                    last_error = Some(ProxyError::Upstream {
                        backend: backend.id.clone(),
                        failure: e.failure,
                        detail: e.detail,
                    });
                    if !retry {
                        return self.reject(
                            last_error.unwrap_or(ProxyError::NoBackend),
                            &body,
                            Some(&backend),
                        );
                    }
                    tried.push(backend);
                }
            }
        }
        self.reject(last_error.unwrap_or(ProxyError::NoBackend), &body, None)
    }

    /// Turns a backend's response into Tether's: session ids sealed, hop-by-hop
    /// fields dropped, the body streamed (and scanned if it may be a legacy stream).
    fn respond(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        backend: &Arc<Backend>,
        outstanding: Outstanding,
        owned: Option<&Owned>,
        method: &Method,
        legacy_get: bool,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if self
            .affinity
            .seal_response(&mut parts.headers, backend, owned)
        {
            self.metrics
                .sessions_created
                .get_or_create(&metrics::BackendTransport {
                    backend: backend.id.clone(),
                    transport: "streamable",
                })
                .inc();
        }
        if owned.is_some() && *method == Method::DELETE && parts.status.is_success() {
            self.metrics
                .sessions_deleted
                .get_or_create(&Metrics::backend(&backend.id))
                .inc();
        }
        let mut out =
            ProxyBody::upstream(body, outstanding).idle_timeout(self.settings.stream_idle);
        if headers::is_event_stream(&parts.headers) {
            out = out.event_stream(self.metrics.clone(), &backend.id);
            if legacy_get && parts.status.is_success() {
                parts.headers.remove(CONTENT_LENGTH);
                out = out.rewrite_endpoint(self.endpoint_rewriter(backend));
            }
        }
        self.count_request(&backend.id, parts.status.as_u16());
        Response::from_parts(parts, out.build())
    }

    /// Seals the session id of a legacy `endpoint` event for `backend`.
    fn endpoint_rewriter(self: &Arc<Self>, backend: &Arc<Backend>) -> EndpointRewriter {
        let proxy = self.clone();
        let id = backend.id.clone();
        let seal = move |upstream_id: &str| {
            let token = proxy
                .affinity
                .sealer()
                .seal(TokenKind::Legacy, &id, upstream_id)?;
            proxy
                .metrics
                .sessions_created
                .get_or_create(&metrics::BackendTransport {
                    backend: id.clone(),
                    transport: "legacy",
                })
                .inc();
            Some(token)
        };
        EndpointRewriter::new(
            self.settings.sse_scan_bytes,
            backend.authority.as_str().to_owned(),
            Box::new(seal),
        )
    }

    /// 404 for a session that leads nowhere, counted by why.
    fn unroutable(&self, why: Unroutable, body: &Bytes) -> Response<ProxyBody> {
        match (&why, why.invalid_reason()) {
            (Unroutable::OwnerGone(owner), _) => {
                tracing::info!(backend = %owner, "session's owner is gone; answered 404");
                self.metrics
                    .sessions_orphaned
                    .get_or_create(&Metrics::backend(owner))
                    .inc();
            }
            (_, reason) => {
                let reason = reason.unwrap_or("invalid");
                tracing::info!(reason, "session reference did not open; answered 404");
                self.metrics
                    .invalid_tokens
                    .get_or_create(&metrics::Reason { reason })
                    .inc();
            }
        }
        self.reject(ProxyError::SessionNotFound, body, None)
    }

    /// Tether's own answer: a JSON-RPC error with the request's id.
    fn reject(
        &self,
        err: ProxyError,
        body: &Bytes,
        backend: Option<&Backend>,
    ) -> Response<ProxyBody> {
        if let Some(reason) = err.reject_reason() {
            tracing::info!(reason, error = %err, "request rejected");
            self.metrics
                .rejected_requests
                .get_or_create(&metrics::Reason { reason })
                .inc();
        }
        let id = if body.is_empty() {
            serde_json::Value::Null
        } else {
            jsonrpc_id(body)
        };
        let status = err.status();
        self.count_request(
            backend.map_or(metrics::NO_BACKEND, |b| b.id.as_str()),
            status.as_u16(),
        );
        let mut resp = Response::new(ProxyBody::full(err.body(&id)));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }

    fn count_request(&self, backend: &str, status: u16) {
        self.metrics
            .requests
            .get_or_create(&metrics::BackendStatus {
                backend: backend.to_owned(),
                status,
            })
            .inc();
    }

    fn count_upstream_error(&self, backend: &Backend, failure: UpstreamFailure) {
        self.metrics
            .upstream_errors
            .get_or_create(&metrics::BackendKind {
                backend: backend.id.clone(),
                kind: failure.as_str(),
            })
            .inc();
    }
}

/// A copy of the request for one attempt; the original stays for a retry.
fn clone_request(parts: &Parts, body: &Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body.clone()));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.headers_mut() = parts.headers.clone();
    req
}
