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

mod moved;
mod replay;

use std::sync::Arc;

use serde::Deserialize;

use super::choose::{Chosen, Steer};
use super::{Changes, Outcome, Proxy, Request, ResponseChanges};
use crate::affinity::{Sealed, Unroutable};
use crate::classify::{Carrier, SessionRef};
use crate::downstream::Client;
use crate::http1::head::RequestHead;
use crate::metrics;
use crate::pool::{find_owner, Backend, Named, State};
pub use moved::Moved;
use replay::Begin;

/// The parts of a JSON-RPC message failover looks at.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a serde_json::value::RawValue>,
}

/// Where a request of a moved session went.
enum ToMoved {
    Answered(Outcome),
    /// The session it was moved to is gone too.
    Gone,
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
            tracing::debug!(
                pool = %named.name,
                len = params.len(),
                "initialize params too long to seal: this session's failover will be the 404"
            );
            return None;
        }
        Some(params.into())
    }

    /// A request of a replayable session whose owner is still there, but
    /// that this instance moved to another backend already (the owner was
    /// down for a while): it stays on the new session, where the client's
    /// state now is. `None`: not moved (or the new session is gone).
    pub(super) async fn to_moved_first(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        session: &SessionRef,
    ) -> Option<Outcome> {
        let digest = Moved::digest(session.token_bytes(client.buf()));
        let token = self.moved.moved_to(&digest)?;
        match self.to_moved(client, req, token).await {
            ToMoved::Answered(outcome) => Some(outcome),
            ToMoved::Gone => None,
        }
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
        if let Some(token) = self.moved.moved_to(&digest) {
            match self.to_moved(client, req, token).await {
                ToMoved::Answered(outcome) => return Some(outcome),
                // Moved to a backend that is gone too: moved again below.
                ToMoved::Gone => {
                    if let Some(slot) = self.moved.current(&digest) {
                        self.moved.forget(&digest, &slot);
                    }
                }
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
        // One new session per old one: requests that come together wait for
        // the first one's.
        let slot = self.moved.slot(digest);
        let begin = self.begin_anywhere(client, req, (&named, &steer), &sealed, &init);
        let token = slot.get_or_init(|| begin).await.clone();
        let Some(token) = token else {
            self.moved.forget(&digest, &slot);
            return None;
        };
        match self.to_moved(client, req, token).await {
            ToMoved::Answered(outcome) => Some(outcome),
            ToMoved::Gone => None,
        }
    }

    /// Begins a session like the client's old one on a backend of `named`
    /// (the first that takes it): its token, bound as the old one was.
    async fn begin_anywhere(
        &self,
        client: &Client,
        req: &Request<'_>,
        (named, steer): (&Named, &Steer),
        sealed: &Sealed,
        init: &[u8],
    ) -> Option<Arc<str>> {
        let pool = named.fleet.load_full();
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        while let Some(picked) = steer.pick(&pool, &tried) {
            let backend = picked.backend;
            let begun = match self.replay_initialize(client, req, &backend, init).await {
                Ok(begun) => begun,
                Err(Begin::Next(why)) => {
                    tracing::info!(pool = %named.name, backend = %backend.id, why, "failover: no session begun here; trying the next backend");
                    tried.push(backend);
                    continue;
                }
                Err(Begin::Failed(why)) => {
                    tracing::warn!(pool = %named.name, backend = %backend.id, why, "failover: the new session could not be begun; answered 404");
                    break;
                }
            };
            // A session bound to its caller stays bound (the request passed
            // the old token's check), under the key in force; an unbound one
            // stays unbound.
            let tag = sealed.principal().and(req.principal_tag());
            let sealer = req.live.affinity.sealer();
            let Some(token) = sealer.seal_replayable(&backend.id, &begun.id, tag.as_ref(), init)
            else {
                tracing::warn!(pool = %named.name, backend = %backend.id, "failover: the new session's id is too long to seal; answered 404");
                self.replay_delete(client, req, &backend, &begun.id).await;
                break;
            };
            if let Err(why) = self.replay_initialized(client, req, &backend, &begun).await {
                tracing::warn!(pool = %named.name, backend = %backend.id, why, "failover: the new session could not be begun; answered 404");
                self.replay_delete(client, req, &backend, &begun.id).await;
                break;
            }
            self.count_session(&backend, "streamable", tag.is_none() && req.bound);
            self.count_failover(named, "reinitialized");
            tracing::info!(pool = %named.name, from = %sealed.backend(), to = %backend.id, "session's owner is gone: re-initialized on another backend");
            return Some(token.into());
        }
        self.count_failover(named, "failed");
        None
    }

    /// The request on the session this instance moved the client's to.
    async fn to_moved(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        token: Arc<str>,
    ) -> ToMoved {
        let Ok(sealed) = req.live.affinity.open(token.as_bytes()) else {
            return ToMoved::Gone; // its key was retired
        };
        if let Err(binding) = req.live.affinity.check_caller(&sealed, req.caller()) {
            let outcome = self
                .unroutable(client, req, Unroutable::NotTheCaller(binding))
                .await;
            return ToMoved::Answered(outcome);
        }
        let Some((home, backend)) = find_owner(&req.live.pools, sealed.backend_bytes()) else {
            return ToMoved::Gone;
        };
        if backend.state() == State::Down {
            return ToMoved::Gone;
        }
        // Counted in the pool of the session it now reaches.
        self.count_failover(home, "moved");
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
        let called = self
            .call_owner(
                client,
                req,
                (&backend, &fleet),
                outstanding,
                changes,
                (None, answer),
            )
            .await;
        match called {
            Some(outcome) => ToMoved::Answered(outcome),
            None => ToMoved::Gone,
        }
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
