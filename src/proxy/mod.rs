//! One request's way through Tether: classify -> route -> affinity -> pool
//! -> forward.
//!
//! `handle` never fails: every outcome is a response (the backend's, or a
//! JSON-RPC error Tether writes), a metric and, when it is news, a log line.
//! A request that carries a session goes to its owner or gets 404, never
//! elsewhere, whatever pool the owner is in; a request without one (and every
//! request of the 2026-07-28 revision, which has no sessions) goes to the
//! pick of the pool its route names, and to the next backend if that one
//! refused the connection. The rooms: `choose` (route, header checks,
//! steering), `owned` (to a session's or a task's owner), `modern` (task
//! requests, cached answers), `respond` (a backend's response head made the
//! client's, the body handed to the relay).

mod admit;
mod choose;
mod failover;
mod live;
mod modern;
mod owned;
mod respond;
mod stored;
#[cfg(test)]
mod tests;

use std::future::Future as _;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::affinity::Unroutable;
use crate::classify::{self, Carrier};
use crate::config::Config;
use crate::downstream::access::AccessLog;
use crate::downstream::{Body, Client, Watch};
use crate::error::{jsonrpc_id, ProxyError, UpstreamFailure};
use crate::forward::headers::{self, ToUpstream};
use crate::forward::upstream::{Response, Upstream, UpstreamError, UpstreamSettings};
use crate::http1::buf;
use crate::http1::head::{FieldKind, RequestHead, TargetForm};
use crate::metrics::{self, Metrics};
use crate::pool::{find_owner, health, Backend, Fleet, Named};
use choose::Chosen;
pub use live::Live;
pub use respond::PendingRelay;

/// The proxy service shared by every connection.
pub struct Proxy {
    /// Every pool ever configured, by name (the writer's list: a reload
    /// keeps a pool's fleet, and so its backends, by name).
    fleets: Mutex<Vec<Arc<Named>>>,
    live: ArcSwap<Live>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    /// The `tether_requests_total` series of Tether's own answers.
    none: metrics::StatusCounters,
    /// Sessions this instance moved to a new backend (`failover`).
    moved: failover::Moved,
}

/// The request target in origin form, where it is.
enum Target {
    /// In the client's buffer (an origin-form target, or the path of an
    /// absolute-form one).
    InBuf(Range<usize>),
    /// Made up: the path `/` of an absolute-form target that has none.
    Owned(String),
}

impl Request<'_> {
    /// Whether what this request begins is bound to no one though sessions are bound.
    fn unbound(&self) -> bool {
        self.bound && self.principal.is_none()
    }

    /// The caller, for the binding check.
    fn caller(&self) -> crate::affinity::Principal<'_> {
        use crate::affinity::Principal;
        match (&self.principal, self.bound) {
            (_, false) => Principal::Unchecked,
            (Some(p), true) => Principal::Given(p),
            (None, true) => Principal::Absent,
        }
    }

    /// The tag that binds what this request begins to its caller.
    fn principal_tag(&self) -> Option<crate::affinity::PrincipalTag> {
        let principal = self.principal.as_deref()?;
        Some(self.live.affinity.principal_tag(principal))
    }
}

impl Target {
    fn of(head: &RequestHead, buf: &[u8]) -> Target {
        match &head.form {
            TargetForm::Origin | TargetForm::Asterisk => Target::InBuf(head.target.clone()),
            TargetForm::Absolute { path, .. } if buf[path.clone()].starts_with(b"/") => {
                Target::InBuf(path.clone())
            }
            TargetForm::Absolute { path, .. } => {
                Target::Owned(format!("/{}", String::from_utf8_lossy(&buf[path.clone()])))
            }
        }
    }

    fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            Target::InBuf(range) => &buf[range.clone()],
            Target::Owned(target) => target.as_bytes(),
        }
    }

    /// The target as text (the parser accepted it as UTF-8).
    fn as_str<'a>(&'a self, buf: &'a [u8]) -> &'a str {
        match self {
            Target::InBuf(range) => std::str::from_utf8(&buf[range.clone()]).unwrap_or("/"),
            Target::Owned(target) => target,
        }
    }
}

/// One request, as the stages after the head need it.
struct Request<'a> {
    live: &'a Arc<Live>,
    head: &'a RequestHead,
    body: &'a Body,
    /// Bytes of the client's buffer this request occupies.
    consumed: usize,
    target: Target,
    head_request: bool,
    post: bool,
    delete: bool,
    legacy_get: bool,
    /// 2026-07-28 or later: no sessions; closing the connection cancels
    /// the request.
    modern: bool,
    /// Who is calling, when sessions are bound (`trust::principal`).
    principal: Option<Vec<u8>>,
    /// Whether sessions are bound (`[sessions] bind` is not `none`).
    bound: bool,
}

/// What the response needs besides the head's rewrite: its task ids
/// (`modern::task`), a cookie to set.
#[derive(Default)]
pub struct ResponseChanges {
    /// A new task's id is sealed with the answering backend.
    pub creates: bool,
    /// The task the request named: (server's id, client's token).
    pub echo: Option<(String, String)>,
    /// A whole `Set-Cookie` value (cookie stickiness).
    pub set_cookie: Option<String>,
    /// The response cache's key for this request: store the answer if it
    /// may be shared.
    pub cache_key: Option<String>,
    /// The `params` of the client's `initialize`, sealed into the new
    /// session's token (`failover = "reinitialize"`).
    pub init: Option<Box<[u8]>>,
    /// A failed-over session's token: the client's `Mcp-Session-Id` from now
    /// on, whatever the server's answer carries.
    pub session_token: Option<String>,
}

/// What the request sent upstream changes from the client's.
#[derive(Default)]
struct Changes<'a> {
    /// The target (a restored legacy session).
    target: Option<&'a [u8]>,
    /// `Mcp-Session-Id`.
    session_id: Option<&'a [u8]>,
    /// `Mcp-Name` (a restored task id).
    mcp_name: Option<&'a [u8]>,
    /// The body (a restored task id).
    body: Option<&'a [u8]>,
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

/// Why a call to a backend gave no response.
enum CallError {
    ClientGone,
    Upstream(UpstreamError),
}

impl Proxy {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let upstream = Upstream::new(&UpstreamSettings::of(config));
        let none = metrics::StatusCounters::new(&metrics.requests, &metrics::NO_BACKEND.into());
        let proxy = Proxy {
            none,
            fleets: Mutex::new(Vec::new()),
            live: ArcSwap::from_pointee(Live::default()),
            upstream,
            metrics,
            moved: failover::Moved::default(),
        };
        let (pools, _) = proxy.apply_pools(config);
        let live = Live::new(config, pools, &Live::default(), &proxy.metrics);
        proxy.live.store(Arc::new(live));
        proxy
    }

    /// Applies a reloaded config: pools and routes, backends, balance,
    /// health and drain settings, timeouts, the session keys (exactly those
    /// listed: a key no longer there opens nothing), binding and limits.
    pub fn reconfigure(&self, config: &Config) {
        let old = self.live.load_full();
        let (pools, removed) = self.apply_pools(config);
        self.live
            .store(Arc::new(Live::new(config, pools, &old, &self.metrics)));
        // Only now that no route names them: their backends drain and leave.
        for named in removed {
            named.fleet.retain_sources(&[]);
        }
        self.upstream.reconfigure(&UpstreamSettings::of(config));
    }

    /// Gives each configured pool its settings and backends (making the
    /// pools that are new); a pool the config no longer names loses its
    /// sources, so its backends drain and leave. Returns every pool (the
    /// configured ones first, in the config's order) and the removed ones,
    /// to empty once the routes that named them are gone.
    fn apply_pools(&self, config: &Config) -> (Vec<Arc<Named>>, Vec<Arc<Named>>) {
        let mut fleets = self.fleets.lock().unwrap_or_else(|e| e.into_inner());
        let mut pools = Vec::new();
        for pool in &config.pools {
            let named = match fleets.iter().find(|n| *n.name == *pool.name) {
                Some(named) => named.clone(),
                None => {
                    let fleet = Fleet::new(
                        self.metrics.clone(),
                        pool.health.clone(),
                        self.upstream.tls().clone(),
                    );
                    let named = Arc::new(Named {
                        name: pool.name.as_str().into(),
                        fleet: Arc::new(fleet),
                    });
                    fleets.push(named.clone());
                    named
                }
            };
            let fleet = &named.fleet;
            fleet.configure(pool.balance, config.drain, pool.health.clone());
            let entries = pool.backends.iter().map(|b| b.entry()).collect();
            fleet.set_source(crate::pool::fleet::STATIC, entries);
            let mut keep: Vec<String> = pool.sources.iter().map(|s| s.label()).collect();
            keep.push(crate::pool::fleet::STATIC.into());
            fleet.retain_sources(&keep);
            pools.push(named);
        }
        let mut removed = Vec::new();
        for named in fleets.iter() {
            if config.pool(&named.name).is_none() {
                removed.push(named.clone());
                if !named.fleet.pool().backends().is_empty() {
                    pools.push(named.clone());
                }
            }
        }
        (pools, removed)
    }

    /// Every pool (those a reload removed while they still drain, last).
    pub fn pools(&self) -> Vec<Arc<Named>> {
        self.live.load().pools.clone()
    }

    /// Every pool ever configured, removed ones included (for the tick
    /// that removes their last backends).
    pub fn all_pools(&self) -> Vec<Arc<Named>> {
        self.fleets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        #[cfg(test)]
        if client.buf().starts_with(b"GET /__tether_test_panic ") {
            panic!("a panic the tests asked for");
        }
        let live = self.live.load_full();
        let buf = client.buf();
        let method = &buf[head.method.clone()];
        let req = Request {
            live: &live,
            head,
            body: &body,
            consumed: match &body {
                Body::InBuf(range) => range.end,
                Body::Owned(_) => head.len,
            },
            target: Target::of(head, buf),
            head_request: method == b"HEAD",
            post: method == b"POST",
            delete: method == b"DELETE",
            legacy_get: classify::may_open_legacy_stream(method),
            // The revision is POST only: a GET or DELETE with a session is
            // of the older world whatever version it names.
            modern: method == b"POST" && classify::is_modern(buf, &head.fields),
            principal: live.bind.principal(buf, &head.fields),
            bound: !live.bind.is_none(),
        };
        // Only a target with a query can carry a legacy session: the others
        // need no UTF-8 check here.
        let query_target = match req.target.bytes(buf).contains(&b'?') {
            true => req.target.as_str(buf),
            false => "",
        };
        let session = classify::session_ref(&head.fields, query_target);
        if AccessLog::wanted(live.settings.access_log) {
            let token = match &session {
                Ok(Some(s)) => Some(s.token_bytes(buf)),
                _ => None,
            };
            let line = AccessLog::new(method, req.target.bytes(buf), token);
            client.set_access(line);
        }
        if !live.origins.is_empty() && !live.origins.allows(client.buf(), &head.fields) {
            return self
                .answer(client, &req, ProxyError::OriginNotAllowed, None)
                .await;
        }
        if head.fields.count(FieldKind::ProtocolVersion) > 1 {
            // Tether and a server could read different ones.
            let err = ProxyError::HeaderMismatch("MCP-Protocol-Version is given twice".into());
            return self.answer(client, &req, err, None).await;
        }
        match &live.callers {
            None => self.dispatch(client, &req, session).await,
            Some(limits) => Box::pin(self.limited(client, &req, limits, session)).await,
        }
    }

    /// The request on its way by what it names: a session's owner, or the
    /// pick for a new one.
    async fn dispatch(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        session: Result<Option<classify::SessionRef>, classify::Ambiguous>,
    ) -> Outcome {
        if req.modern {
            self.metrics.modern_requests.inc();
            match session {
                // The legacy transport has no modern form: its session
                // parameter is checked whatever version the request names.
                Ok(Some(s)) if matches!(s.carrier, Carrier::Query { .. }) => {
                    return self.forward_owned(client, req, s).await
                }
                Err(classify::Ambiguous) => {
                    return self.unroutable(client, req, Unroutable::Ambiguous).await
                }
                // No sessions in this revision: an `Mcp-Session-Id` is the
                // server's business (a modern server ignores it), not a route.
                _ => return self.forward_new(client, req).await,
            }
        }
        match session {
            Ok(Some(session)) => self.forward_owned(client, req, session).await,
            Ok(None) => self.forward_new(client, req).await,
            Err(classify::Ambiguous) => self.unroutable(client, req, Unroutable::Ambiguous).await,
        }
    }

    /// A request without a session: the pick of its route's pool, then the
    /// next one if the pick refused the connection (nothing was sent, so it
    /// is safe).
    async fn forward_new(self: &Arc<Self>, client: &mut Client, req: &Request<'_>) -> Outcome {
        let (named, creates, steer) = match self.choose(client, req) {
            Ok(Chosen::Pool {
                named,
                creates,
                steer,
            }) => (named, creates, steer),
            Ok(Chosen::Task { token }) => return self.forward_task(client, req, token).await,
            Err(err) => {
                if let ProxyError::TaskNotFound = err {
                    self.count_invalid("not_a_token");
                }
                return self.answer(client, req, err, None).await;
            }
        };
        let mut cache_key = None;
        if let (Some(cache), true) = (&req.live.cache, req.modern) {
            let buf = client.buf();
            let version = req.head.fields.get(buf, FieldKind::ProtocolVersion);
            let found = cache.lookup(
                &named.name,
                version.unwrap_or_default().trim_ascii(),
                req.body.bytes(buf),
                std::time::Instant::now(),
            );
            match found {
                Some(crate::modern::cache::Lookup::Hit(answer)) => {
                    self.count_cache("hit");
                    return self.answer_cached(client, req, &answer).await;
                }
                Some(crate::modern::cache::Lookup::Miss(key)) => {
                    self.count_cache("miss");
                    cache_key = Some(key);
                }
                None => {}
            }
        }
        let mut init = self.replayable_init(client, req, &named);
        let fleet = &named.fleet;
        let pool = fleet.load_full();
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut last_error = None;
        while let Some(picked) = steer.pick(&pool, &tried) {
            let backend = picked.backend;
            if picked.panic {
                self.metrics.panic_picks.inc();
                tracing::warn!(backend = %backend.id, "no healthy backend: a new session goes to an unhealthy one");
            }
            let outstanding = backend.track();
            let request = self.upstream_request(client, req, &backend, Changes::default());
            let result = self.call(client, req, &backend, &request).await;
            buf::give(request);
            match result {
                Ok(resp) => {
                    note_response(client, resp.head.status, &backend);
                    if let Some(store) = &req.live.store {
                        let target = req.target.bytes(client.buf());
                        let kept = self.keep(store, (req, target), &resp, &backend, None);
                        if let Err(err) = Box::pin(kept).await {
                            return self.answer(client, req, err, Some(&backend)).await;
                        }
                    }
                    let tasks = ResponseChanges {
                        creates,
                        echo: None,
                        set_cookie: steer.cookie_for(&req.live.affinity, &backend),
                        cache_key: cache_key.take(),
                        init: init.take(),
                        session_token: None,
                    };
                    let outcome = self.respond(
                        client,
                        req,
                        resp,
                        (&backend, fleet),
                        outstanding,
                        (None, tasks),
                    );
                    client.consume(req.consumed);
                    return outcome;
                }
                Err(CallError::ClientGone) => return Outcome::CLOSE,
                Err(CallError::Upstream(e)) => {
                    self.count_upstream_error(&backend, fleet, e.failure);
                    tracing::warn!(backend = %backend.id, failure = e.failure.as_str(), detail = %e.detail, "upstream call failed");
                    let retry = e.failure.nothing_sent();
                    let err = ProxyError::Upstream {
                        backend: backend.id.to_string(),
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

    /// The request as `backend` gets it, with `changes` from the client's.
    fn upstream_request(
        &self,
        client: &Client,
        req: &Request<'_>,
        backend: &Backend,
        changes: Changes<'_>,
    ) -> Vec<u8> {
        let buf = client.buf();
        let mut out = buf::take();
        // With a store, an `Mcp-Session-Id` is a server's real id: on a
        // 2026-07-28 request (no sessions, no binding check) it is dropped.
        let strip = req.modern && req.live.store.is_some();
        let to = ToUpstream {
            target: changes.target.unwrap_or_else(|| req.target.bytes(buf)),
            session_id: changes.session_id.or(strip.then_some(&b""[..])),
            mcp_name: changes.mcp_name,
            peer: client.peer_ip(),
            authority: backend.authority.as_str(),
            preserve_host: req.live.settings.preserve_host,
            host: req.head.target_authority().map(|a| &buf[a]),
            tls: client.is_tls(),
            forwarded: req.live.settings.forwarded,
        };
        let body = changes.body.unwrap_or_else(|| req.body.bytes(buf));
        headers::request(&mut out, buf, req.head, &to, body);
        out
    }

    fn count_binding(&self, binding: crate::affinity::Binding) {
        tracing::info!(
            reason = binding.as_str(),
            "request for a session bound to another caller; answered 404"
        );
        self.metrics
            .binding_rejections
            .get_or_create(&metrics::Reason {
                reason: binding.as_str(),
            })
            .inc();
    }

    fn count_invalid(&self, reason: &'static str) {
        tracing::info!(reason, "task or session reference did not open");
        self.metrics
            .invalid_tokens
            .get_or_create(&metrics::Reason { reason })
            .inc();
    }

    /// Sends `request` and waits for the response head, watching the client:
    /// one that goes away ends the call (and closes the backend connection).
    ///
    /// A client that only shuts down its sending side is half-closed: for
    /// the revisions before 2026-07-28 that is no cancellation (their spec
    /// says a disconnection is not one; HAProxy also answers such a client),
    /// so the call goes on and its answer is written. From 2026-07-28 on,
    /// closing the response stream *is* the cancellation, so the call ends
    /// at once. Either way a reset ends it.
    async fn call(
        &self,
        client: &mut Client,
        req: &Request<'_>,
        backend: &Backend,
        request: &[u8],
    ) -> Result<Response, CallError> {
        client.hold(req.consumed);
        let timeout = self.upstream.response_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let exchange = self.upstream.exchange(backend, request, req.head_request);
        tokio::pin!(exchange);
        // The client is watched before the exchange's first poll: one gone
        // already (an HTTP/2 stream reset as it opened) gets no request sent
        // for it. After that, as before, only while the exchange waits.
        let mut first = true;
        std::future::poll_fn(|cx| {
            let watch_first = std::mem::take(&mut first);
            if watch_first && client_left(client, cx, req.modern, backend) {
                return Poll::Ready(Err(CallError::ClientGone));
            }
            if let Poll::Ready(result) = exchange.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(CallError::Upstream));
            }
            if client.poll_response_deadline(cx, deadline).is_ready() {
                return Poll::Ready(Err(CallError::Upstream(UpstreamError {
                    failure: UpstreamFailure::Timeout,
                    detail: format!("no response within {timeout:?}"),
                })));
            }
            if !watch_first && client_left(client, cx, req.modern, backend) {
                return Poll::Ready(Err(CallError::ClientGone));
            }
            Poll::Pending
        })
        .await
    }

    /// 404 for a session that leads nowhere, counted by why.
    async fn unroutable(&self, client: &mut Client, req: &Request<'_>, why: Unroutable) -> Outcome {
        match (&why, why.invalid_reason()) {
            (Unroutable::NotTheCaller(binding), _) => self.count_binding(*binding),
            (Unroutable::OwnerGone(owner), _) => {
                tracing::info!(backend = %owner, "session's owner is gone; answered 404");
                if let Some((_, b)) = find_owner(&req.live.pools, owner.as_bytes()) {
                    b.session_orphaned();
                }
                self.metrics
                    .sessions_orphaned
                    .get_or_create(&Metrics::backend(&owner.as_str().into()))
                    .inc();
            }
            (_, reason) => self.count_invalid(reason.unwrap_or("invalid")),
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
        let body = self.reject(&err, backend, req.body.bytes(client.buf()));
        client.consume(req.consumed);
        if let Some(line) = client.access() {
            line.status = err.status().as_u16();
            line.backend = backend.map(|b| b.id.clone());
            line.bytes = body.len() as u64;
        }
        let close = !req.head.keep_alive || client.half_closed() || client.lifecycle().closing();
        let keep_alive = client
            .send_error(&err, &body, close, req.head_request)
            .await
            .is_ok()
            && !close;
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
        // A 403 for a foreign Origin has no id (the 2025-11-25 transport's words).
        let id = if body.is_empty() || matches!(err, ProxyError::OriginNotAllowed) {
            serde_json::Value::Null
        } else {
            jsonrpc_id(body)
        };
        match backend {
            Some(backend) => self.count_request(backend, err.status().as_u16()),
            None => self.none.inc(err.status().as_u16()),
        }
        err.body(&id)
    }

    fn count_request(&self, backend: &Backend, status: u16) {
        backend
            .requests
            .get_or_init(|| metrics::StatusCounters::new(&self.metrics.requests, &backend.id))
            .inc(status);
    }

    /// Counts a new session; `unbound`: begun with no principal while
    /// sessions are bound (so bound to no one: counted, and said once).
    fn count_session(&self, backend: &Backend, transport: &'static str, unbound: bool) {
        if unbound {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            self.metrics.unbound_sessions.inc();
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(transport, "a session began with no principal while [sessions] bind is set: it is bound to no one (tether_sessions_unbound_total counts them; said once)");
            }
        }
        backend.session_created();
        self.metrics
            .sessions_created
            .get_or_create(&metrics::BackendTransport {
                backend: metrics::Name(backend.id.clone()),
                transport,
            })
            .inc();
    }

    fn count_upstream_error(&self, backend: &Backend, fleet: &Fleet, failure: UpstreamFailure) {
        if matches!(
            failure,
            UpstreamFailure::Refused
                | UpstreamFailure::Connect
                | UpstreamFailure::Tls
                | UpstreamFailure::Timeout
        ) {
            health::passive_failure(backend, &fleet.health_settings(), &self.metrics);
        }
        self.metrics
            .upstream_errors
            .get_or_create(&metrics::BackendKind {
                backend: metrics::Name(backend.id.clone()),
                kind: failure.as_str(),
            })
            .inc();
    }
}

/// Whether the client left while its request is answered. A half-close is
/// no cancellation before 2026-07-28 (their spec says a disconnection is
/// not one); from 2026-07-28 on, closing the stream is; a reset always is.
fn client_left(
    client: &mut Client,
    cx: &mut std::task::Context<'_>,
    modern: bool,
    backend: &Backend,
) -> bool {
    match client.poll_watch(cx) {
        Poll::Ready(Watch::Closed) if !modern => {
            tracing::debug!(backend = %backend.id, "client half-closed; its request goes on");
            false
        }
        Poll::Ready(_) => {
            tracing::debug!(backend = %backend.id, "client left while its request was being answered");
            true
        }
        Poll::Pending => false,
    }
}

/// The access log line learns the backend's status.
fn note_response(client: &mut Client, status: u16, backend: &Backend) {
    if let Some(line) = client.access() {
        line.status = status;
        line.backend = Some(backend.id.clone());
    }
}

/// The value a response's `Mcp-Session-Id` had, as a field kind lookup.
fn response_session_id(resp: &Response) -> Option<&[u8]> {
    resp.head.fields.get(&resp.buf, FieldKind::SessionId)
}
