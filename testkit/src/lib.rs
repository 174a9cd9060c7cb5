//! Fake MCP replicas and tiny MCP clients over real sockets, for Tether's integration tests and
//! for `tether demo`.
//!
//! A [`Replica`] is a small MCP server on `127.0.0.1:0` that speaks every HTTP transport a load
//! balancer meets: Streamable HTTP at `/mcp` (stateful with `Mcp-Session-Id`, or stateless;
//! JSON or SSE answers) and legacy HTTP+SSE at `/sse` + `/messages`. It records every request,
//! can be slowed down, made to fail, or killed, and counts clients that went away mid-response.
//! Its tools (`whoami`, `echo`, `sleep`) let a test see which replica answered.
//!
//! The clients ([`StreamableClient`], [`LegacyClient`]) behave like the SDK clients where a proxy
//! could tell the difference, and report every failure as a [`ClientError`].
//!
//! # Layout
//!
//! - `replica.rs`: builder, handle, shared state, accept loop, kill.
//! - `service.rs`: per-request entry (record, delay, failure, routing) and response helpers.
//! - `streamable.rs`: Streamable HTTP at `/mcp`: sessions, POST, GET stream, DELETE.
//! - `legacy.rs`: HTTP+SSE: the endpoint event and the messages endpoint.
//! - `rpc.rs`: the JSON-RPC methods and tools behind both transports.
//! - `sse.rs`: SSE wire format: the channel-fed response body and the client-side parser.
//! - `client/`: the test clients and their HTTP/1.1 transport.
//! - `raw.rs`: a hand-written HTTP/1.1 backend for fault injection, and raw-socket client helpers.
//!
//! Nothing here panics on network input; the replica answers bad input with a 4xx, the clients
//! return a [`ClientError`].

#![forbid(unsafe_code)]

mod client;
mod legacy;
pub mod raw;
mod replica;
mod rpc;
mod service;
mod sse;
mod streamable;

pub use client::{send_raw, ClientError, EventStream, LegacyClient, RawResponse, StreamableClient};
pub use replica::{Replica, ReplicaBuilder, SeenRequest};
pub use sse::SseEvent;
