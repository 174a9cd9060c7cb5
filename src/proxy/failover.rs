//! Failover by re-initialize (`failover = "reinitialize"`, per pool).
//!
//! The spec's answer to a session whose owner is gone is a 404 that makes
//! the client start over, but the most common clients surface it as an
//! error instead. For servers whose sessions hold nothing worth keeping,
//! a pool may opt in to this: a new session's token also carries the
//! `params` of the client's `initialize` (sealed like the rest); when the
//! owner is gone, Tether gives another backend of the pool the same
//! `initialize`, then `notifications/initialized`, sends it the client's
//! request, and hands back the new session's token in `Mcp-Session-Id`
//! (the TypeScript client adopts it). The server's state of the old
//! session (subscriptions, per-session data) is lost: that is the opt-in.
//!
//! Only what is safe to send again is replayed: a JSON-RPC request or
//! notification (never a client's response to a server's request, which
//! the new session never made) and a GET for a fresh event stream (never
//! one that resumes with `Last-Event-ID`). The request never reached the
//! old owner (it was gone before, or refused the connection), so this is
//! its first delivery. Anything else, a legacy session, a token sealed
//! without the params (too long, or begun before the opt-in) and a session
//! store get the 404.
//!
//! A client that does not adopt the new id (the Python SDK's takes one only
//! from its `initialize`) keeps sending the old token: each Tether instance
//! remembers the sessions it moved (`Moved`, bounded), so the old token
//! reaches the new session instead of beginning one per request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::choose::Chosen;
use super::{Changes, Outcome, Proxy, Request, ResponseChanges};
use crate::classify::{Carrier, SessionRef};
use crate::downstream::Client;
use crate::error::UpstreamFailure;
use crate::forward::upstream::Response;
use crate::http1::head::{FieldKind, RequestHead};
use crate::metrics;
use crate::pool::{find_owner, Backend, Named, State};

/// How many moved sessions an instance remembers (the oldest go first).
const REMEMBERED: usize = 10_000;
/// Largest answer to the replayed `initialize` that is read.
const MAX_ANSWER: usize = 256 * 1024;
/// The JSON-RPC id of the replayed `initialize`.
const INIT_ID: &str = "tether-failover";

/// The sessions this instance moved: the old token's digest -> the new token.
#[derive(Default)]
pub(super) struct Moved {
    inner: Mutex<MovedInner>,
}

#[derive(Default)]
struct MovedInner {
    map: HashMap<[u8; 32], Arc<str>>,
    order: VecDeque<[u8; 32]>,
}

impl Moved {
    fn digest(token: &[u8]) -> [u8; 32] {
        Sha256::digest(token).into()
    }

    fn get(&self, old: &[u8; 32]) -> Option<Arc<str>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(old).cloned()
    }

    fn remember(&self, old: [u8; 32], new: Arc<str>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.map.insert(old, new).is_none() {
            inner.order.push_back(old);
        }
        while inner.order.len() > REMEMBERED {
            if let Some(oldest) = inner.order.pop_front() {
                inner.map.remove(&oldest);
            }
        }
    }
}

/// Why a new session could not be begun on a backend.
enum Begin {
    /// It refused the connection: nothing was sent, the next may be tried.
    Refused,
    Failed(String),
}

/// The parts of a JSON-RPC message failover looks at.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a serde_json::value::RawValue>,
}

impl Proxy {
    /// The `params` of an `initialize` that begins a session in a pool that
    /// fails over, to seal into its token; `None` for any other request, or
    /// params too long for a token (that session's failover is the 404).
    pub(super) fn replayable_init(
        &self,
        client: &Client,
        req: &Request<'_>,
        named: &Named,
    ) -> Option<Box<[u8]>> {
        if !req.post || req.modern || !req.live.fails_over(&named.name) {
            return None;
        }
        let body = req.body.bytes(client.buf());
        if !body.windows(12).any(|w| w == b"\"initialize\"") {
            return None;
        }
        let message: Message<'_> = serde_json::from_slice(body).ok()?;
        let params = message
            .params
            .filter(|_| message.method.as_deref() == Some("initialize"))?;
        let params = params.get().as_bytes();
        if params.len() > crate::affinity::token::MAX_INIT {
            tracing::info!(
                pool = %named.name,
                len = params.len(),
                "initialize params too long to seal: this session's failover will be the 404"
            );
            return None;
        }
        Some(params.into())
    }

    /// A request of a session whose owner is gone: in a pool that fails
    /// over, on a new session on another backend (or the one this instance
    /// moved it to already). `None`: the 404 it gets otherwise.
    pub(super) async fn fail_over(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        session: &SessionRef,
    ) -> Option<Outcome> {
        if req.live.failover.is_empty()
            || req.live.store.is_some()
            || !matches!(session.carrier, Carrier::Header)
        {
            return None;
        }
        let Ok(Chosen::Pool { named, steer, .. }) = self.choose(client, req) else {
            return None;
        };
        if !req.live.fails_over(&named.name) {
            return None;
        }
        let old = session.token_bytes(client.buf());
        let digest = Moved::digest(old);
        let sealed = req.live.affinity.open(old).ok()?;
        if let Some(token) = self.moved.get(&digest) {
            if let Some(outcome) = self.to_moved(client, req, &named, token).await {
                return Some(outcome);
            }
        }
        let Some(init) = sealed.init().map(<[u8]>::to_vec) else {
            self.count_failover(&named, "no_init");
            return None;
        };
        if !replayable(client.buf(), req) {
            self.count_failover(&named, "not_replayable");
            return None;
        }
        let pool = named.fleet.load_full();
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        while let Some(picked) = steer.pick(&pool, &tried) {
            let backend = picked.backend;
            let upstream_id = match self.begin_session(client, req, &backend, &init).await {
                Ok(id) => id,
                Err(Begin::Refused) => {
                    tried.push(backend);
                    continue;
                }
                Err(Begin::Failed(why)) => {
                    tracing::warn!(pool = %named.name, backend = %backend.id, why, "failover: the new session could not be begun; answered 404");
                    self.count_failover(&named, "failed");
                    return None;
                }
            };
            self.count_session(&backend, "streamable", req.unbound());
            let tag = req.principal_tag();
            let Some(token) = req.live.affinity.sealer().seal_replayable(
                &backend.id,
                &upstream_id,
                tag.as_ref(),
                &init,
            ) else {
                self.count_failover(&named, "failed");
                return None;
            };
            let token: Arc<str> = token.into();
            self.moved.remember(digest, token.clone());
            self.count_failover(&named, "reinitialized");
            tracing::info!(pool = %named.name, from = %sealed.backend(), to = %backend.id, "session's owner is gone: re-initialized on another backend");
            let outstanding = backend.track();
            let changes = Changes {
                session_id: Some(upstream_id.as_bytes()),
                ..Changes::default()
            };
            let answer = ResponseChanges {
                session_token: Some(token.to_string()),
                ..ResponseChanges::default()
            };
            return self
                .call_owner(
                    client,
                    req,
                    (&backend, &named.fleet),
                    outstanding,
                    changes,
                    (None, answer),
                )
                .await;
        }
        self.count_failover(&named, "failed");
        None
    }

    /// The request on the session this instance moved the client's to;
    /// `None` when that session's owner is gone too.
    async fn to_moved(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        named: &Named,
        token: Arc<str>,
    ) -> Option<Outcome> {
        let sealed = req.live.affinity.open(token.as_bytes()).ok()?;
        let (home, backend) = find_owner(&req.live.pools, sealed.backend_bytes())?;
        if backend.state() == State::Down {
            return None;
        }
        self.count_failover(named, "moved");
        let backend = backend.clone();
        let fleet = home.fleet.clone();
        let outstanding = backend.track();
        let changes = Changes {
            session_id: Some(sealed.upstream_id_bytes()),
            ..Changes::default()
        };
        let answer = ResponseChanges {
            session_token: Some(token.to_string()),
            ..ResponseChanges::default()
        };
        self.call_owner(
            client,
            req,
            (&backend, &fleet),
            outstanding,
            changes,
            (None, answer),
        )
        .await
    }

    /// Gives `backend` the client's `initialize` (`init`: its params) and
    /// `notifications/initialized`; returns the new session's id.
    async fn begin_session(
        &self,
        client: &Client,
        req: &Request<'_>,
        backend: &Backend,
        init: &[u8],
    ) -> Result<String, Begin> {
        let mut body = Vec::with_capacity(init.len() + 80);
        body.extend_from_slice(br#"{"jsonrpc":"2.0","id":""#);
        body.extend_from_slice(INIT_ID.as_bytes());
        body.extend_from_slice(br#"","method":"initialize","params":"#);
        body.extend_from_slice(init);
        body.push(b'}');
        let request = self.replay_head(client, req, backend, &body, None);
        let (status, id, answer) = self.exchange_whole(backend, &request).await?;
        if status != 200 {
            return Err(Begin::Failed(format!("initialize answered {status}")));
        }
        let Some(id) = id else {
            return Err(Begin::Failed(
                "initialize answered with no Mcp-Session-Id".into(),
            ));
        };
        let version = negotiated_version(&answer)
            .ok_or_else(|| Begin::Failed("initialize answered with no result".into()))?;
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let request = self.replay_head(client, req, backend, note, Some((&id, &version)));
        match self.exchange_whole(backend, &request).await? {
            (200..=299, _, _) => Ok(id),
            (status, _, _) => Err(Begin::Failed(format!(
                "notifications/initialized answered {status}"
            ))),
        }
    }

    /// Sends one of failover's own requests and reads the whole answer:
    /// status, a valid `Mcp-Session-Id`, the body (for an event stream, up
    /// to its first complete event).
    async fn exchange_whole(
        &self,
        backend: &Backend,
        request: &[u8],
    ) -> Result<(u16, Option<String>, Vec<u8>), Begin> {
        let timeout = self.upstream.response_timeout();
        let work = async {
            let resp = match self.upstream.exchange(backend, request, false).await {
                Ok(resp) => resp,
                Err(e) if e.failure == UpstreamFailure::Refused => return Err(Begin::Refused),
                Err(e) => {
                    return Err(Begin::Failed(format!(
                        "{}: {}",
                        e.failure.as_str(),
                        e.detail
                    )))
                }
            };
            let Response {
                mut stream,
                mut buf,
                head,
                ..
            } = resp;
            let id = head
                .fields
                .get(&buf, FieldKind::SessionId)
                .filter(|v| crate::affinity::is_session_id(v))
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned);
            let raw = buf.split_off(head.len.min(buf.len()));
            let events = crate::forward::headers::is_event_stream(
                head.fields.get(&buf, FieldKind::ContentType),
            );
            let whole = |body: &[u8]| events && answered_event(body).is_some();
            let body = crate::http1::answer::read(&mut stream, &head, raw, MAX_ANSWER, whole)
                .await
                .map_err(|e| Begin::Failed(e.to_string()))?;
            // The connection is dropped, not pooled: this path is rare.
            Ok((head.status, id, body))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Begin::Failed(format!("no answer within {timeout:?}"))),
        }
    }

    /// The head (and `body`) of one of failover's own POSTs: the client's
    /// target and its fields (its credentials among them), with the framing,
    /// `Content-Type`, `Accept` and the session's fields written here.
    fn replay_head(
        &self,
        client: &Client,
        req: &Request<'_>,
        backend: &Backend,
        body: &[u8],
        session: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let buf = client.buf();
        let mut out = Vec::with_capacity(1024 + body.len());
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(req.target.bytes(buf));
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let preserve_host = req.live.settings.preserve_host;
        let mut has_host = false;
        for f in &req.head.fields.list {
            let name = &buf[f.name.clone()];
            let pass = match f.kind {
                FieldKind::Host => preserve_host && !has_host,
                FieldKind::Other => {
                    !name.eq_ignore_ascii_case(b"accept")
                        && !name.eq_ignore_ascii_case(b"last-event-id")
                }
                _ => false,
            };
            if pass {
                has_host |= f.kind == FieldKind::Host;
                push_field(&mut out, name, &buf[f.value.clone()]);
            }
        }
        if !has_host {
            push_field(&mut out, b"host", backend.authority.as_str().as_bytes());
        }
        push_field(&mut out, b"content-type", b"application/json");
        push_field(&mut out, b"accept", b"application/json, text/event-stream");
        if let Some((id, version)) = session {
            push_field(&mut out, b"mcp-session-id", id.as_bytes());
            push_field(&mut out, b"mcp-protocol-version", version.as_bytes());
        }
        push_field(&mut out, b"x-forwarded-for", client.peer_ip().as_bytes());
        let proto: &[u8] = if client.is_tls() { b"https" } else { b"http" };
        push_field(&mut out, b"x-forwarded-proto", proto);
        push_field(
            &mut out,
            b"content-length",
            body.len().to_string().as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }

    fn count_failover(&self, named: &Named, outcome: &'static str) {
        self.metrics
            .session_failovers
            .get_or_create(&metrics::PoolOutcome {
                pool: metrics::Name(named.name.clone()),
                outcome,
            })
            .inc();
    }
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether the request may go to a session it was not sent in: a JSON-RPC
/// request or notification (not `initialize`, not a response to a server's
/// request), or a GET for a fresh event stream.
fn replayable(buf: &[u8], req: &Request<'_>) -> bool {
    if req.post {
        let body = req.body.bytes(buf);
        return match serde_json::from_slice::<Message<'_>>(body) {
            Ok(m) => m.method.is_some_and(|m| m != "initialize"),
            Err(_) => false,
        };
    }
    let head: &RequestHead = req.head;
    let method = &buf[head.method.clone()];
    let resumes = head
        .fields
        .list
        .iter()
        .any(|f| buf[f.name.clone()].eq_ignore_ascii_case(b"last-event-id"));
    method == b"GET" && !resumes
}

/// The protocol version a server's answer to `initialize` negotiated: from
/// its JSON body, or from the event that carries the answer (a server may
/// send others first, such as an empty priming event).
fn negotiated_version(answer: &[u8]) -> Option<String> {
    match crate::forward::sse::event_end(answer) {
        None => version_in(answer).flatten(),
        Some(_) => answered_event(answer).flatten(),
    }
}

/// In an event stream: `Some` once an event carries the answer to the
/// replayed `initialize` (with the version it negotiated, if a result).
fn answered_event(mut events: &[u8]) -> Option<Option<String>> {
    while let Some(end) = crate::forward::sse::event_end(events) {
        let data = crate::forward::sse::event_data(&events[..end]);
        if let Some(found) = data.as_deref().and_then(version_in) {
            return Some(found);
        }
        events = &events[end..];
    }
    None
}

/// `Some` when `json` is the answer to the replayed `initialize`: the
/// version its result negotiated, or `None` for an error or no version.
fn version_in(json: &[u8]) -> Option<Option<String>> {
    #[derive(Deserialize)]
    struct Answer {
        id: Option<serde_json::Value>,
        result: Option<InitResult>,
    }
    #[derive(Deserialize)]
    struct InitResult {
        #[serde(rename = "protocolVersion")]
        protocol_version: Option<String>,
    }
    let answer = serde_json::from_slice::<Answer>(json).ok()?;
    if answer.id.as_ref().and_then(|id| id.as_str()) != Some(INIT_ID) {
        return None;
    }
    // It goes into a header: a token of visible ASCII.
    let version = answer.result.and_then(|r| r.protocol_version);
    Some(version.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_negotiated_version_is_read_from_json_or_the_answering_event() {
        let json = br#"{"jsonrpc":"2.0","id":"tether-failover","result":{"protocolVersion":"2025-11-25","capabilities":{}}}"#;
        assert_eq!(negotiated_version(json).as_deref(), Some("2025-11-25"));
        let sse = b"id: 1\r\ndata: \r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"tether-failover\",\"result\":{\"protocolVersion\":\"2025-06-18\"}}\r\n\r\n";
        assert_eq!(negotiated_version(sse).as_deref(), Some("2025-06-18"));
        // The priming event alone is no answer yet.
        assert_eq!(answered_event(b"id: 1\ndata: \n\n"), None);
        assert_eq!(answered_event(&sse[..20]), None);
        assert!(answered_event(sse).is_some());
        for bad in [
            &br#"{"jsonrpc":"2.0","id":"tether-failover","error":{"code":-32600,"message":"no"}}"#
                [..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}"#,
            br#"{"id":"tether-failover","result":{"protocolVersion":"bad version"}}"#,
            b"event: message\n\n",
            b"not json",
            b"",
        ] {
            assert_eq!(
                negotiated_version(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn moved_sessions_are_remembered_up_to_a_bound() {
        let moved = Moved::default();
        let first = Moved::digest(b"t2.first");
        moved.remember(first, "t2.new".into());
        assert_eq!(moved.get(&first).as_deref(), Some("t2.new"));
        assert_eq!(moved.get(&Moved::digest(b"t2.other")), None);
        for i in 0..REMEMBERED {
            moved.remember(Moved::digest(format!("t2.{i}").as_bytes()), "x".into());
        }
        assert_eq!(moved.get(&first), None, "the oldest is forgotten first");
        let inner = moved.inner.lock().unwrap();
        assert_eq!(
            (inner.map.len(), inner.order.len()),
            (REMEMBERED, REMEMBERED)
        );
    }
}
