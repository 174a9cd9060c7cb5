//! Stage 5: forward. The upstream call and everything done to bytes in transit.
//!
//! - `upstream`: idle connections per backend; one exchange (request out,
//!   response head in) driven by the request's own task.
//! - `headers`: the heads across the hop: hop-by-hop fields, `X-Forwarded-*`,
//!   `Host`, framing, the session id swap.
//! - `relay`: the response body to the client (re-framed, streamed, idle
//!   timeout, client watch).
//! - `sse`: the legacy transport's first-event scanner and endpoint rewrite.
//!
//! This stage never chooses a backend and never decides what a failure means
//! for a session; it reports what happened and `proxy` decides.

pub mod headers;
pub mod relay;
pub mod sse;
pub mod upstream;
