//! Where a request that begins something goes: its route (and the route's
//! checks of a 2026-07-28 request's headers), the pool, and how the route
//! steers the pick within it (soft affinity, a sticky cookie). A request
//! for an existing task is recognised here, before any route.

use std::sync::Arc;

use super::{Proxy, Request};
use crate::affinity::Affinity;
use crate::downstream::Client;
use crate::error::ProxyError;
use crate::http1::head::FieldKind;
use crate::modern::{header, validate};
use crate::pool::{Backend, Named};
use crate::route;

/// Where a request that begins something goes.
pub(super) enum Chosen {
    /// The pick of this pool; `creates`: the answer may be a new task.
    Pool {
        named: Arc<Named>,
        creates: bool,
        steer: Steer,
    },
    /// A request for an existing task (its sealed id): to its owner.
    Task { token: String },
}

/// The task a task request names: its sealed id, or the unknown-task error
/// for one that cannot be a token (a number, none).
fn task_of(message: &validate::Message<'_>) -> Result<Chosen, ProxyError> {
    match message.params.as_ref().and_then(|p| p.task_id.as_ref()) {
        Some(serde_json::Value::String(token)) => Ok(Chosen::Task {
            token: token.clone(),
        }),
        _ => Err(ProxyError::TaskNotFound),
    }
}

/// How a route steers the pick within its pool (opt-in, soft: a backend
/// that cannot take the request is simply not chosen).
#[derive(Default)]
pub(super) struct Steer {
    /// Soft affinity: the key's hash and the load factor.
    hash: Option<(u64, f64)>,
    /// Cookie stickiness: the cookie's name and the backend its value names.
    cookie: Option<(Box<str>, Option<String>)>,
}

impl Proxy {
    /// The pool for a request that begins something: its route's (with
    /// the route's checks of a 2026-07-28 request's headers).
    pub(super) fn choose(&self, client: &Client, req: &Request<'_>) -> Result<Chosen, ProxyError> {
        let buf = client.buf();
        let fields = &req.head.fields;
        let decoded = |kind| match fields.count(kind) {
            0 => Ok(None),
            1 => match fields.get(buf, kind).map(header::decode) {
                Some(Ok(v)) => Ok(Some(v)),
                Some(Err(header::BadValue::TooLarge)) => {
                    Err(ProxyError::Head(crate::http1::head::HeadError::TooLarge))
                }
                _ => Err(ProxyError::HeaderMismatch(
                    "an Mcp-* header is not valid =?base64?...?= text".into(),
                )),
            },
            _ => Err(ProxyError::HeaderMismatch(
                "an Mcp-* header is given twice".into(),
            )),
        };
        let method = decoded(FieldKind::McpMethod)?;
        let name = decoded(FieldKind::McpName)?;
        let target = req.target.bytes(buf);
        let input = route::Input {
            path: target.split(|&b| b == b'?').next().unwrap_or(target),
            host: match req.head.target_authority() {
                Some(authority) => Some(&buf[authority]),
                None => fields.get(buf, FieldKind::Host),
            },
            method: method.as_deref(),
            name: name.as_deref(),
        };
        let live = req.live;
        let body = req.body.bytes(buf);
        let headers = validate::Headers {
            version: fields
                .get(buf, FieldKind::ProtocolVersion)
                .map(<[u8]>::trim_ascii),
            method: input.method,
            name: input.name,
        };
        let task_method = |m: Option<&[u8]>| {
            m.and_then(|m| std::str::from_utf8(m).ok())
                .is_some_and(validate::is_task_method)
        };
        // A request for a task goes to its owner whatever the routes say,
        // and is always checked: its routing key is in the body.
        if req.modern && task_method(input.method) {
            let message = validate::check(&headers, body).map_err(ProxyError::HeaderMismatch)?;
            return task_of(&message);
        }
        let route = live.routes.choose(&input).ok_or(ProxyError::NoRoute)?;
        let mut creates = false;
        if req.modern {
            let message = match route.validate {
                true => validate::check(&headers, body).map_err(ProxyError::HeaderMismatch)?,
                false => serde_json::from_slice(body).unwrap_or_default(),
            };
            let method = message.method.as_deref();
            if method.is_some_and(validate::is_task_method) {
                return task_of(&message);
            }
            // Any tools/call may be answered with a task; the answer is only
            // rewritten if it names one (`respond::task_ids_possible`).
            creates = method == Some("tools/call");
        } else if route.validate && route.by_header {
            // The spec's SHOULD: who routes on these headers refuses a
            // request whose version predates their validation.
            return Err(ProxyError::HeaderMismatch(
                "this route matches on Mcp-Method/Mcp-Name, which need \
                 MCP-Protocol-Version 2026-07-28 or later"
                    .into(),
            ));
        }
        route.requests.inc();
        let named = live
            .pools
            .get(route.pool)
            .cloned()
            .ok_or(ProxyError::NoRoute)?;
        let steer = Steer {
            hash: route.soft.as_ref().and_then(|(_, factor)| {
                let key = route.soft_key(buf, fields)?;
                Some((crate::pool::ring::hash_key(key), *factor))
            }),
            cookie: route.cookie.as_ref().map(|name| {
                let owner = route::cookie(buf, fields, name.as_bytes())
                    .and_then(|v| live.affinity.open(v).ok())
                    .filter(|s| s.kind == crate::affinity::TokenKind::Cookie)
                    .map(|s| s.backend().to_owned());
                (name.clone(), owner)
            }),
        };
        Ok(Chosen::Pool {
            named,
            creates,
            steer,
        })
    }
}

impl Steer {
    /// The backend for the next try: the cookie's (if it can take it), the
    /// key's on the ring, or the pool's pick.
    pub(super) fn pick(
        &self,
        pool: &crate::pool::Pool,
        tried: &[Arc<Backend>],
    ) -> Option<crate::pool::Picked> {
        if let Some((_, Some(id))) = &self.cookie {
            let named = pool
                .get(id.as_bytes())
                .filter(|b| b.takes_new() && !tried.iter().any(|t| Arc::ptr_eq(t, b)));
            if let Some(b) = named {
                return Some(crate::pool::Picked {
                    backend: b.clone(),
                    panic: false,
                });
            }
        }
        match self.hash {
            Some((hash, factor)) => pool.pick_by_key(hash, factor, tried),
            None => pool.pick(tried),
        }
    }

    /// The `Set-Cookie` value naming `backend`, unless the client's cookie
    /// already does.
    pub(super) fn cookie_for(&self, affinity: &Affinity, backend: &Backend) -> Option<String> {
        let (name, current) = self.cookie.as_ref()?;
        if current.as_deref() == Some(&*backend.id) {
            return None;
        }
        let token =
            affinity
                .sealer()
                .seal(crate::affinity::TokenKind::Cookie, &backend.id, "", None)?;
        Some(format!("{name}={token}; Path=/; HttpOnly; SameSite=Lax"))
    }
}
