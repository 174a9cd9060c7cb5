//! HTTP/1.1 on the proxy path, by hand.
//!
//! Why not hyper here (it still serves the admin listener and the test kit):
//! a proxy relays heads it must change in two fields (`Mcp-Session-Id`,
//! hop-by-hop) and bodies it must not change at all. Parsing into a
//! `HeaderMap` and encoding again on both hops, with a task and a channel per
//! upstream connection, was most of Tether's CPU per request, and hyper's
//! per-connection buffers (8 KiB each way, kept while a stream is idle) were
//! most of its memory per held SSE stream (`docs/benchmarks.md`). Here a head
//! is parsed once with `httparse` into ranges of the bytes that arrived, the
//! outgoing head is those bytes with the changed fields written in their
//! place, and buffers are taken from a per-thread pool only while bytes are in
//! flight, so an idle held stream holds none.
//!
//! - `head`: request and response heads, their framing (RFC 9112 §6), the
//!   fields a proxy must act on.
//! - `chunked`: the chunked transfer coding, incremental.
//! - `buf`: the per-thread buffer pool.
//! - `answer`: a whole small body, for Tether's own requests to a backend.

pub mod answer;
pub mod buf;
pub mod chunked;
pub mod head;
