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

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::forward::relay::Rewrite;
use crate::forward::sse;

/// Largest JSON body (or single event) held to rewrite; a larger one goes
/// on as it is, with a warning.
pub const MAX_BODY: usize = 4 << 20;

/// Seals a task id the server created (`None`: too long to seal).
pub type SealFn = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Whether `haystack` contains `needle` (bodies are small; no SIMD needed).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where `inner` (a slice parsed out of `outer`) lies in `outer`, proved by
/// comparing the bytes there: a parser's slice is only trusted once found
/// in its input.
fn span(outer: &str, inner: &str) -> Option<std::ops::Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let range = start..start.checked_add(inner.len())?;
    (outer.get(range.clone())? == inner).then_some(range)
}

/// `text` with the JSON value at `range` replaced by the string `value`;
/// every other byte as it was (numbers, key order, whitespace).
fn splice(text: &str, range: std::ops::Range<usize>, value: &str) -> Option<Vec<u8>> {
    let quoted = serde_json::to_string(value).ok()?;
    let mut out = Vec::with_capacity(text.len() + quoted.len());
    out.extend_from_slice(&text.as_bytes()[..range.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&text.as_bytes()[range.end..]);
    Some(out)
}

#[derive(Deserialize)]
struct WithParams<'a> {
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WithResult<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TaskFields<'a> {
    #[serde(rename = "taskId", borrow, default)]
    task_id: Option<&'a RawValue>,
    #[serde(rename = "resultType", borrow, default)]
    result_type: Option<Cow<'a, str>>,
}

/// The string task id of `object` (a JSON object's text) and where it is.
fn task_id_in(object: &str) -> Option<(String, Option<String>, &str)> {
    let fields: TaskFields<'_> = serde_json::from_str(object).ok()?;
    let raw = fields.task_id?.get();
    let id: String = serde_json::from_str(raw).ok()?;
    Some((id, fields.result_type.map(Cow::into_owned), raw))
}

/// The request body with `params.taskId` set to the server's id; every
/// other byte as the client sent it.
pub fn restore_body(body: &[u8], server_id: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let message: WithParams<'_> = serde_json::from_str(text).ok()?;
    let (_, _, raw) = task_id_in(message.params?.get())?;
    splice(text, span(text, raw)?, server_id)
}

/// Rewrites the task ids of one response body.
pub struct TaskRewriter {
    event_stream: bool,
    /// Bytes held: the whole JSON body, or the event not yet complete.
    held: Vec<u8>,
    /// Where the held event's end is being looked for.
    splitter: sse::Splitter,
    /// Too large to hold: a JSON body passes as it is to its end; an event
    /// stream passes until the end of this event.
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
            splitter: sse::Splitter::new(),
            passing: false,
            seal,
            echo,
            on_created,
        }
    }

    /// One JSON-RPC message: a new task's id sealed, the named task's id
    /// back to the client's token; `None` when it stays as it is.
    fn rewrite_json(&self, text: &[u8]) -> Option<Vec<u8>> {
        if !contains(text, b"\"taskId\"") {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let message: WithResult<'_> = serde_json::from_str(text).ok()?;
        let (id, result_type, raw) = task_id_in(message.result?.get())?;
        let range = span(text, raw)?;
        if let Some((server, client)) = &self.echo {
            if id == *server {
                return splice(text, range, client);
            }
        }
        let seal = self.seal.as_ref()?;
        if result_type.as_deref() != Some("task") {
            return None;
        }
        match seal(&id) {
            Some(token) => {
                (self.on_created)();
                splice(text, range, &token)
            }
            None => {
                tracing::warn!(len = id.len(), "task id too long to seal; passed as it is");
                None
            }
        }
    }

    /// Complete events from `held` into `ready`; an event too large to hold
    /// starts passing.
    fn events(&mut self, ready: &mut Vec<u8>) {
        let mut start = 0;
        loop {
            if self.passing {
                // An oversized event: out as it comes, to its end.
                match self.splitter.next(&self.held[start..]) {
                    Some(end) => {
                        ready.extend_from_slice(&self.held[start..start + end]);
                        start += end;
                        self.passing = false;
                        continue;
                    }
                    None => {
                        let scanned = self.splitter.scanned();
                        ready.extend_from_slice(&self.held[start..start + scanned]);
                        start += scanned;
                        self.splitter.consumed(scanned);
                        break;
                    }
                }
            }
            let Some(end) = self.splitter.next(&self.held[start..]) else {
                break;
            };
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
        if !self.passing && self.held.len() > MAX_BODY {
            tracing::warn!(
                held = self.held.len(),
                "event too large to look for task ids in; passed as it is"
            );
            self.passing = true;
            let scanned = self.splitter.scanned();
            ready.extend(self.held.drain(..scanned));
            self.splitter.consumed(scanned);
        }
    }
}

impl Rewrite for TaskRewriter {
    fn push(&mut self, chunk: &[u8], ready: &mut Vec<u8>) {
        if self.passing && !self.event_stream {
            ready.extend_from_slice(chunk);
            return;
        }
        self.held.extend_from_slice(chunk);
        if self.event_stream {
            self.events(ready);
        } else if self.held.len() > MAX_BODY {
            tracing::warn!(
                held = self.held.len(),
                "response too large to look for task ids in; passed as it is"
            );
            self.passing = true;
            ready.append(&mut self.held);
        }
    }

    fn finish(&mut self, ready: &mut Vec<u8>) {
        if self.event_stream {
            self.events(ready);
            // An event the stream never ended: as it is.
            ready.append(&mut self.held);
            return;
        }
        if self.passing || self.held.is_empty() {
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
