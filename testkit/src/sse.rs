//! The SSE wire format, both directions.
//!
//! Server side: [`ChannelBody`], a streaming response body fed through a channel, which counts a
//! disconnect when hyper drops it before the stream ended. Client side: [`SseParser`], an
//! incremental parser that accepts LF, CRLF and CR line ends, comments, and events split across
//! any number of body frames.
//!
//! Neither half may panic on what a peer sends: malformed lines are ignored, an oversized line is
//! an error value.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::{mpsc, watch};

use crate::replica::DisconnectGuard;

/// A line longer than this (without a line end) is treated as a broken peer, not buffered forever.
const MAX_LINE: usize = 8 * 1024 * 1024;

/// One `event: message` carrying `data` (which must not contain line breaks; compact JSON does not).
pub(crate) fn message_event(data: &str) -> Bytes {
    Bytes::from(format!("event: message\ndata: {data}\n\n"))
}

// === impl ChannelBody ===

/// A response body whose frames come from an unbounded channel. The stream ends when every sender
/// is gone; if hyper drops the body before that (the client went away, or the connection was
/// aborted), the guard records a disconnect.
pub(crate) struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    guard: Option<DisconnectGuard>,
    taken: usize,
    drained: Option<watch::Sender<usize>>,
}

impl ChannelBody {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Bytes>, guard: DisconnectGuard) -> Self {
        Self {
            rx,
            guard: Some(guard),
            taken: 0,
            drained: None,
        }
    }

    /// Publish, each time the channel is found empty, how many frames were taken so far. hyper
    /// flushes its write buffer right after a body returns `Pending`, so a writer that waits for
    /// its n-th frame to be reported knows that frame went out on its own.
    pub(crate) fn with_drained(mut self, drained: Option<watch::Sender<usize>>) -> Self {
        self.drained = drained;
        self
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                self.taken += 1;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) => {
                // Every sender is gone: the stream ended on our side, not the client's.
                if let Some(guard) = self.guard.take() {
                    guard.disarm();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let taken = self.taken;
                if let Some(drained) = &self.drained {
                    drained.send_if_modified(|seen| std::mem::replace(seen, taken) != taken);
                }
                Poll::Pending
            }
        }
    }
}

// === impl SseParser ===

/// One dispatched server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `"message"` when the event named none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
}

/// Incremental SSE parser following the WHATWG event-stream rules.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    started: bool,
    after_cr: bool,
    event: String,
    data: String,
    id: Option<String>,
}

impl SseParser {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if !self.started && self.buf.len() >= 3 {
            self.started = true;
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
            }
        }
    }

    /// The next complete event in the buffer, if there is one.
    pub(crate) fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        while let Some(line) = self.next_line() {
            if line.is_empty() {
                if let Some(event) = self.dispatch() {
                    return Ok(Some(event));
                }
            } else {
                self.field(&line);
            }
        }
        if self.buf.len() > MAX_LINE {
            return Err(format!("SSE line longer than {MAX_LINE} bytes"));
        }
        Ok(None)
    }

    fn next_line(&mut self) -> Option<String> {
        if self.after_cr {
            // A CR ended the previous line; an LF right after it belongs to that line end.
            if self.buf.is_empty() {
                return None;
            }
            self.after_cr = false;
            if self.buf[0] == b'\n' {
                self.buf.drain(..1);
            }
        }
        let pos = self.buf.iter().position(|&b| b == b'\n' || b == b'\r')?;
        // Take a CR as a line end at once (a CR-only stream must not wait for the next byte).
        self.after_cr = self.buf[pos] == b'\r';
        let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
        self.buf.drain(..=pos);
        self.started = true;
        Some(line)
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return; // comment
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // retry and unknown fields
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        let id = self.id.take();
        if data.is_empty() {
            return None;
        }
        data.pop(); // the LF after the last data line
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(ev) = parser.next_event().expect("parse") {
                out.push(ev);
            }
        }
        out
    }

    fn endpoint(data: &str) -> SseEvent {
        SseEvent {
            event: "endpoint".into(),
            data: data.into(),
            id: None,
        }
    }

    #[test]
    fn all_line_ends_and_comments() {
        for le in ["\n", "\r\n", "\r"] {
            let text = format!(": hello{le}event: endpoint{le}data: /m?x=1{le}{le}");
            assert_eq!(
                parse_all(&[text.as_bytes()]),
                vec![endpoint("/m?x=1")],
                "{le:?}"
            );
            // Byte by byte: a CRLF split between frames must not yield an extra empty line.
            let bytes: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
            assert_eq!(parse_all(&bytes), vec![endpoint("/m?x=1")], "{le:?}");
        }
    }

    #[test]
    fn multi_line_data_default_name_and_id() {
        let events = parse_all(&[b"id: 7\ndata: a\ndata:b\n\ndata\n\n"]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event, "message");
        assert_eq!(events[0].data, "a\nb");
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[1].data, "");
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(parse_all(&[b"event: x\n\n: only a comment\n\n"]).is_empty());
    }

    #[test]
    fn bom_is_skipped() {
        assert_eq!(
            parse_all(&[b"\xEF\xBB", b"\xBFevent: endpoint\ndata: /e\n\n"]),
            vec![endpoint("/e")]
        );
    }
}
