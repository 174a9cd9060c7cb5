//! A request for something that lives on one backend (a session, a task):
//! to that owner, with the server's own id put back, or the answer for an
//! owner that is gone. Never to another backend.

use std::sync::Arc;

use super::{note_response, CallError, Changes, Outcome, Proxy, Request, ResponseChanges};
use crate::affinity::{Restored, Unroutable};
use crate::classify::{Carrier, SessionRef};
use crate::downstream::Client;
use crate::error::{ProxyError, UpstreamFailure};
use crate::http1::buf;
use crate::pool::{find_owner, Backend, Fleet, State};

impl Proxy {
    /// A request in a session: its owner, or 404.
    pub(super) async fn forward_owned(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        session: SessionRef,
    ) -> Outcome {
        let located = {
            // With a store, the client's id is the server's own: the store
            // holds the entry a token would be. (In a block: the entry is
            // not kept across the call below.)
            let entry = match &req.live.store {
                Some(store) => match Box::pin(self.lookup(client, req, store, &session)).await {
                    Ok(entry) => Some(entry),
                    Err(answered) => return answered,
                },
                None => None,
            };
            locate(client, req, &session, entry.as_deref())
        };
        let (owned, restored, home) = match located {
            Ok(located) => located,
            Err(why @ Unroutable::OwnerGone(_)) => {
                if let Some(outcome) = Box::pin(self.fail_over(client, req, &session)).await {
                    return outcome;
                }
                return self.unroutable(client, req, why).await;
            }
            Err(why) => return self.unroutable(client, req, why).await,
        };
        // A session this instance moved while its owner was down stays on
        // the new one (a client that kept the old token still sends it).
        if owned.sealed().init().is_some() && self.moved.any() {
            if let Some(outcome) = Box::pin(self.to_moved_first(client, req, &session)).await {
                return outcome;
            }
        }
        let fleet = &home.fleet;
        let backend = owned.backend.clone();
        let outstanding = backend.track();
        let changes = match &restored {
            Restored::Header => Changes {
                session_id: Some(owned.upstream_id_bytes()),
                ..Changes::default()
            },
            Restored::Target(target) => Changes {
                target: Some(target.as_bytes()),
                ..Changes::default()
            },
        };
        let in_session = Some((&owned, &session));
        let called = self
            .call_owner(
                client,
                req,
                (&backend, fleet),
                outstanding,
                changes,
                (in_session, ResponseChanges::default()),
            )
            .await;
        match called {
            Some(outcome) => outcome,
            // The owner is down: its sessions are gone with it.
            None => {
                if let Some(outcome) = Box::pin(self.fail_over(client, req, &session)).await {
                    return outcome;
                }
                let why = Unroutable::OwnerGone(backend.id.to_string());
                self.unroutable(client, req, why).await
            }
        }
    }

    /// Sends the request, with `changes`, to the owner of a session or a
    /// task and answers with what comes back; `None` when the owner refused
    /// the connection (it is down: the caller answers for it).
    pub(super) async fn call_owner(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        (backend, fleet): (&Arc<Backend>, &Arc<Fleet>),
        outstanding: crate::pool::Outstanding,
        changes: Changes<'_>,
        answer: (
            Option<(&crate::affinity::Owned, &SessionRef)>,
            ResponseChanges,
        ),
    ) -> Option<Outcome> {
        let request = self.upstream_request(client, req, backend, changes);
        let result = self.call(client, req, backend, &request).await;
        buf::give(request);
        match result {
            Ok(resp) => {
                note_response(client, resp.head.status, backend);
                if let Some(store) = &req.live.store {
                    let owned = answer.0.map(|(owned, _)| owned);
                    let target = req.target.bytes(client.buf());
                    let kept = self.keep(store, (req, target), &resp, backend, owned);
                    if let Err(err) = Box::pin(kept).await {
                        return Some(self.answer(client, req, err, Some(backend)).await);
                    }
                }
                // The answer's head may carry the client's token, still in its buffer.
                let outcome =
                    self.respond(client, req, resp, (backend, fleet), outstanding, answer);
                client.consume(req.consumed);
                Some(outcome)
            }
            Err(CallError::ClientGone) => Some(Outcome::CLOSE),
            Err(CallError::Upstream(e)) => {
                self.count_upstream_error(backend, fleet, e.failure);
                if e.failure == UpstreamFailure::Refused {
                    return None;
                }
                tracing::warn!(backend = %backend.id, failure = e.failure.as_str(), detail = %e.detail, "upstream call failed");
                let err = ProxyError::Upstream {
                    backend: backend.id.to_string(),
                    failure: e.failure,
                    detail: e.detail,
                };
                Some(self.answer(client, req, err, Some(backend)).await)
            }
        }
    }
}

/// The owner of `session` (from the token the client carries, or the store's
/// `entry` for its id), checked for this caller, and the server's id put back.
fn locate(
    client: &Client,
    req: &Request<'_>,
    session: &SessionRef,
    entry: Option<&str>,
) -> Result<(crate::affinity::Owned, Restored, Arc<crate::pool::Named>), Unroutable> {
    let target = match session.carrier {
        Carrier::Query { .. } => req.target.as_str(client.buf()),
        Carrier::Header => "",
    };
    let token = match entry {
        Some(entry) => entry.as_bytes(),
        None => session.token_bytes(client.buf()),
    };
    let affinity = &req.live.affinity;
    let mut home = None;
    let find = |id: &[u8]| {
        let (named, backend) = find_owner(&req.live.pools, id)?;
        home = Some(named.clone());
        Some(backend)
    };
    let owned = affinity.resolve(token, session, req.caller(), find)?;
    // An entry is only good for the id it was stored under.
    if entry.is_some()
        && owned.upstream_id_bytes() != super::stored::stored_id(req, client.buf(), session)
    {
        return Err(Unroutable::Invalid(crate::affinity::TokenError::Malformed));
    }
    let gone = || Unroutable::OwnerGone(owned.backend.id.to_string());
    if owned.backend.state() == State::Down {
        return Err(gone());
    }
    let home = home.ok_or_else(gone)?;
    let restored = affinity.restore(target, session, &owned)?;
    Ok((owned, restored, home))
}
