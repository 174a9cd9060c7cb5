//! A backend's response on its way back: the head rewritten for the client
//! (session id sealed, hop-by-hop fields dropped, framing chosen), then the
//! body relayed by the connection's task, and what its end means for the
//! upstream connection and the counts.

use std::sync::Arc;

use super::{response_session_id, Outcome, Proxy, Request, ResponseChanges};
use crate::affinity::{Owned, ResponseId, TokenKind};
use crate::classify::SessionRef;
use crate::downstream::Client;
use crate::error::UpstreamFailure;
use crate::forward::headers::{self, Downstream};
use crate::forward::relay::{self, End, Relay};
use crate::forward::sse::EndpointRewriter;
use crate::forward::upstream::Response;
use crate::http1::buf;
use crate::http1::head::{FieldKind, Framing};
use crate::metrics::{self, Metrics};
use crate::modern::task;
use crate::pool::{Backend, Fleet, Outstanding, StreamCount};
use crate::trust::CallerGuard;

/// A response whose body is relayed by the connection's task, with what must
/// stay counted until it ends.
pub struct PendingRelay {
    proxy: Arc<Proxy>,
    backend: Arc<Backend>,
    fleet: Arc<Fleet>,
    relay: Relay,
    /// Close the client connection after this response.
    close: bool,
    _outstanding: Outstanding,
    _stream: Option<StreamGuard>,
    /// The caller's request counted in progress (`[limits.per_caller]`).
    _caller: Option<CallerGuard>,
}

impl PendingRelay {
    /// Whether the body is an event stream (it may be held for hours).
    pub fn is_stream(&self) -> bool {
        self._stream.is_some()
    }

    /// Keeps the caller's request counted until the body is relayed.
    pub fn hold(&mut self, caller: CallerGuard) {
        self._caller = Some(caller);
    }

    /// Relays the body; returns whether the client connection may carry
    /// another request.
    pub async fn run(mut self: Box<Self>, client: &mut Client) -> bool {
        let end = self.relay.run(client).await;
        let PendingRelay {
            proxy,
            backend,
            fleet,
            relay,
            close,
            ..
        } = *self;
        proxy.relay_ended(end, relay, (&backend, &fleet), close)
    }
}

impl Proxy {
    /// Turns a backend's response into Tether's: session ids sealed, hop-by-hop
    /// fields dropped, the body relayed (and scanned if it may be a legacy stream).
    pub(super) fn respond(
        self: &Arc<Self>,
        client: &Client,
        req: &Request<'_>,
        resp: Response,
        (backend, fleet): (&Arc<Backend>, &Arc<Fleet>),
        outstanding: Outstanding,
        (session, tasks): (Option<(&Owned, &SessionRef)>, ResponseChanges),
    ) -> Outcome {
        let head = &resp.head;
        let owned = session.map(|(owned, _)| owned);
        // A 2026-07-28 answer is not a session's: its `Mcp-Session-Id`, if a
        // server sends one, passes as it is.
        let sealed = response_session_id(&resp)
            .filter(|_| !req.modern && tasks.session_token.is_none())
            .map(|value| match &req.live.store {
                // Recorded already (`stored::keep`): the id passes untouched.
                Some(_) => req.live.affinity.classify_response(value, owned),
                None => {
                    let principal = req.principal.as_deref();
                    let init = tasks.init.as_deref();
                    req.live
                        .affinity
                        .seal_response(value, backend, owned, (principal, init))
                }
            });
        let session_id = match (&sealed, session) {
            _ if req.live.store.is_some() => None,
            _ if tasks.session_token.is_some() => tasks.session_token.as_deref().map(str::as_bytes),
            (Some(ResponseId::Same), Some((_, session))) => Some(session.token_bytes(client.buf())),
            (Some(ResponseId::New(token)), _) => Some(token.as_bytes()),
            _ => None,
        };
        match sealed {
            Some(ResponseId::New(_)) => self.count_session(backend, "streamable", req.unbound()),
            Some(ResponseId::Invalid) => {
                self.metrics
                    .invalid_upstream_session_ids
                    .get_or_create(&Metrics::backend(&backend.id))
                    .inc();
            }
            _ => {}
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
        let task_rewrite = (tasks.creates || tasks.echo.is_some())
            && task_ids_possible(&resp, event_stream)
            && head.framing != Framing::None;
        let downstream = match head.framing {
            Framing::None => Downstream::None,
            Framing::Length(n) if !rewrite && !task_rewrite => Downstream::Length(n),
            _ if req.head.minor == 1 => Downstream::Chunked,
            _ => Downstream::Close,
        };
        let close = !req.head.keep_alive
            || downstream == Downstream::Close
            || client.half_closed()
            || client.lifecycle().closing();
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
        if let Some(key) = tasks.cache_key.clone() {
            let json = headers::is_json(head.fields.get(&resp.buf, FieldKind::ContentType));
            let body = resp.buf.get(head.len..).unwrap_or_default();
            if let (200, true, Framing::Length(n)) = (head.status, json, head.framing) {
                if body.len() as u64 == n {
                    self.cache_store(req.live, key, body);
                }
            }
        }
        if let Some(token) = &tasks.session_token {
            if response_session_id(&resp).is_none() {
                headers::append_field(&mut out, b"mcp-session-id", token.as_bytes());
            }
        }
        if let Some(cookie) = &tasks.set_cookie {
            headers::append_field(&mut out, b"set-cookie", cookie.as_bytes());
        }
        self.count_request(backend, head.status);
        if head.status >= 500 {
            crate::pool::health::passive_failure(backend, &fleet.health_settings(), &self.metrics);
        } else {
            backend.call_succeeded();
        }
        let stream = event_stream.then(|| StreamGuard::new(self.metrics.clone(), backend));
        let (endpoint, gate) = match (&req.live.store, rewrite) {
            (_, false) => (None, None),
            (None, true) => (Some(self.endpoint_rewriter(req, backend, None)), None),
            (Some(store), true) => {
                let (seal, gate) = self.legacy_keeper(req, store, backend);
                (
                    Some(self.endpoint_rewriter(req, backend, Some(seal))),
                    Some(gate),
                )
            }
        };
        let options = relay::Options {
            downstream,
            idle_timeout: req.live.settings.stream_idle,
            event_stream,
            rewriter: endpoint.map(|endpoint| {
                let metrics = self.metrics.clone();
                let report: Box<dyn FnOnce(_) + Send> =
                    Box::new(move |outcome: crate::forward::sse::Outcome| {
                        metrics
                            .sse_first_events
                            .get_or_create(&metrics::FirstEventResult {
                                result: outcome.as_str(),
                            })
                            .inc();
                    });
                (endpoint, report)
            }),
            rewrite: task_rewrite.then(|| self.task_rewriter(req, backend, tasks, event_stream)),
            gate,
        };
        Outcome::Relay(Box::new(PendingRelay {
            proxy: self.clone(),
            backend: backend.clone(),
            fleet: fleet.clone(),
            relay: Relay::new(resp, out, options),
            close,
            _outstanding: outstanding,
            _stream: stream,
            _caller: None,
        }))
    }

    /// What a finished relay means for the connections and the counts.
    fn relay_ended(
        &self,
        end: End,
        relay: Relay,
        (backend, fleet): (&Arc<Backend>, &Fleet),
        close: bool,
    ) -> bool {
        match end {
            End::Complete { reusable } => {
                if reusable {
                    let (stream, idle_hint) = relay.into_upstream();
                    self.upstream.checkin(backend, stream, idle_hint);
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
            End::Shutdown => {
                tracing::debug!(backend = %backend.id, "event stream ended by the shutdown");
                false
            }
            End::Cut(why) => {
                tracing::info!(backend = %backend.id, why, "response body cut");
                self.count_upstream_error(backend, fleet, UpstreamFailure::Io);
                false
            }
        }
    }

    /// Rewrites the task ids of a 2026-07-28 response from `backend`.
    fn task_rewriter(
        &self,
        req: &Request<'_>,
        backend: &Arc<Backend>,
        tasks: ResponseChanges,
        event_stream: bool,
    ) -> Box<dyn crate::forward::relay::Rewrite> {
        let seal = tasks.creates.then(|| {
            let live = req.live.clone();
            let backend = backend.clone();
            let principal = req.principal_tag();
            let seal: task::SealFn = Box::new(move |id: &str| {
                live.affinity
                    .sealer()
                    .seal(TokenKind::Task, &backend.id, id, principal.as_ref())
            });
            seal
        });
        let created = self
            .metrics
            .tasks_created
            .get_or_create(&Metrics::backend(&backend.id))
            .clone();
        Box::new(task::TaskRewriter::new(
            event_stream,
            seal,
            tasks.echo,
            Box::new(move || {
                created.inc();
            }),
        ))
    }

    /// Seals the session id of a legacy `endpoint` event for `backend`
    /// (or does what `seal` says: with a store, keeps it).
    fn endpoint_rewriter(
        self: &Arc<Self>,
        req: &Request<'_>,
        backend: &Arc<Backend>,
        seal: Option<crate::forward::sse::SealFn>,
    ) -> EndpointRewriter {
        let authority = backend.authority.as_str().to_owned();
        let scan = req.live.settings.sse_scan_bytes;
        if let Some(seal) = seal {
            return EndpointRewriter::new(scan, authority, seal);
        }
        let proxy = self.clone();
        let live = req.live.clone();
        let backend_for_seal = backend.clone();
        let principal = req.principal_tag();
        let unbound = req.unbound();
        let seal = move |upstream_id: &str| {
            let token = live.affinity.sealer().seal(
                TokenKind::Legacy,
                &backend_for_seal.id,
                upstream_id,
                principal.as_ref(),
            )?;
            proxy.count_session(&backend_for_seal, "legacy", unbound);
            Some(token)
        };
        EndpointRewriter::new(scan, authority, Box::new(seal))
    }
}

/// Whether a response may carry a task id: an event stream, a body not yet
/// all here, or one that names `"taskId"`. A whole JSON body without one
/// keeps its length and goes on untouched (the common `tools/call`).
fn task_ids_possible(resp: &Response, event_stream: bool) -> bool {
    if event_stream {
        return true;
    }
    let body = resp.buf.get(resp.head.len..).unwrap_or_default();
    match resp.head.framing {
        Framing::Length(n) if body.len() as u64 >= n => task::contains(body, b"\"taskId\""),
        _ => true,
    }
}

/// Counts an open event stream for as long as it lives.
struct StreamGuard {
    metrics: Arc<Metrics>,
    backend: metrics::BackendLabel,
    _count: StreamCount,
}

impl StreamGuard {
    fn new(metrics: Arc<Metrics>, backend: &Arc<Backend>) -> Self {
        let count = backend.track_stream();
        let backend = Metrics::backend(&backend.id);
        metrics.active_streams.get_or_create(&backend).inc();
        StreamGuard {
            metrics,
            backend,
            _count: count,
        }
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
