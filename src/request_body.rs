//! Stage 1, second half: the client's request body, within the size and time limits.
//!
//! MCP request bodies are single JSON-RPC messages, so Tether holds each one
//! whole before forwarding (why: `docs/config.md`). A body over the limit is
//! read to its end and thrown away before the 413 is sent, within the body
//! timeout and `DRAIN_CAP` bytes: closing a socket with unread data makes the
//! kernel send a reset, which destroys the 413 before the client reads it
//! (nginx's "lingering close" exists for the same reason). Past either bound
//! the connection is dropped.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, EXPECT};
use http::request::Parts;
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::error::ProxyError;

/// Most bytes read and discarded from a body that is already over the limit.
pub const DRAIN_CAP: u64 = 64 << 20;

/// Reads `body` whole: at most `limit` bytes, within `timeout`.
pub async fn read(
    parts: &Parts,
    mut body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ProxyError> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = ProxyError::BodyTooLarge { limit };
    if let Some(len) = declared.filter(|&len| len > limit as u64) {
        // A client waiting for `100 Continue` has sent nothing yet: answer at
        // once and it never sends the body. So does one announcing a body too
        // large to be worth reading.
        if parts.headers.contains_key(EXPECT) || len > DRAIN_CAP {
            return Err(too_large);
        }
    }
    let deadline = Instant::now() + timeout;
    let mut held = BytesMut::new();
    let mut seen: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ProxyError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ProxyError::BodyRead(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing MCP needs
        };
        seen += data.len() as u64;
        if seen <= limit as u64 {
            if held.is_empty() && body.is_end_stream() {
                return Ok(data); // the usual case: one frame, no copy
            }
            held.extend_from_slice(&data);
        } else if !held.is_empty() {
            held = BytesMut::new(); // over the limit: only counting from here
        } else if seen > DRAIN_CAP {
            return Err(too_large);
        }
    }
    if seen > limit as u64 || declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large);
    }
    Ok(held.freeze())
}
