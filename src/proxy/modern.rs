//! The 2026-07-28 parts of a request's way: a task request to its task's
//! owner (`modern::task`), and answers from the response cache.

use std::sync::Arc;

use super::{Changes, Live, Outcome, Proxy, Request, ResponseChanges};
use crate::affinity::Unroutable;
use crate::downstream::Client;
use crate::error::ProxyError;
use crate::http1::head::FieldKind;
use crate::metrics::{self, Metrics};
use crate::pool::{find_owner, State};

impl Proxy {
    /// A request for an existing task: the owner its id names, with the
    /// server's id put back; or the unknown-task error, with no backend
    /// contacted, when the id does not open or its owner is gone.
    pub(super) async fn forward_task(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        token: String,
    ) -> Outcome {
        let live = req.live;
        let sealed = match live.affinity.open(token.as_bytes()) {
            Ok(sealed) if sealed.kind == crate::affinity::TokenKind::Task => sealed,
            Ok(_) => {
                return self
                    .task_unknown(client, req, Some("wrong_transport"), None)
                    .await
            }
            Err(e) => {
                let why = Unroutable::Invalid(e).invalid_reason();
                return self.task_unknown(client, req, why, None).await;
            }
        };
        // A task begun by one caller is no one else's (as a session).
        if let Err(binding) = live.affinity.check_caller(&sealed, req.caller()) {
            self.count_binding(binding);
            return self
                .answer(client, req, ProxyError::TaskNotFound, None)
                .await;
        }
        let Some((named, backend)) = find_owner(&live.pools, sealed.backend_bytes())
            .filter(|(_, b)| b.state() != State::Down)
        else {
            return self
                .task_unknown(client, req, None, Some(sealed.backend()))
                .await;
        };
        let server_id = sealed.upstream_id();
        let Some(body) = crate::modern::task::restore_body(req.body.bytes(client.buf()), server_id)
        else {
            return self
                .task_unknown(client, req, Some("malformed"), None)
                .await;
        };
        let fleet = &named.fleet;
        let outstanding = backend.track();
        let has_name = req.head.fields.count(FieldKind::McpName) > 0;
        let name = has_name.then(|| crate::modern::header::encode(server_id));
        let changes = Changes {
            mcp_name: name.as_deref().map(str::as_bytes),
            body: Some(&body),
            ..Changes::default()
        };
        let tasks = ResponseChanges {
            echo: Some((server_id.to_owned(), token)),
            ..ResponseChanges::default()
        };
        let called = self
            .call_owner(
                client,
                req,
                (&backend, fleet),
                outstanding,
                changes,
                (None, tasks),
            )
            .await;
        match called {
            Some(outcome) => outcome,
            None => {
                self.task_unknown(client, req, None, Some(&backend.id))
                    .await
            }
        }
    }

    /// The unknown-task error, counted: `invalid` is why the id did not
    /// open; `owner`, the backend that is gone.
    pub(super) async fn task_unknown(
        &self,
        client: &mut Client,
        req: &Request<'_>,
        invalid: Option<&'static str>,
        owner: Option<&str>,
    ) -> Outcome {
        match owner {
            Some(owner) => {
                tracing::info!(backend = %owner, "task's owner is gone; answered the unknown-task error");
                self.metrics
                    .tasks_orphaned
                    .get_or_create(&Metrics::backend(&Arc::<str>::from(owner)))
                    .inc();
            }
            None => self.count_invalid(invalid.unwrap_or("invalid")),
        }
        self.answer(client, req, ProxyError::TaskNotFound, None)
            .await
    }

    pub(super) fn count_cache(&self, result: &'static str) {
        self.metrics
            .cache_lookups
            .get_or_create(&metrics::FirstEventResult { result })
            .inc();
    }

    /// Stores a backend's answer in the response cache, if it may be shared.
    pub(super) fn cache_store(&self, live: &Live, key: String, answer: &[u8]) {
        if let Some(cache) = &live.cache {
            if cache.store(key, answer, std::time::Instant::now()) {
                self.count_cache("stored");
            }
        }
    }

    /// A cached answer: 200, JSON, no backend contacted.
    pub(super) async fn answer_cached(
        &self,
        client: &mut Client,
        req: &Request<'_>,
        answer: &[u8],
    ) -> Outcome {
        client.consume(req.consumed);
        if let Some(line) = client.access() {
            line.status = 200;
            line.bytes = answer.len() as u64;
        }
        self.none.inc(200);
        let close = !req.head.keep_alive || client.half_closed() || client.lifecycle().closing();
        let keep_alive = client
            .send_own(http::StatusCode::OK, answer, close, req.head_request)
            .await
            .is_ok()
            && !close;
        Outcome::Answered { keep_alive }
    }
}
