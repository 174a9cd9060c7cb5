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
        let target = match session.carrier {
            Carrier::Query { .. } => req.target.as_str(client.buf()),
            Carrier::Header => "",
        };
        let token = session.token_bytes(client.buf());
        let affinity = &req.live.affinity;
        let mut home = None;
        let find = |id: &[u8]| {
            let (named, backend) = find_owner(&req.live.pools, id)?;
            home = Some(named.clone());
            Some(backend)
        };
        let principal = req.caller();
        let resolved = affinity
            .resolve(token, &session, principal, find)
            .and_then(|owned| {
                if owned.backend.state() == State::Down {
                    return Err(Unroutable::OwnerGone(owned.backend.id.to_string()));
                }
                let restored = affinity.restore(target, &session, &owned)?;
                Ok((owned, restored))
            });
        let (owned, restored, home) = match (resolved, home) {
            (Ok((owned, restored)), Some(home)) => (owned, restored, home),
            (Err(why), _) => return self.unroutable(client, req, why).await,
            (Ok((owned, _)), None) => {
                let why = Unroutable::OwnerGone(owned.backend.id.to_string());
                return self.unroutable(client, req, why).await;
            }
        };
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
        let session = Some((&owned, &session));
        let called = self
            .call_owner(
                client,
                req,
                (&backend, fleet),
                outstanding,
                changes,
                (session, ResponseChanges::default()),
            )
            .await;
        match called {
            Some(outcome) => outcome,
            // The owner is down: its sessions are gone with it.
            None => {
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
