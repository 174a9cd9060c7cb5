//! With a session store (`[sessions] store`): the lookup that stands in for
//! the token the client would carry, the new session recorded before its
//! answer reaches the client, the entry forgotten on `DELETE`, and the gate
//! that holds a legacy `endpoint` event until its session is recorded.
//!
//! The store holds, for each server id, the sealed entry a token would be;
//! everything after the lookup is the token path, unchanged.

use std::sync::{Arc, Mutex};

use super::{response_session_id, Outcome, Proxy, Request};
use crate::affinity::store::{Space, Store, StoreError};
use crate::affinity::{Owned, ResponseId, TokenKind, Unroutable};
use crate::classify::{Carrier, SessionRef};
use crate::downstream::Client;
use crate::error::ProxyError;
use crate::forward::relay::Gate;
use crate::forward::upstream::Response;
use crate::metrics;
use crate::pool::Backend;

fn space(session: &SessionRef) -> Space {
    match session.carrier {
        Carrier::Header => Space::Streamable,
        Carrier::Query { .. } => Space::Legacy,
    }
}

/// The id a session is stored under: the header's value, or the legacy
/// parameter's value as the URL carries it (still percent-encoded, as the
/// server wrote it in its endpoint event: the form it was stored in).
pub(super) fn stored_id<'a>(
    req: &'a Request<'_>,
    buf: &'a [u8],
    session: &'a SessionRef,
) -> &'a [u8] {
    match &session.carrier {
        Carrier::Header => session.token_bytes(buf),
        Carrier::Query { value } => req.target.bytes(buf).get(value.clone()).unwrap_or_default(),
    }
}

/// The store `[sessions]` names: the one in force when its kind is the
/// same (its table and connection kept, so a reload loses no session).
pub(super) fn store_for(
    sessions: &crate::config::SessionSettings,
    old: Option<&Arc<Store>>,
) -> Option<Arc<Store>> {
    let (kind, ttl, timeout) = (&sessions.store, sessions.ttl, sessions.store_timeout);
    let ca = sessions.store_ca.as_deref();
    if let Some(kept) = old.and_then(|s| s.with(kind, ttl, timeout, ca)) {
        return Some(kept);
    }
    Store::new(kind, ttl, timeout, ca).unwrap_or_else(|e| {
        // The config checked the URL; this cannot happen.
        tracing::error!(error = %e, "session store not made; ids are sealed instead");
        None
    })
}

impl Proxy {
    /// The entry the store holds for the session's id; or, when there is
    /// none (404) or the store cannot say (503), the answer, already given.
    pub(super) async fn lookup(
        &self,
        client: &mut Client,
        req: &Request<'_>,
        store: &Store,
        session: &SessionRef,
    ) -> Result<String, Outcome> {
        let id = stored_id(req, client.buf(), session);
        // Not an id a server issues (nor one Tether would have stored): no
        // round trip for it.
        if !crate::affinity::is_session_id(id) || id.len() > crate::affinity::token::MAX_UPSTREAM_ID
        {
            return Err(self.unroutable(client, req, Unroutable::NotStored).await);
        }
        let found = store.get(space(session), id).await;
        match found {
            Ok(Some(entry)) => {
                self.count_store("get", "hit");
                Ok(entry)
            }
            Ok(None) => {
                self.count_store("get", "miss");
                Err(self.unroutable(client, req, Unroutable::NotStored).await)
            }
            Err(e) => {
                self.count_store("get", "error");
                Err(self.store_failed(client, req, e).await)
            }
        }
    }

    /// After `backend` answered: a new Streamable session is recorded (its
    /// answer must not reach the client before a request of it can be
    /// routed), a deleted one forgotten. An error is the answer to give.
    pub(super) async fn keep(
        self: &Arc<Self>,
        store: &Store,
        (req, target): (&Request<'_>, &[u8]),
        resp: &Response,
        backend: &Arc<Backend>,
        owned: Option<&Owned>,
    ) -> Result<(), ProxyError> {
        let success = (200..300).contains(&resp.head.status);
        if let (Some(owned), true, true) = (owned, req.delete, success) {
            let removed = store
                .remove(Space::Streamable, owned.upstream_id_bytes())
                .await;
            match removed {
                Ok(()) => self.count_store("remove", "ok"),
                Err(e) => {
                    // The server ended the session: its entry runs out by its TTL.
                    self.count_store("remove", "error");
                    tracing::warn!(error = %e, "session store: a deleted session's entry stays until its TTL");
                }
            }
            return Ok(());
        }
        let Some(id) = response_session_id(resp).filter(|_| !req.modern) else {
            return Ok(());
        };
        let (ResponseId::New(_), Ok(text)) = (
            req.live.affinity.classify_response(id, owned),
            std::str::from_utf8(id),
        ) else {
            return Ok(());
        };
        let tag = req.principal_tag();
        let sealer = req.live.affinity.sealer();
        let Some(entry) = sealer.seal(TokenKind::Streamable, &backend.id, text, tag.as_ref())
        else {
            return Ok(());
        };
        match store.put(Space::Streamable, id, entry).await {
            Ok(()) => {
                self.count_store("put", "ok");
                Ok(())
            }
            Err(e) => {
                self.count_store("put", "error");
                // The client gets 503 and will begin again: the session the
                // server just made would only wait for its own timeout.
                self.end_unrecorded(backend, target, text);
                Err(ProxyError::StoreUnavailable(e.to_string()))
            }
        }
    }

    /// Sends the owner a `DELETE` for a session that could not be recorded
    /// (best effort, in the background; its answer is not read).
    fn end_unrecorded(self: &Arc<Self>, backend: &Arc<Backend>, target: &[u8], id: &str) {
        let path = target.split(|&b| b == b'?').next().unwrap_or(b"/");
        let mut request = b"DELETE ".to_vec();
        request.extend_from_slice(path);
        request.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: {}\r\nMcp-Session-Id: {id}\r\nContent-Length: 0\r\n\r\n",
                backend.authority.as_str()
            )
            .as_bytes(),
        );
        let (proxy, backend) = (self.clone(), backend.clone());
        tokio::spawn(async move {
            let ended = proxy.upstream.exchange(&backend, &request, false).await;
            tracing::debug!(backend = %backend.id, ok = ended.is_ok(), "an unrecorded session's DELETE sent");
        });
    }

    /// The seal of a legacy `endpoint` event with a store: the id stays as
    /// the server wrote it, and the gate records it before the event goes out.
    pub(super) fn legacy_keeper(
        self: &Arc<Self>,
        req: &Request<'_>,
        store: &Arc<Store>,
        backend: &Arc<Backend>,
    ) -> (crate::forward::sse::SealFn, Gate) {
        let slot: Arc<Mutex<Option<(String, String)>>> = Arc::default();
        let (live, tag, owner) = (req.live.clone(), req.principal_tag(), backend.clone());
        let unbound = req.unbound();
        let proxy = self.clone();
        let fill = slot.clone();
        let seal = Box::new(move |id: &str| {
            let entry =
                live.affinity
                    .sealer()
                    .seal(TokenKind::Legacy, &owner.id, id, tag.as_ref())?;
            proxy.count_session(&owner, "legacy", unbound);
            *fill.lock().unwrap_or_else(|e| e.into_inner()) = Some((id.to_owned(), entry));
            Some(id.to_owned())
        });
        let (store, proxy) = (store.clone(), self.clone());
        let gate: Gate = Box::new(move || {
            let (id, entry) = slot.lock().unwrap_or_else(|e| e.into_inner()).take()?;
            let (store, proxy) = (store.clone(), proxy.clone());
            Some(Box::pin(async move {
                let put = store.put(Space::Legacy, id.as_bytes(), entry).await;
                proxy.count_store("put", if put.is_ok() { "ok" } else { "error" });
                put.map_err(|e| format!("the legacy session could not be recorded: {e}"))
            }))
        });
        (seal, gate)
    }

    /// 503 with `Retry-After` for a store that did not answer (logged at
    /// most every 10 s: an outage fails every request).
    async fn store_failed(&self, client: &mut Client, req: &Request<'_>, e: StoreError) -> Outcome {
        static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        let now = std::time::Instant::now();
        let say = {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.map_or(true, |at| {
                now.duration_since(at) >= std::time::Duration::from_secs(10)
            });
            if due {
                *last = Some(now);
            }
            due
        };
        if say {
            tracing::warn!(error = %e, "session store unavailable; answered 503 (said at most every 10 s)");
        }
        let err = ProxyError::StoreUnavailable(e.to_string());
        self.answer(client, req, err, None).await
    }

    fn count_store(&self, op: &'static str, outcome: &'static str) {
        self.metrics
            .store_operations
            .get_or_create(&metrics::StoreOp { op, outcome })
            .inc();
    }
}
