//! Task affinity (SEP-2663, the 2026-07-28 tasks extension).
//!
//! A task's state lives on the replica that created it, and `tasks/get`,
//! `tasks/update` and `tasks/cancel` only work there (the SEP asks load
//! balancers to route them to it). Tether treats a task id as it treats a
//! session id: in the response that creates a task (`result.resultType` is
//! `"task"`, the id in `result.taskId`) the server's id is sealed with its
//! owner (`TokenKind::Task`); a later request names the token in
//! `params.taskId` (and in `Mcp-Name`, when the client sends it), which is
//! opened, put back to the server's id in both places, and sent to the owner
//! only. In that request's response the server's id goes back to the client's
//! token. Nothing is stored.
//!
//! Responses are rewritten only where a task id can be: JSON bodies whole
//! (bounded by [`MAX_BODY`]), event streams event by event, and in either
//! only messages that contain `"taskId"` are parsed at all.

use serde_json::Value;

use crate::forward::relay::Rewrite;
use crate::forward::sse;

/// The capability a request declares when it accepts a task as its answer.
pub const EXTENSION: &[u8] = b"io.modelcontextprotocol/tasks";

/// Largest JSON body (or single event) held to rewrite; a larger one goes
/// on as it is, with a warning.
pub const MAX_BODY: usize = 4 << 20;

/// Seals a task id the server created (`None`: too long to seal).
pub type SealFn = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Whether `haystack` contains `needle` (bodies are small; no SIMD needed).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a request may be answered with a new task: a `tools/call` whose
/// body declares the tasks extension (a server must not create a task for a
/// client that did not declare it).
pub fn may_create(method: Option<&str>, body: &[u8]) -> bool {
    method == Some("tools/call") && contains(body, EXTENSION)
}

/// The request body with `params.taskId` set to the server's id, and any
/// other member left as it was (re-serialised: whitespace may change).
pub fn restore_body(body: &[u8], server_id: &str) -> Option<Vec<u8>> {
    let mut message: Value = serde_json::from_slice(body).ok()?;
    let id = message.get_mut("params")?.get_mut("taskId")?;
    *id = Value::String(server_id.to_owned());
    serde_json::to_vec(&message).ok()
}

/// Rewrites the task ids of one response body.
pub struct TaskRewriter {
    event_stream: bool,
    /// Bytes held: the whole JSON body, or the event not yet complete.
    held: Vec<u8>,
    /// Too large to hold: the rest passes as it is.
    passing: bool,
    /// Seals new task ids with the answering backend.
    seal: Option<SealFn>,
    /// The task the request named: (server's id, the client's token).
    echo: Option<(String, String)>,
    /// Called for each task id sealed.
    on_created: Box<dyn Fn() + Send>,
}

impl TaskRewriter {
    pub fn new(
        event_stream: bool,
        seal: Option<SealFn>,
        echo: Option<(String, String)>,
        on_created: Box<dyn Fn() + Send>,
    ) -> Self {
        TaskRewriter {
            event_stream,
            held: Vec::new(),
            passing: false,
            seal,
            echo,
            on_created,
        }
    }

    /// One JSON-RPC message: a new task's id sealed, the named task's id
    /// back to the client's token. Returns whether anything changed.
    fn rewrite(&self, message: &mut Value) -> bool {
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        let creates = result.get("resultType").and_then(Value::as_str) == Some("task");
        let Some(Value::String(id)) = result.get_mut("taskId") else {
            return false;
        };
        if let Some((server, client)) = &self.echo {
            if id == server {
                *id = client.clone();
                return true;
            }
        }
        if let (true, Some(seal)) = (creates, &self.seal) {
            match seal(id) {
                Some(token) => {
                    *id = token;
                    (self.on_created)();
                    return true;
                }
                None => tracing::warn!(len = id.len(), "task id too long to seal; passed as it is"),
            }
        }
        false
    }

    /// A JSON text rewritten, or `None` when it stays as it is.
    fn rewrite_json(&self, text: &[u8]) -> Option<Vec<u8>> {
        if !contains(text, b"\"taskId\"") {
            return None;
        }
        let mut message: Value = serde_json::from_slice(text).ok()?;
        match self.rewrite(&mut message) {
            true => serde_json::to_vec(&message).ok(),
            false => None,
        }
    }

    /// Complete events from `held` into `ready`.
    fn events(&mut self, ready: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(end) = sse::event_end(&self.held[start..]) {
            let event = &self.held[start..start + end];
            match sse::event_data(event)
                .as_deref()
                .and_then(|data| self.rewrite_json(data))
            {
                Some(json) => sse::write_event(event, &json, ready),
                None => ready.extend_from_slice(event),
            }
            start += end;
        }
        self.held.drain(..start);
    }
}

impl Rewrite for TaskRewriter {
    fn push(&mut self, chunk: &[u8], ready: &mut Vec<u8>) {
        if self.passing {
            ready.extend_from_slice(chunk);
            return;
        }
        self.held.extend_from_slice(chunk);
        if self.event_stream {
            self.events(ready);
        }
        if self.held.len() > MAX_BODY {
            tracing::warn!(
                held = self.held.len(),
                "response too large to look for task ids in; passed as it is"
            );
            self.passing = true;
            ready.append(&mut self.held);
        }
    }

    fn finish(&mut self, ready: &mut Vec<u8>) {
        if self.passing || self.held.is_empty() {
            return;
        }
        if self.event_stream {
            self.events(ready);
            ready.append(&mut self.held);
            return;
        }
        match self.rewrite_json(&self.held) {
            Some(json) => ready.extend_from_slice(&json),
            None => ready.append(&mut self.held),
        }
        self.held.clear();
    }
}

#[cfg(test)]
mod tests;
