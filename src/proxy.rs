//! One request's way through Tether: classify -> affinity -> pool -> forward.
//!
//! `handle` never fails: every outcome is a response (the backend's, or a
//! JSON-RPC error Tether writes), a metric and, when it is news, a log line.
//! A request that carries a session goes to its owner or gets 404, never
//! elsewhere; a request without one goes to the pool's pick, and to the next
//! backend if that one refused the connection.

use std::future::Future as _;
use std::sync::Arc;
use std::task::Poll;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::affinity::{Affinity, Owned, ResponseId, Restored, TokenKind, Unroutable};
use crate::classify::{self, SessionRef};
use crate::config::Config;
use crate::conn::{Body, Client, Watch};
use crate::error::{jsonrpc_id, ProxyError, UpstreamFailure};
use crate::forward::headers::{self, Downstream, ToUpstream};
use crate::forward::relay::{self, End, Relay};
use crate::forward::sse::EndpointRewriter;
use crate::forward::upstream::{Response, Upstream, UpstreamError, UpstreamSettings};
use crate::http1::buf;
use crate::http1::head::{FieldKind, Framing, RequestHead};
use crate::metrics::{self, Metrics};
use crate::pool::{Backend, Outstanding, Pool};

/// What the request path needs from the configuration.
#[derive(Debug, Clone)]
struct Settings {
    preserve_host: bool,
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

/// One request, as the stages after the head need it.
struct Request<'a> {
    head: &'a RequestHead,
    body: &'a Body,
    /// Bytes of the client's buffer this request occupies.
    consumed: usize,
    /// The request target in origin form.
    target: String,
    head_request: bool,
    delete: bool,
    legacy_get: bool,
}

/// How `Proxy::handle` left a request.
pub enum Outcome {
    /// The whole answer was written (Tether's own, or a body that came with
    /// its head); `keep_alive`: the connection may carry another request.
    Answered { keep_alive: bool },
    /// The response head is chosen; the body still has to be relayed.
    Relay(Box<PendingRelay>),
}

impl Outcome {
    const CLOSE: Outcome = Outcome::Answered { keep_alive: false };
}

/// A response whose body is relayed by the connection's task, with what must
/// stay counted until it ends.
pub struct PendingRelay {
    proxy: Arc<Proxy>,
    backend: Arc<Backend>,
    relay: Relay,
    /// Close the client connection after this response.
    close: bool,
    _outstanding: Outstanding,
    _stream: Option<StreamGuard>,
}

impl PendingRelay {
    /// Relays the body; returns whether the client connection may carry
    /// another request.
    pub async fn run(mut self: Box<Self>, client: &mut Client) -> bool {
        let end = self.relay.run(client).await;
        let PendingRelay {
            proxy,
            backend,
            relay,
            close,
            ..
        } = *self;
        proxy.relay_ended(end, relay, &backend, close)
    }
}

/// Why a call to a backend gave no response.
enum CallError {
    ClientGone,
    Upstream(UpstreamError),
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
                stream_idle: config.timeouts.stream_idle,
                sse_scan_bytes: config.limits.sse_scan_bytes,
            },
        }
    }

    /// The current backends (discovery and reload will swap this).
    pub fn pool(&self) -> arc_swap::Guard<Arc<Pool>> {
        self.pool.load()
    }

    /// The connections to the backends.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Answers one request whose head and body are in `client.buf`; returns
    /// whether the client connection may carry another request.
    pub async fn handle(
        self: &Arc<Self>,
        client: &mut Client,
        head: &RequestHead,
        body: Body,
    ) -> Outcome {
        let buf = &client.buf;
        let method = &buf[head.method.clone()];
        let raw_target = &buf[head.target.clone()];
        let target = match std::str::from_utf8(raw_target) {
            Ok(target) => std::borrow::Cow::Borrowed(target),
            Err(_) => String::from_utf8_lossy(raw_target),
        };
        let req = Request {
            head,
            body: &body,
            consumed: match &body {
                Body::InBuf(range) => range.end,
                Body::Owned(_) => head.len,
            },
            target: classify::origin_form(&target).into_owned(),
            head_request: method == b"HEAD",
            delete: method == b"DELETE",
            legacy_get: classify::may_open_legacy_stream(method),
        };
        let session =
            classify::session_ref(head.fields.get(buf, FieldKind::SessionId), &req.target);
        let pool = self.pool.load_full();
        match session {
            Some(session) => self.forward_owned(client, &req, session, &pool).await,
            None => self.forward_new(client, &req, &pool).await,
        }
    }

    /// A request in a session: its owner, or 404.
    async fn forward_owned(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        session: SessionRef,
        pool: &Pool,
    ) -> Outcome {
        let resolved = self.affinity.resolve(&session, pool).and_then(|owned| {
            let restored = self.affinity.restore(&req.target, &session, &owned)?;
            Ok((owned, restored))
        });
        let (owned, restored) = match resolved {
            Ok(found) => found,
            Err(why) => return self.unroutable(client, req, why).await,
        };
        let (target, session_id) = match &restored {
            Restored::Header => (req.target.as_str(), Some(owned.upstream_id.as_bytes())),
            Restored::Target(target) => (target.as_str(), None),
        };
        let backend = owned.backend.clone();
        let outstanding = backend.track();
        let request = self.upstream_request(client, req, &backend, target, session_id);
        let result = self.call(client, req, &backend, &request).await;
        buf::give(request);
        match result {
            Ok(resp) => {
                client.consume(req.consumed);
                self.respond(req, resp, &backend, outstanding, Some(&owned))
            }
            Err(CallError::ClientGone) => Outcome::CLOSE,
            Err(CallError::Upstream(e)) => {
                self.count_upstream_error(&backend, e.failure);
                if e.failure == UpstreamFailure::Refused {
                    // The owner is down: its sessions are gone with it.
                    return self
                        .unroutable(client, req, Unroutable::OwnerGone(backend.id.clone()))
                        .await;
                }
                tracing::warn!(backend = %backend.id, failure = e.failure.as_str(), detail = %e.detail, "upstream call failed");
                let err = ProxyError::Upstream {
                    backend: backend.id.clone(),
                    failure: e.failure,
                    detail: e.detail,
                };
                self.answer(client, req, err, Some(&backend)).await
            }
        }
    }

    /// A request without a session: the pool's pick, then the next one if
    /// the pick refused the connection (nothing was sent, so it is safe).
    async fn forward_new(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        pool: &Pool,
    ) -> Outcome {
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut last_error = None;
        while let Some(backend) = pool.pick(&tried) {
            let outstanding = backend.track();
            let request = self.upstream_request(client, req, &backend, &req.target, None);
            let result = self.call(client, req, &backend, &request).await;
            buf::give(request);
            match result {
                Ok(resp) => {
                    client.consume(req.consumed);
                    return self.respond(req, resp, &backend, outstanding, None);
                }
                Err(CallError::ClientGone) => return Outcome::CLOSE,
                Err(CallError::Upstream(e)) => {
                    self.count_upstream_error(&backend, e.failure);
                    tracing::warn!(backend = %backend.id, failure = e.failure.as_str(), detail = %e.detail, "upstream call failed");
                    let retry = e.failure.nothing_sent();
                    let err = ProxyError::Upstream {
                        backend: backend.id.clone(),
                        failure: e.failure,
                        detail: e.detail,
                    };
                    if !retry {
                        return self.answer(client, req, err, Some(&backend)).await;
                    }
                    last_error = Some(err);
                    tried.push(backend);
                }
            }
        }
        self.answer(
            client,
            req,
            last_error.unwrap_or(ProxyError::NoBackend),
            None,
        )
        .await
    }

    /// The request as `backend` gets it.
    fn upstream_request(
        &self,
        client: &Client,
        req: &Request<'_>,
        backend: &Backend,
        target: &str,
        session_id: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = buf::take();
        let to = ToUpstream {
            target: target.as_bytes(),
            session_id,
            peer: &client.peer_ip,
            authority: backend.authority.as_str(),
            preserve_host: self.settings.preserve_host,
        };
        headers::request(
            &mut out,
            &client.buf,
            req.head,
            &to,
            req.body.bytes(&client.buf),
        );
        out
    }

    /// Sends `request` and waits for the response head, watching the client:
    /// one that goes away ends the call (and closes the backend connection).
    async fn call(
        &self,
        client: &mut Client,
        req: &Request<'_>,
        backend: &Backend,
        request: &[u8],
    ) -> Result<Response, CallError> {
        client.hold(req.consumed);
        let exchange = self.upstream.exchange(backend, request, req.head_request);
        tokio::pin!(exchange);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = exchange.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(CallError::Upstream));
            }
            while client.stream.poll_read_ready(cx).is_ready() {
                if client.on_readable() == Watch::Gone {
                    tracing::debug!(backend = %backend.id, "client left while its request was being answered");
                    return Poll::Ready(Err(CallError::ClientGone));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Turns a backend's response into Tether's: session ids sealed, hop-by-hop
    /// fields dropped, the body relayed (and scanned if it may be a legacy stream).
    fn respond(
        self: &Arc<Self>,
        req: &Request<'_>,
        resp: Response,
        backend: &Arc<Backend>,
        outstanding: Outstanding,
        owned: Option<&Owned>,
    ) -> Outcome {
        let head = &resp.head;
        let sealed = head
            .fields
            .get(&resp.buf, FieldKind::SessionId)
            .map(|value| self.affinity.seal_response(value, backend, owned));
        let session_id = match &sealed {
            Some(ResponseId::Same(token) | ResponseId::New(token)) => Some(token.as_bytes()),
            Some(ResponseId::Unsealed) | None => None,
        };
        if matches!(sealed, Some(ResponseId::New(_))) {
            self.count_session(backend, "streamable");
        }
        let success = (200..300).contains(&head.status);
        if owned.is_some() && req.delete && success {
            self.metrics
                .sessions_deleted
                .get_or_create(&Metrics::backend(&backend.id))
                .inc();
        }
        let event_stream =
            headers::is_event_stream(head.fields.get(&resp.buf, FieldKind::ContentType));
        let rewrite = event_stream && req.legacy_get && success;
        let downstream = match head.framing {
            Framing::None => Downstream::None,
            Framing::Length(n) if !rewrite => Downstream::Length(n),
            _ if req.head.minor == 1 => Downstream::Chunked,
            _ => Downstream::Close,
        };
        let close = !req.head.keep_alive || downstream == Downstream::Close;
        let mut out = buf::take();
        let connection: Option<&[u8]> = match (close, req.head.minor) {
            (true, _) => Some(b"close"),
            // HTTP/1.0 keeps a connection only when told so.
            (false, 0) => Some(b"keep-alive"),
            (false, _) => None,
        };
        headers::response(
            &mut out, &resp.buf, head, session_id, downstream, connection,
        );
        self.count_request(&backend.id, head.status);
        let stream = event_stream.then(|| StreamGuard::new(self.metrics.clone(), &backend.id));
        let metrics = self.metrics.clone();
        let options = relay::Options {
            downstream,
            idle_timeout: self.settings.stream_idle,
            event_stream,
            rewriter: rewrite.then(|| self.endpoint_rewriter(backend)),
            on_first_event: Box::new(move |outcome| {
                metrics
                    .sse_first_events
                    .get_or_create(&metrics::Result {
                        result: outcome.as_str(),
                    })
                    .inc();
            }),
        };
        Outcome::Relay(Box::new(PendingRelay {
            proxy: self.clone(),
            backend: backend.clone(),
            relay: Relay::new(resp, out, options),
            close,
            _outstanding: outstanding,
            _stream: stream,
        }))
    }

    /// What a finished relay means for the connections and the counts.
    fn relay_ended(&self, end: End, relay: Relay, backend: &Arc<Backend>, close: bool) -> bool {
        match end {
            End::Complete { reusable } => {
                if reusable {
                    self.upstream.checkin(backend, relay.into_upstream());
                }
                !close
            }
            End::IdleTimeout { clean } => {
                tracing::debug!(backend = %backend.id, clean, "response body idle, ended");
                self.metrics
                    .stream_idle_timeouts
                    .get_or_create(&Metrics::backend(&backend.id))
                    .inc();
                clean && !close
            }
            End::ClientGone => {
                tracing::debug!(backend = %backend.id, "client left during the response body");
                false
            }
            End::Cut(why) => {
                tracing::info!(backend = %backend.id, why, "response body cut");
                self.count_upstream_error(backend, UpstreamFailure::Io);
                false
            }
        }
    }

    /// Seals the session id of a legacy `endpoint` event for `backend`.
    fn endpoint_rewriter(self: &Arc<Self>, backend: &Arc<Backend>) -> EndpointRewriter {
        let proxy = self.clone();
        let backend_for_seal = backend.clone();
        let seal = move |upstream_id: &str| {
            let token = proxy.affinity.sealer().seal(
                TokenKind::Legacy,
                &backend_for_seal.id,
                upstream_id,
            )?;
            proxy.count_session(&backend_for_seal, "legacy");
            Some(token)
        };
        EndpointRewriter::new(
            self.settings.sse_scan_bytes,
            backend.authority.as_str().to_owned(),
            Box::new(seal),
        )
    }

    /// 404 for a session that leads nowhere, counted by why.
    async fn unroutable(&self, client: &mut Client, req: &Request<'_>, why: Unroutable) -> Outcome {
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
        self.answer(client, req, ProxyError::SessionNotFound, None)
            .await
    }

    /// Writes Tether's own answer to a request that got no backend response.
    async fn answer(
        &self,
        client: &mut Client,
        req: &Request<'_>,
        err: ProxyError,
        backend: Option<&Backend>,
    ) -> Outcome {
        let body = self.reject(&err, backend, req.body.bytes(&client.buf));
        client.consume(req.consumed);
        let close = !req.head.keep_alive;
        let keep_alive = client.send_own(err.status(), &body, close).await.is_ok() && !close;
        Outcome::Answered { keep_alive }
    }

    /// Counts and logs an error answer; returns its JSON-RPC body, with the
    /// id of the request's `body` when it has one.
    pub fn reject(&self, err: &ProxyError, backend: Option<&Backend>, body: &[u8]) -> Bytes {
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
        self.count_request(
            backend.map_or(metrics::NO_BACKEND, |b| b.id.as_str()),
            err.status().as_u16(),
        );
        err.body(&id)
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

    fn count_session(&self, backend: &Backend, transport: &'static str) {
        self.metrics
            .sessions_created
            .get_or_create(&metrics::BackendTransport {
                backend: backend.id.clone(),
                transport,
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

/// Counts an open event stream for as long as it lives.
struct StreamGuard {
    metrics: Arc<Metrics>,
    backend: metrics::BackendLabel,
}

impl StreamGuard {
    fn new(metrics: Arc<Metrics>, backend: &str) -> Self {
        let backend = Metrics::backend(backend);
        metrics.active_streams.get_or_create(&backend).inc();
        StreamGuard { metrics, backend }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics
            .active_streams
            .get_or_create(&self.backend)
            .dec();
        tracing::debug!(backend = %self.backend.backend, "event stream closed");
    }
}
