//! Tiny MCP clients for tests and the demo: [`StreamableClient`] (Streamable HTTP, with or
//! without sessions) and [`LegacyClient`] (HTTP+SSE, 2024-11-05), plus [`send_raw`] for tests
//! that need to see exact statuses and bodies.
//!
//! They behave like the official SDK clients where a proxy could tell the difference (endpoint
//! resolution and its same-origin check, accepted content types, session header handling) and
//! return errors, never panic, on whatever a server or proxy sends back.

mod legacy;
mod streamable;
mod transport;

use std::fmt;

use serde_json::Value;

pub use self::legacy::LegacyClient;
pub use self::streamable::StreamableClient;
pub use self::transport::{send_raw, EventStream, RawResponse};

/// What a client call failed with. `status` and `body` are set when an HTTP response (or a
/// JSON-RPC error inside one) was the cause.
#[derive(Clone, Debug)]
pub struct ClientError {
    pub status: Option<u16>,
    pub body: String,
    pub message: String,
}

impl ClientError {
    /// A connection or protocol failure without a usable HTTP response.
    pub(crate) fn transport(message: impl Into<String>) -> Self {
        Self {
            status: None,
            body: String::new(),
            message: message.into(),
        }
    }

    /// A caller mistake (bad URL, bad header).
    pub(crate) fn local(message: impl Into<String>) -> Self {
        Self::transport(message)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        if !self.body.is_empty() {
            const MAX: usize = 300;
            let body: String = self.body.chars().take(MAX).collect();
            write!(f, ": {body}")?;
            if self.body.chars().nth(MAX).is_some() {
                f.write_str("...")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ClientError {}

// === JSON-RPC helpers shared by both clients ===

fn request_body(id: u64, method: &str, params: Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// The response with this id in a message or batch, if there is one.
fn find_response(message: Value, id: u64) -> Option<Value> {
    match message {
        Value::Array(items) => items.into_iter().find(|m| has_id(m, id)),
        message if has_id(&message, id) => Some(message),
        _ => None,
    }
}

fn has_id(message: &Value, id: u64) -> bool {
    message.get("id").and_then(Value::as_u64) == Some(id)
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// `result` of a response, or its JSON-RPC error as a [`ClientError`].
fn into_result(response: Value, status: Option<u16>, raw: &str) -> Result<Value, ClientError> {
    if let Some(error) = response.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("<no message>");
        return Err(ClientError {
            status,
            body: raw.to_owned(),
            message: format!("JSON-RPC error {code}: {message}"),
        });
    }
    match response.get("result") {
        Some(result) => Ok(result.clone()),
        None => Err(ClientError {
            status,
            body: raw.to_owned(),
            message: "JSON-RPC response without result".to_owned(),
        }),
    }
}

/// The text of the first content item of a tool result.
fn tool_text(result: &Value) -> Result<String, ClientError> {
    result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ClientError {
            status: None,
            body: result.to_string(),
            message: "tool result has no text content".to_owned(),
        })
}
