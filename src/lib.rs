//! Tether: a load balancer for MCP servers that keeps every session on the
//! replica that owns it, with no shared store.
//!
//! # Layout: a request's path
//!
//! 1. [`server`]: listeners ([`accept`]: failed accepts, the connection
//!    limit); [`conn`]: one client connection's keep-alive loop, over
//!    [`downstream`]: the client side (its request heads and bodies within
//!    their size and time limits and the global body budget, watching it,
//!    Tether's own answers); [`http1`]: the hand-written HTTP/1.1 parts
//!    (heads, chunked coding, buffer pool); [`transport`]: the byte streams
//!    beneath both sides (TCP, TLS, in-memory); [`http2`]: HTTP/2 from
//!    clients, each stream bridged in memory to the same path.
//!    [`h2up`]: HTTP/2 to backends configured `h2`, the mirror image: a pipe
//!    that speaks HTTP/1.1, bridged onto one shared h2 connection per backend.
//! 2. [`classify`]: what routing needs from the request head (a session
//!    reference in `Mcp-Session-Id` or a legacy `sessionId`/`session_id` query,
//!    found as servers find it; the protocol era).
//!    [`route`]: which pool a request that begins something (a session, a
//!    2026-07-28 request) goes to; [`modern`]: the 2026-07-28 revision
//!    (header validation, task affinity, the response cache).
//!    [`trust`]: who is calling (the principal a session is bound to),
//!    `Origin` at the edge, per-caller limits.
//! 3. [`affinity`]: sealed tokens (several keys, the first sealing); which
//!    backend owns a session, and whether this caller may use it; the id
//!    swap on the way in (restore) and on the way out (seal).
//! 4. [`pool`]: the backends and their life (active, draining, unhealthy,
//!    down), the fleet that discovery and reload change, health checks, and
//!    the choice for a request without a session.
//! 5. [`forward`]: upstream connections and the exchange, header rules, the
//!    relayed response body and the legacy `endpoint` event rewrite.
//! 6. [`admin`]: `/healthz`, `/readyz`, `/metrics`, the JSON API and the
//!    status page (`/`, polling `/status`).
//!
//! [`control`] is what operations do to a running Tether (reload, drain,
//! readiness), shared by the signals ([`server`]) and the admin API;
//! [`lifecycle`] the phases of a graceful shutdown.
//!
//! [`proxy`] strings the stages together for one request; [`error`] is the
//! one error a request can end in (an HTTP status and a JSON-RPC body);
//! [`panic`] keeps a bug in one connection from going silent; [`memory`]
//! gives back to the OS what a burst of connections leaves behind.
//! [`config`] is file -> flags -> validated [`config::Config`]; [`demo`] runs
//! demo replicas behind Tether. [`doctor`] is no stage: `tether doctor URL`,
//! a client that probes any MCP deployment (Tether or not) and judges it;
//! it never imports the request path. Design notes: `docs/design.md`.

#![deny(unsafe_code)] // one exception, measured: `memory::heap` (one glibc call)

mod accept;
mod admin;
pub mod affinity;
pub mod classify;
pub mod cli;
pub mod config;
mod conn;
pub mod control;
#[cfg(feature = "demo")]
pub mod demo;
pub mod doctor;
mod downstream;
mod error;
pub mod forward;
mod h2up;
pub mod http1;
mod http2;
mod lifecycle;
mod memory;
mod metrics;
mod modern;
mod panic;
mod pool;
mod proxy;
mod route;
mod server;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod transport;
pub mod trust;

pub use config::Config;
pub use server::{start, start_with, Running};
