//! `GET /status`: everything the status page shows, in one answer the page
//! polls: pools with their backends, totals, whether actions need a token,
//! and the rate history (`history`). Fields documented in `docs/admin.md`.

use serde_json::json;
use tokio::time::Instant;

use super::history::{self, History, Totals};
use crate::control::{backend_json, Control};
use crate::pool::State;

pub(super) fn status(control: &Control, history: &History, now: Totals) -> serde_json::Value {
    let config = control.config();
    let mut states = serde_json::Map::new();
    for s in State::ALL {
        states.insert(s.as_str().into(), 0.into());
    }
    let (mut backends, mut outstanding, mut streams) = (0usize, 0usize, 0usize);
    let (mut created, mut orphaned) = (0u64, 0u64);
    let pools: Vec<_> = control
        .shown_pools()
        .iter()
        .map(|named| {
            let pool = named.fleet.pool();
            let list: Vec<_> = pool
                .backends()
                .iter()
                .map(|b| {
                    backends += 1;
                    outstanding += b.outstanding();
                    streams += b.streams();
                    created += b.sessions_created();
                    orphaned += b.sessions_orphaned();
                    if let Some(n) = states.get_mut(b.state().as_str()) {
                        *n = (n.as_u64().unwrap_or(0) + 1).into();
                    }
                    backend_json(b, &named.name)
                })
                .collect();
            let configured = config.pool(&named.name);
            json!({
                "name": &*named.name,
                "configured": configured.is_some(),
                "balance": configured.map(|p| p.balance),
                "health": configured.map(|p| p.health.check),
                "backends": list,
            })
        })
        .collect();
    let ready = control.ready();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": ready.is_ok(),
        "not_ready_because": ready.err(),
        "actions_need_token": control.admin_token().is_some(),
        "pools": pools,
        "totals": {
            "backends": backends,
            "states": states,
            "outstanding": outstanding,
            "streams": streams,
            "sessions_created": created,
            "sessions_orphaned": orphaned,
        },
        "counters": {
            "requests": now.requests,
            "errors": now.errors,
            "sessions_created": now.sessions_created,
            "sessions_orphaned": now.sessions_orphaned,
            "invalid_tokens": now.invalid_tokens,
            "streams": now.streams,
        },
        "history": {
            "interval_seconds": history::INTERVAL.as_secs(),
            "window_seconds": history::WINDOW.as_secs(),
            "samples": history.len(),
            "points": history.points(Instant::now(), now),
        },
    })
}
