//! Streamable HTTP at `/mcp` (revisions 2025-03-26 .. 2025-11-25), stateful or stateless.
//!
//! Stateful mode behaves like the TypeScript SDK transport: `initialize` mints a session id,
//! every later request must carry a known `Mcp-Session-Id` (missing: 400, unknown: 404 with the
//! SDK's exact body), and every response of a session echoes the header.

use std::sync::Arc;

use bytes::Bytes;
use http::header::ALLOW;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::replica::{new_session_id, Shared, StreamableSession};
use crate::rpc;
use crate::service::{
    empty, json_response, rpc_error, set_session_header, sse_head, Reply, MCP_SESSION_ID,
};
use crate::sse::message_event;

/// The first bytes of a standalone GET stream, so the response head is flushed at once.
const PRIMING_EVENT: &[u8] = b"id: 0\ndata: \n\n";

pub(crate) async fn handle(shared: &Arc<Shared>, parts: &Parts, body: &Bytes) -> Reply {
    match parts.method {
        Method::POST => post(shared, parts, body).await,
        Method::GET if shared.config.stateful => open_stream(shared, parts),
        Method::DELETE if shared.config.stateful => delete(shared, parts),
        _ => {
            let allow = if shared.config.stateful {
                "GET, POST, DELETE"
            } else {
                "POST"
            };
            let mut response = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &rpc_error(-32000, "Method not allowed."),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            Reply::Full(response)
        }
    }
}

async fn post(shared: &Arc<Shared>, parts: &Parts, body: &Bytes) -> Reply {
    let (messages, batch) = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(messages)) if !messages.is_empty() => (messages, true),
        Ok(Value::Array(_)) => {
            return Reply::Full(json_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(-32600, "Invalid Request: empty batch"),
            ))
        }
        Ok(message) => (vec![message], false),
        Err(_) => {
            return Reply::Full(json_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(-32700, "Parse error"),
            ))
        }
    };

    let session = if !shared.config.stateful {
        None
    } else if messages.iter().any(rpc::is_initialize) {
        let id = new_session_id();
        shared
            .state()
            .sessions
            .insert(id.clone(), StreamableSession::default());
        Some(id)
    } else {
        match known_session(shared, parts) {
            Ok(id) => Some(id),
            Err(error) => return Reply::Full(error.response()),
        }
    };

    let mut responses = Vec::new();
    for message in &messages {
        if let Some(response) = rpc::handle_message(&shared.name, message).await {
            responses.push(response);
        }
    }

    let mut response = if responses.is_empty() {
        empty(StatusCode::ACCEPTED)
    } else if shared.config.sse_responses {
        let events: Vec<u8> = responses
            .iter()
            .flat_map(|r| message_event(&r.to_string()))
            .collect();
        sse_head().map(|()| Bytes::from(events))
    } else if batch {
        json_response(StatusCode::OK, &Value::Array(responses))
    } else {
        json_response(StatusCode::OK, &responses[0])
    };
    if let Some(id) = session {
        set_session_header(&mut response, &id);
    }
    Reply::Full(response)
}

/// The standalone GET stream: open until the session is deleted or the client goes away.
fn open_stream(shared: &Arc<Shared>, parts: &Parts) -> Reply {
    let id = match known_session(shared, parts) {
        Ok(id) => id,
        Err(error) => return Reply::Full(error.response()),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    // Cannot fail: the receiver is in hand.
    let _ = tx.send(Bytes::from_static(PRIMING_EVENT));
    {
        let mut state = shared.state();
        let Some(session) = state.sessions.get_mut(&id) else {
            // Deleted between the check and now.
            return Reply::Full(session_not_found());
        };
        session.streams.retain(|stream| !stream.is_closed());
        session.streams.push(tx);
    }
    let mut response = sse_head();
    set_session_header(&mut response, &id);
    Reply::Stream {
        response,
        rx,
        legacy_session: None,
        drained: None,
    }
}

fn delete(shared: &Arc<Shared>, parts: &Parts) -> Reply {
    let id = match known_session(shared, parts) {
        Ok(id) => id,
        Err(error) => return Reply::Full(error.response()),
    };
    // Dropping the session drops its stream senders, which ends those streams normally.
    let removed = shared.state().sessions.remove(&id);
    if removed.is_none() {
        return Reply::Full(session_not_found());
    }
    drop(removed);
    let mut response = empty(StatusCode::OK);
    set_session_header(&mut response, &id);
    Reply::Full(response)
}

/// Why a request's session was refused.
enum SessionError {
    Missing,
    Unknown,
}

impl SessionError {
    fn response(self) -> Response<Bytes> {
        match self {
            Self::Missing => json_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(-32000, "Bad Request: Mcp-Session-Id header is required"),
            ),
            Self::Unknown => session_not_found(),
        }
    }
}

/// The request's session id if this replica knows it.
fn known_session(shared: &Shared, parts: &Parts) -> Result<String, SessionError> {
    let value = parts
        .headers
        .get(MCP_SESSION_ID)
        .ok_or(SessionError::Missing)?;
    let id = value.to_str().unwrap_or_default();
    if shared.state().sessions.contains_key(id) {
        Ok(id.to_owned())
    } else {
        Err(SessionError::Unknown)
    }
}

/// The TypeScript SDK's answer for an unknown session, byte for byte.
fn session_not_found() -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(
        br#"{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}"#,
    ));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
