//! Every metric Tether exports, in one place. Documented in `docs/metrics.md`;
//! add a line there when you add one here.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A backend's identity as a label value: shared, so a label costs a
/// reference count, not an allocation, on every request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `backend` label of requests Tether answered itself, without a backend.
pub const NO_BACKEND: &str = "none";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendStatus {
    pub backend: Name,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendTransport {
    pub backend: Name,
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendKind {
    pub backend: Name,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoutePool {
    pub route: String,
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// A pool and what became of a failover in it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolOutcome {
    pub pool: Name,
    pub outcome: &'static str,
}

/// A session store operation and how it went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOp {
    pub op: &'static str,
    pub outcome: &'static str,
}

/// A session key, by its public id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabel {
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Version {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendState {
    pub backend: Name,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Source {
    pub source: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FirstEventResult {
    pub result: &'static str,
}

/// `tether_requests_total` of one backend, by status: found without building
/// a label and hashing it on every request (it showed in the profile).
pub struct StatusCounters {
    family: Family<BackendStatus, Counter>,
    backend: Name,
    seen: std::sync::RwLock<Vec<(u16, Counter)>>,
}

impl StatusCounters {
    pub fn new(family: &Family<BackendStatus, Counter>, backend: &Arc<str>) -> Self {
        StatusCounters {
            family: family.clone(),
            backend: Name(backend.clone()),
            seen: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// The statuses counted so far.
    pub fn statuses(&self) -> Vec<u16> {
        let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
        seen.iter().map(|(s, _)| *s).collect()
    }

    pub fn inc(&self, status: u16) {
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, counter)) = seen.iter().find(|(s, _)| *s == status) {
                counter.inc();
                return;
            }
        }
        let label = BackendStatus {
            backend: self.backend.clone(),
            status,
        };
        let counter = self.family.get_or_create(&label).clone();
        counter.inc();
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if !seen.iter().any(|(s, _)| *s == status) {
            seen.push((status, counter));
        }
    }
}

impl std::fmt::Debug for StatusCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCounters")
            .field("backend", &self.backend)
            .finish()
    }
}

/// The proxy's metrics. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    pub requests: Family<BackendStatus, Counter>,
    pub sessions_created: Family<BackendTransport, Counter>,
    pub sessions_deleted: Family<BackendLabel, Counter>,
    pub sessions_orphaned: Family<BackendLabel, Counter>,
    pub invalid_tokens: Family<Reason, Counter>,
    pub active_streams: Family<BackendLabel, Gauge>,
    pub upstream_errors: Family<BackendKind, Counter>,
    pub rejected_requests: Family<Reason, Counter>,
    pub connection_errors: Family<Kind, Counter>,
    pub sse_first_events: Family<FirstEventResult, Counter>,
    pub stream_idle_timeouts: Family<BackendLabel, Counter>,
    pub invalid_upstream_session_ids: Family<BackendLabel, Counter>,
    pub connections: Gauge,
    pub held_body_bytes: Gauge,
    pub body_budget_waits: Counter,
    pub internal_errors: Counter,
    pub accept_errors: Family<Kind, Counter>,
    pub backend_state: Family<BackendState, Gauge>,
    pub health_checks: Family<BackendKind, Counter>,
    pub health_transitions: Family<BackendState, Counter>,
    pub panic_picks: Counter,
    pub discovery_errors: Family<Source, Counter>,
    pub discovery_backends: Family<Source, Gauge>,
    pub reloads: Family<Outcome, Counter>,
    pub connections_limit: Gauge,
    pub connection_limit_waits: Counter,
    pub shutting_down: Gauge,
    pub route_requests: Family<RoutePool, Counter>,
    pub tasks_created: Family<BackendLabel, Counter>,
    pub tasks_orphaned: Family<BackendLabel, Counter>,
    pub modern_requests: Counter,
    pub cache_lookups: Family<FirstEventResult, Counter>,
    pub tls_handshakes: Family<Version, Counter>,
    pub tls_handshake_failures: Family<Reason, Counter>,
    pub tls_certificate_reloads: Family<Outcome, Counter>,
    pub http2_connections: Counter,
    pub http2_streams: Counter,
    pub http2_resets: Counter,
    pub token_opens: Family<KeyLabel, Counter>,
    pub binding_rejections: Family<Reason, Counter>,
    pub store_operations: Family<StoreOp, Counter>,
    pub unbound_sessions: Counter,
    pub session_failovers: Family<PoolOutcome, Counter>,
}

impl Metrics {
    /// Registers every metric under the `tether_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tether");
        r.register(
            "requests",
            "Requests answered, by backend (\"none\" when Tether answered itself) and HTTP status",
            self.requests.clone(),
        );
        r.register(
            "sessions_created",
            "Sessions started, by owning backend and transport (streamable or legacy)",
            self.sessions_created.clone(),
        );
        r.register(
            "sessions_deleted",
            "Streamable HTTP sessions ended by a client DELETE the backend accepted",
            self.sessions_deleted.clone(),
        );
        r.register(
            "sessions_orphaned",
            "Requests for a session whose owning backend is gone (answered 404)",
            self.sessions_orphaned.clone(),
        );
        r.register(
            "invalid_tokens",
            "Session references that did not open (answered 404 without a backend)",
            self.invalid_tokens.clone(),
        );
        r.register(
            "token_opens",
            "Session, task and cookie tokens opened, by the id of the key that opened them",
            self.token_opens.clone(),
        );
        r.register(
            "session_failovers",
            "Requests of a session whose owner was gone, in a pool with failover = \"reinitialize\", by pool and outcome (reinitialized, moved, no_init, not_replayable, failed)",
            self.session_failovers.clone(),
        );
        r.register(
            "session_binding_rejections",
            "Requests refused (404, no backend) because their session is bound to another caller, by reason (mismatch, missing)",
            self.binding_rejections.clone(),
        );
        r.register(
            "sessions_unbound",
            "Sessions begun with no principal while [sessions] bind is set: bound to no one",
            self.unbound_sessions.clone(),
        );
        r.register(
            "session_store_operations",
            "Session store operations (op: get, put, remove; outcome: hit, miss, ok, error)",
            self.store_operations.clone(),
        );
        r.register(
            "active_streams",
            "Event streams (SSE) open through Tether, by backend",
            self.active_streams.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed upstream calls, by backend and kind (refused, connect, tls, timeout, io)",
            self.upstream_errors.clone(),
        );
        r.register(
            "rejected_requests",
            "Requests refused before routing, by reason",
            self.rejected_requests.clone(),
        );
        r.register(
            "connection_errors",
            "Client connections ended by an error, by kind (header_timeout, header_too_large, parse, io, proxy_protocol, http2, rapid_reset)",
            self.connection_errors.clone(),
        );
        r.register(
            "sse_first_events",
            "Outcome of scanning the first event of session-less GET event streams",
            self.sse_first_events.clone(),
        );
        r.register(
            "stream_idle_timeouts",
            "Upstream bodies ended because nothing arrived within the idle timeout",
            self.stream_idle_timeouts.clone(),
        );
        r.register(
            "client_connections",
            "Client connections currently open",
            self.connections.clone(),
        );
        r.register(
            "invalid_upstream_session_ids",
            "Mcp-Session-Id values from a backend that are not session ids (empty, not visible ASCII): passed unsealed",
            self.invalid_upstream_session_ids.clone(),
        );
        r.register(
            "held_body_bytes",
            "Request body bytes held in memory from the global budget (limits.max_held_body_bytes)",
            self.held_body_bytes.clone(),
        );
        r.register(
            "body_budget_waits",
            "Request bodies that had to wait for the global body budget",
            self.body_budget_waits.clone(),
        );
        r.register(
            "internal_errors",
            "Panics caught at a connection's task boundary (bugs): answered 502 when possible",
            self.internal_errors.clone(),
        );
        r.register(
            "accept_errors",
            "Failed accepts on a listener, by kind (emfile, enfile, other)",
            self.accept_errors.clone(),
        );
        r.register(
            "backend_state",
            "1 for the state each known backend is in (active, draining, unhealthy, down), else 0",
            self.backend_state.clone(),
        );
        r.register(
            "health_checks",
            "Active health probes, by backend and result (ok, failed, timeout, refused)",
            self.health_checks.clone(),
        );
        r.register(
            "health_transitions",
            "Health changes, by backend and the health entered (healthy, unhealthy, down)",
            self.health_transitions.clone(),
        );
        r.register(
            "panic_picks",
            "New sessions given to an unhealthy backend because none was healthy",
            self.panic_picks.clone(),
        );
        r.register(
            "discovery_errors",
            "Failed discovery lookups, by source (the last known set is kept)",
            self.discovery_errors.clone(),
        );
        r.register(
            "discovery_backends",
            "Backends in each discovery source's last good answer",
            self.discovery_backends.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, by outcome (ok, rejected)",
            self.reloads.clone(),
        );
        r.register(
            "max_connections",
            "The client connection limit in force (limits.max_connections; 0: none)",
            self.connections_limit.clone(),
        );
        r.register(
            "connection_limit_waits",
            "Times the proxy listener stopped accepting because limits.max_connections were open",
            self.connection_limit_waits.clone(),
        );
        r.register(
            "shutting_down",
            "1 once a shutdown has begun (readiness fails), else 0",
            self.shutting_down.clone(),
        );
        r.register(
            "route_requests",
            "Requests that began something (not in a session or task), by route (its index in [[routes]]) and pool",
            self.route_requests.clone(),
        );
        r.register(
            "tasks_created",
            "Tasks (SEP-2663) created, by owning backend: their ids were sealed",
            self.tasks_created.clone(),
        );
        r.register(
            "tasks_orphaned",
            "Task requests whose owning backend is gone (answered with the unknown-task error)",
            self.tasks_orphaned.clone(),
        );
        r.register(
            "cache_lookups",
            "Response cache ([cache]) lookups of cacheable 2026-07-28 requests, by result (hit, miss, stored)",
            self.cache_lookups.clone(),
        );
        r.register(
            "modern_requests",
            "Requests of the 2026-07-28 revision or later (no sessions; routed by header)",
            self.modern_requests.clone(),
        );
        r.register(
            "tls_handshakes",
            "Client TLS handshakes completed, by protocol version (1.2, 1.3)",
            self.tls_handshakes.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "Client TLS handshakes that failed, by reason (timeout, eof, not_tls, protocol, version, no_cipher, alpn, alert, incompatible, io, other)",
            self.tls_handshake_failures.clone(),
        );
        r.register(
            "tls_certificate_reloads",
            "Certificate files loaded again after they changed on disk, by outcome (ok, rejected)",
            self.tls_certificate_reloads.clone(),
        );
        r.register(
            "http2_connections",
            "Client connections that spoke HTTP/2 (ALPN h2, or h2c prior knowledge)",
            self.http2_connections.clone(),
        );
        r.register(
            "http2_streams",
            "HTTP/2 streams (requests) accepted from clients",
            self.http2_streams.clone(),
        );
        r.register(
            "http2_resets",
            "HTTP/2 streams the client reset (RST_STREAM) before their answer ended: each cancels its upstream request",
            self.http2_resets.clone(),
        );
    }

    /// Drops every series of a backend Tether no longer remembers (so a
    /// fleet whose addresses change on every deploy does not grow the
    /// metrics for ever). `statuses`: those its `requests` series counted.
    pub fn forget_backend(&self, backend: &Arc<str>, statuses: &[u16]) {
        let name = || Name(backend.clone());
        self.tasks_created.remove(&BackendLabel { backend: name() });
        self.tasks_orphaned
            .remove(&BackendLabel { backend: name() });
        for status in statuses {
            self.requests.remove(&BackendStatus {
                backend: name(),
                status: *status,
            });
        }
        for transport in ["streamable", "legacy"] {
            self.sessions_created.remove(&BackendTransport {
                backend: name(),
                transport,
            });
        }
        for kind in ["refused", "connect", "tls", "timeout", "io", "ok", "failed"] {
            let label = BackendKind {
                backend: name(),
                kind,
            };
            self.upstream_errors.remove(&label);
            self.health_checks.remove(&label);
        }
        for state in ["healthy", "unhealthy", "down", "active", "draining"] {
            let label = BackendState {
                backend: name(),
                state,
            };
            self.health_transitions.remove(&label);
            self.backend_state.remove(&label);
        }
        let label = Metrics::backend(backend);
        self.sessions_deleted.remove(&label);
        self.sessions_orphaned.remove(&label);
        self.active_streams.remove(&label);
        self.stream_idle_timeouts.remove(&label);
        self.invalid_upstream_session_ids.remove(&label);
    }

    pub fn backend(backend: &Arc<str>) -> BackendLabel {
        BackendLabel {
            backend: Name(backend.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_count_into_the_family() {
        let metrics = Metrics::default();
        let backend: Arc<str> = "10.0.0.1:3000".into();
        let counters = StatusCounters::new(&metrics.requests, &backend);
        for status in [200, 200, 404, 200] {
            counters.inc(status);
        }
        let get = |status| {
            let label = BackendStatus {
                backend: Name(backend.clone()),
                status,
            };
            metrics.requests.get_or_create(&label).get()
        };
        assert_eq!((get(200), get(404), get(500)), (3, 1, 0));
    }
}
