//! One backend replica: its identity, its life (`State`), and what it holds
//! (outstanding requests, open streams, idle connections, counters).
//!
//! A `Backend` lives as long as Tether knows it, across pool swaps: discovery,
//! reload and health change its flags, never its identity. The request path
//! reads the flags with one relaxed load each.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::uri::{Authority, Scheme};
use tokio::time::Instant;

/// A backend's life, as metrics, the admin API and logs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Takes new sessions.
    Active,
    /// Takes no new sessions; its sessions are still forwarded (drained by
    /// the operator or the config, or gone from discovery).
    Draining,
    /// Failing health checks: no new sessions; its sessions are still
    /// forwarded while it accepts connections.
    Unhealthy,
    /// Refusing connections, or failing checks for `health.down_after`: its
    /// sessions get the 404.
    Down,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Active,
        State::Draining,
        State::Unhealthy,
        State::Down,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Draining => "draining",
            State::Unhealthy => "unhealthy",
            State::Down => "down",
        }
    }
}

/// How Tether speaks to a backend (`protocol` in its config entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub enum Protocol {
    /// The hand-written HTTP/1.1 path, a socket per request in flight.
    #[default]
    #[serde(rename = "http/1.1")]
    Http1,
    /// HTTP/2: one multiplexed connection (`h2` over TLS by ALPN, h2c with
    /// prior knowledge over `http://`), reached through `h2up`'s bridge.
    #[serde(rename = "h2")]
    H2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1.1",
            Protocol::H2 => "h2",
        }
    }

    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "http/1.1" => Some(Protocol::Http1),
            "h2" => Some(Protocol::H2),
            _ => None,
        }
    }
}

/// What health checks (active and passive) last concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy,
    Down,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Healthy,
            1 => Health::Unhealthy,
            _ => Health::Down,
        }
    }
}

/// Why a backend drains; any of them is enough.
pub mod drain {
    /// `POST /backends/{id}/drain`.
    pub const ADMIN: u8 = 1;
    /// `drain = true` in the config.
    pub const CONFIG: u8 = 2;
    /// No longer in its discovery source's answer.
    pub const GONE: u8 = 4;
}

/// One upstream replica.
#[derive(Debug)]
pub struct Backend {
    /// The identity sealed into tokens: the URL's `host:port` as configured,
    /// or `ip:port` as discovered. Every Tether replica that shares a key
    /// must name a backend the same way. Shared, so metric labels clone it
    /// without allocating.
    pub id: Arc<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Where it came from: `static`, `dns://...`, `srv://...`, `file:...`.
    source: Mutex<Arc<str>>,
    outstanding: AtomicUsize,
    /// Open event streams (a subset of `outstanding`).
    streams: AtomicUsize,
    /// Requests ever started: the fleet sees from it whether a draining
    /// backend still serves anything.
    started: AtomicU64,
    health: AtomicU8,
    drain: AtomicU8,
    /// No longer in the pool: a connection checked in after the removal is
    /// closed instead of kept.
    retired: std::sync::atomic::AtomicBool,
    /// Consecutive failed calls (refused connections, 5xx) since the last success.
    passive_failures: AtomicU32,
    sessions_created: AtomicU64,
    sessions_orphaned: AtomicU64,
    /// `Protocol::H2` when true; a reload may change it (new connections
    /// follow it, idle ones are closed).
    h2: std::sync::atomic::AtomicBool,
    /// Its one shared HTTP/2 connection, when it is an `h2` backend.
    pub h2_link: Arc<crate::h2up::Link>,
    /// Its idle keep-alive connections, most recently used last
    /// (`forward::upstream` keeps them).
    pub idle: Mutex<Vec<IdleConn>>,
    /// Its `tether_requests_total` series, made on first use.
    pub requests: OnceLock<crate::metrics::StatusCounters>,
}

/// A kept-alive connection to a backend, waiting for a request.
#[derive(Debug)]
pub struct IdleConn {
    pub stream: crate::transport::Stream,
    pub since: Instant,
    /// When it stops being used: the idle timeout, or the backend's own.
    pub expires: Instant,
}

impl Backend {
    /// A backend at `authority` (a path, if any, is rejected by config validation).
    pub fn new(scheme: Scheme, authority: Authority) -> Self {
        Backend::with_source(scheme, authority, "static")
    }

    pub fn with_source(scheme: Scheme, authority: Authority, source: &str) -> Self {
        Backend {
            id: identity(&authority).into(),
            scheme,
            authority,
            source: Mutex::new(source.into()),
            outstanding: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            health: AtomicU8::new(0),
            drain: AtomicU8::new(0),
            retired: std::sync::atomic::AtomicBool::new(false),
            passive_failures: AtomicU32::new(0),
            sessions_created: AtomicU64::new(0),
            sessions_orphaned: AtomicU64::new(0),
            h2: std::sync::atomic::AtomicBool::new(false),
            h2_link: Arc::default(),
            idle: Mutex::new(Vec::new()),
            requests: OnceLock::new(),
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self.h2.load(Ordering::Relaxed) {
            true => Protocol::H2,
            false => Protocol::Http1,
        }
    }

    /// A changed protocol closes the idle connections (they speak the old
    /// one) and the shared HTTP/2 connection: new ones follow it.
    pub fn set_protocol(&self, protocol: Protocol) {
        let h2 = protocol == Protocol::H2;
        if self.h2.swap(h2, Ordering::Relaxed) != h2 {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.h2_link.forget();
        }
    }

    /// Requests and streams currently open to this backend.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Counts one request as outstanding until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        Outstanding(self.clone())
    }

    /// Counts an open event stream until the guard is dropped.
    pub fn track_stream(self: &Arc<Self>) -> StreamCount {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamCount(self.clone())
    }

    pub fn state(&self) -> State {
        match (self.health(), self.drain.load(Ordering::Relaxed)) {
            (Health::Down, _) => State::Down,
            (_, d) if d != 0 => State::Draining,
            (Health::Unhealthy, _) => State::Unhealthy,
            (Health::Healthy, _) => State::Active,
        }
    }

    /// Whether a new session may go here in normal times.
    pub fn takes_new(&self) -> bool {
        self.health.load(Ordering::Relaxed) == 0 && self.drain.load(Ordering::Relaxed) == 0
    }

    /// Whether a new session may go here when no backend of the pool is
    /// healthy: an unhealthy one still answers (perhaps only the probe is
    /// wrong); a drained or down one never takes one.
    pub fn takes_new_in_panic(&self) -> bool {
        self.drain.load(Ordering::Relaxed) == 0
            && self.health.load(Ordering::Relaxed) == Health::Unhealthy as u8
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Healthy becomes unhealthy, atomically; false if it was not healthy.
    pub fn healthy_to_unhealthy(&self) -> bool {
        self.health
            .compare_exchange(
                0,
                Health::Unhealthy as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Sets the health; returns the previous one.
    pub fn set_health(&self, health: Health) -> Health {
        Health::from_u8(self.health.swap(health as u8, Ordering::Relaxed))
    }

    /// The reasons it drains (`drain::*` bits).
    pub fn drain_flags(&self) -> u8 {
        self.drain.load(Ordering::Relaxed)
    }

    pub fn set_drain(&self, flag: u8, on: bool) {
        if on {
            self.drain.fetch_or(flag, Ordering::Relaxed);
        } else {
            self.drain.fetch_and(!flag, Ordering::Relaxed);
        }
    }

    pub fn source(&self) -> Arc<str> {
        self.source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_source(&self, source: &str) {
        let mut s = self.source.lock().unwrap_or_else(|e| e.into_inner());
        if &**s != source {
            *s = source.into();
        }
    }

    /// A call failed in a way that says the backend is sick (refused, 5xx,
    /// timed out); returns how many in a row.
    pub fn call_failed(&self) -> u32 {
        self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A call succeeded: the run of failures is over.
    pub fn call_succeeded(&self) {
        if self.passive_failures.load(Ordering::Relaxed) != 0 {
            self.passive_failures.store(0, Ordering::Relaxed);
        }
    }

    pub fn session_created(&self) {
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_orphaned(&self) {
        self.sessions_orphaned.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sessions_created(&self) -> u64 {
        self.sessions_created.load(Ordering::Relaxed)
    }

    pub fn sessions_orphaned(&self) -> u64 {
        self.sessions_orphaned.load(Ordering::Relaxed)
    }

    /// It left the pool: its idle connections close, and none is kept after.
    pub fn retire(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        self.retired.store(true, Ordering::Relaxed);
        idle.clear();
        self.h2_link.forget();
    }

    /// It is back in the pool.
    pub fn revive(&self) {
        self.retired.store(false, Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}

/// `host:port`, lower case, port 80 when none is given.
pub fn identity(authority: &Authority) -> String {
    match authority.port() {
        Some(_) => authority.as_str().to_ascii_lowercase(),
        None => format!("{}:80", authority.as_str().to_ascii_lowercase()),
    }
}

/// Keeps a request counted against its backend while alive.
#[derive(Debug)]
pub struct Outstanding(Arc<Backend>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps an event stream counted against its backend while alive.
#[derive(Debug)]
pub struct StreamCount(Arc<Backend>);

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}
