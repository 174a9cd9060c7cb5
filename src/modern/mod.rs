//! The 2026-07-28 revision: no sessions, every request one POST that names
//! its method and target in headers (`Mcp-Method`, `Mcp-Name`) so that
//! intermediaries route without reading the body.
//!
//! - [`header`]: the `=?base64?...?=` form of header values, decoded before
//!   anything looks at them, and the bound on their size;
//! - [`validate`]: the headers checked against the body (the spec's
//!   HeaderMismatch), so a route chosen by header is the route the body
//!   asked for;
//! - [`cache`]: the opt-in shared cache of results servers mark `"public"`;
//! - [`task`]: task affinity (SEP-2663): a task lives on the replica that
//!   created it, so its id is sealed with its owner like a session id.
//!
//! This stage never picks a backend; it tells `proxy` what a modern request
//! is and whether it may go on.

pub mod cache;
pub mod header;
pub mod task;
pub mod validate;

/// `_meta` key of the protocol version a modern request's body carries.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
