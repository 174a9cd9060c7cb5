//! Legacy HTTP+SSE (2024-11-05): `GET /sse` opens a stream whose first event names the messages
//! endpoint; POSTs there answer 202 and their JSON-RPC responses travel on that stream.
//!
//! The builder options reproduce what proxies meet in the wild: TypeScript (`sessionId`,
//! `/messages`) versus Python (`session_id`, `/messages/`) conventions, absolute endpoint URLs,
//! odd line ends, and a first event split into tiny frames.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::StatusCode;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::replica::{new_session_id, Shared};
use crate::rpc;
use crate::service::{sse_head, text, Reply};
use crate::sse::message_event;

pub(crate) fn open_stream(shared: &Arc<Shared>) -> Reply {
    let id = new_session_id();
    let (tx, rx) = mpsc::unbounded_channel();
    let first = first_event(shared, &id);
    let drained = match shared.config.endpoint_chunk_size {
        None => {
            // Cannot fail: the receiver is in hand.
            let _ = tx.send(Bytes::from(first));
            None
        }
        Some(size) => {
            let (drained_tx, drained) = watch::channel(0);
            shared.spawn(send_in_frames(tx.clone(), first, size, drained));
            Some(drained_tx)
        }
    };
    shared.state().legacy.insert(id.clone(), tx);
    Reply::Stream {
        response: sse_head(),
        rx,
        legacy_session: Some(id),
        drained,
    }
}

/// Send `text` as frames of `size` bytes, each only once the previous one was written out.
async fn send_in_frames(
    tx: mpsc::UnboundedSender<Bytes>,
    text: String,
    size: usize,
    mut drained: watch::Receiver<usize>,
) {
    for (index, chunk) in text.as_bytes().chunks(size).enumerate() {
        if tx.send(Bytes::copy_from_slice(chunk)).is_err() {
            return;
        }
        // Err: the body is gone (client left); nothing more to write.
        if drained.wait_for(|taken| *taken > index).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// `: hello` (optional) and the endpoint event, with the configured line end.
fn first_event(shared: &Shared, id: &str) -> String {
    let config = &shared.config;
    let le = config.line_ending;
    let path = &config.legacy_messages_path;
    let param = &config.legacy_param;
    let endpoint = if config.absolute_endpoint {
        format!("http://{}{path}?{param}={id}", shared.addr)
    } else {
        format!("{path}?{param}={id}")
    };
    let hello = if config.hello_comment {
        format!(": hello{le}")
    } else {
        String::new()
    };
    format!("{hello}event: endpoint{le}data: {endpoint}{le}{le}")
}

pub(crate) fn post_message(shared: &Arc<Shared>, parts: &Parts, body: Bytes) -> Reply {
    let query = parts.uri.query().unwrap_or_default();
    let Some(id) = query_param(query, &shared.config.legacy_param) else {
        let message = format!("Missing {} parameter", shared.config.legacy_param);
        return Reply::Full(text(StatusCode::BAD_REQUEST, &message));
    };
    let Some(stream) = shared.state().legacy.get(id).cloned() else {
        return Reply::Full(text(StatusCode::NOT_FOUND, "Could not find session"));
    };
    let messages = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(messages)) => messages,
        Ok(message) => vec![message],
        Err(_) => return Reply::Full(text(StatusCode::BAD_REQUEST, "Could not parse message")),
    };
    // Answer 202 at once, like the SDKs; the responses follow on the stream when ready.
    let name = shared.name.clone();
    shared.spawn(async move {
        for message in &messages {
            if let Some(response) = rpc::handle_message(&name, message).await {
                if stream.send(message_event(&response.to_string())).is_err() {
                    return; // the stream is gone
                }
            }
        }
    });
    Reply::Full(text(StatusCode::ACCEPTED, "Accepted"))
}

/// The raw value of `name` in a query string. Session ids are hex, so no decoding is needed;
/// an id that needed decoding would be unknown anyway.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}
