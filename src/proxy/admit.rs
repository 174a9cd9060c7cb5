//! `[limits.per_caller]` on a request's way: who the caller is, whether
//! it may go on, and how long it counts as in progress.

use std::sync::Arc;

use super::{Outcome, Proxy, Request};
use crate::classify;
use crate::downstream::Client;
use crate::error::ProxyError;
use crate::trust::{Bind, Caller, CallerLimits};

impl Proxy {
    /// The request, if its caller is within the limits; else 429.
    pub(super) async fn limited(
        self: &Arc<Self>,
        client: &mut Client,
        req: &Request<'_>,
        limits: &Arc<CallerLimits>,
        session: Result<Option<classify::SessionRef>, classify::Ambiguous>,
    ) -> Outcome {
        let caller = caller(req, client);
        let guard = match limits.admit(caller, std::time::Instant::now()) {
            Ok(guard) => guard,
            Err(limited) => {
                let err = ProxyError::CallerLimited(limited);
                return self.answer(client, req, err, None).await;
            }
        };
        let mut outcome = self.dispatch(client, req, session).await;
        // A POST is in progress until its answer's body has been relayed
        // (an SSE answer is the server still working); a GET stream is not
        // work in progress, and is counted only until its head.
        if let (Outcome::Relay(pending), true) = (&mut outcome, req.post) {
            pending.hold(guard);
        }
        outcome
    }
}

/// Who a limit counts: the bound principal, else the client's address. A
/// JWT's claims are not verified, so anyone can name alice's subject: there
/// the principal counts together with the address, so a forger elsewhere
/// cannot spend alice's budget. An identity header (set by an auth proxy)
/// and a whole credential name their caller alone.
fn caller(req: &Request<'_>, client: &Client) -> Caller {
    let ip = client.peer().ip();
    let Some(principal) = &req.principal else {
        return Caller::Addr(ip);
    };
    let affinity = &req.live.affinity;
    match &req.live.bind {
        Bind::Jwt(_) => {
            let mut keyed = principal.clone();
            keyed.extend_from_slice(b"\0@");
            keyed.extend_from_slice(ip.to_string().as_bytes());
            Caller::Principal(affinity.principal_tag(&keyed))
        }
        _ => Caller::Principal(affinity.principal_tag(principal)),
    }
}
