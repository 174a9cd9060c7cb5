//! A small incremental parser of `text/event-stream` bodies, as the HTML
//! Living Standard's EventSource reads them: lines end in CRLF, LF or CR (a
//! CR and its LF may arrive in different chunks), `:` starts a comment,
//! `field: value` loses one leading space, a blank line dispatches the event.
//! Doctor needs comments too (keep-alives are comments), so they are items of
//! their own rather than dropped. The proxy has its own scanner in
//! `forward::sse`; doctor is a client and does not import the request path.

use std::collections::VecDeque;

/// The longest line kept: a stream that sends more without a line end is
/// refused rather than buffered without bound.
pub const MAX_LINE: usize = 1 << 20;
/// The most data one event may carry (its `data:` lines together), as much
/// as a JSON body read whole: short lines without a blank one between them
/// would otherwise pile up in one event without bound.
pub const MAX_DATA: usize = 4 << 20;

/// One thing read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event (one with data: an event whose data is empty is
    /// not dispatched, as in EventSource; SSE polling's priming events are such).
    Event(Event),
    /// A comment line (`: keepalive`), without the colon.
    Comment(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `event:`; "message" when absent.
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// `id:`, if the event set one.
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event-stream line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("an event with more than {MAX_DATA} bytes of data")]
    EventTooLarge,
}

/// Feed it chunks as they arrive; take items out with [`Parser::next_item`].
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The last byte fed was a CR: a LF right after it ends no second line.
    after_cr: bool,
    /// Past the start, where a byte-order mark is dropped (it may come split).
    started: bool,
    /// Bytes of a leading byte-order mark seen so far.
    bom: usize,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    /// The stream's last event id, as EventSource keeps it: set by an `id:`
    /// field when its event is dispatched, even one without data (the
    /// priming event of SSE polling). What a resumption sends as `Last-Event-ID`.
    last_id: Option<String>,
    /// The last `retry:` the stream set, in milliseconds.
    retry: Option<u64>,
    items: VecDeque<Item>,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Parses `chunk`, queueing every item it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), SseError> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        for &b in chunk {
            if !self.started {
                if b == BOM[self.bom] {
                    self.bom += 1;
                    self.started = self.bom == BOM.len();
                    continue;
                }
                // Not a byte-order mark after all: what looked like one is text.
                self.started = true;
                self.line.extend_from_slice(&BOM[..self.bom]);
            }
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line)?;
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    pub fn next_item(&mut self) -> Option<Item> {
        self.items.pop_front()
    }

    /// The last event id the stream set (see the field).
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection time the stream asked for, if it set one.
    pub fn retry(&self) -> Option<std::time::Duration> {
        self.retry.map(std::time::Duration::from_millis)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<(), SseError> {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.items
                .push_back(Item::Comment(comment.trim_start().to_string()));
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                let held = self.data.as_ref().map_or(0, |d| d.len() + 1);
                if held + value.len() > MAX_DATA {
                    return Err(SseError::EventTooLarge);
                }
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {} // unknown fields: nothing doctor needs
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        let id = self.id.take();
        if id.is_some() {
            self.last_id.clone_from(&id);
        }
        if let Some(data) = self.data.take().filter(|d| !d.is_empty()) {
            self.items.push_back(Item::Event(Event {
                event: event.unwrap_or_else(|| "message".into()),
                data,
                id,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut Parser) -> Vec<Item> {
        std::iter::from_fn(|| parser.next_item()).collect()
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> Item {
        Item::Event(Event {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
        })
    }

    const STREAM: &[u8] =
        b"\xEF\xBB\xBF: ping\r\nevent: endpoint\r\ndata: /messages/?session_id=ab\r\n\r\n\
id: 7\ndata: {\"a\":1}\ndata:two\n\nid: 8\ndata\n\n: keepalive\rdata: x\r\r";

    #[test]
    fn parses_events_comments_and_every_line_end() {
        let mut p = Parser::new();
        p.feed(STREAM).unwrap();
        assert_eq!(
            all(&mut p),
            vec![
                Item::Comment("ping".into()),
                ev("endpoint", "/messages/?session_id=ab", None),
                ev("message", "{\"a\":1}\ntwo", Some("7")),
                Item::Comment("keepalive".into()),
                ev("message", "x", None),
            ]
        );
    }

    #[test]
    fn the_same_items_whatever_the_chunking() {
        let mut whole = Parser::new();
        whole.feed(STREAM).unwrap();
        let expected = all(&mut whole);
        for split in 0..=STREAM.len() {
            let mut p = Parser::new();
            p.feed(&STREAM[..split]).unwrap();
            p.feed(&STREAM[split..]).unwrap();
            assert_eq!(all(&mut p), expected, "split at {split}");
        }
        let mut bytewise = Parser::new();
        for b in STREAM {
            bytewise.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(all(&mut bytewise), expected);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_an_unfinished_one_waits() {
        let mut p = Parser::new();
        p.feed(b"id: prime\nretry: 100\n\nevent: message\ndata: half")
            .unwrap();
        assert_eq!(all(&mut p), vec![]);
        p.feed(b"\n\n").unwrap();
        assert_eq!(all(&mut p), vec![ev("message", "half", None)]);
    }

    #[test]
    fn an_endless_line_is_refused_and_garbage_never_panics() {
        let mut p = Parser::new();
        assert_eq!(
            p.feed(&vec![b'x'; MAX_LINE + 1]),
            Err(SseError::LineTooLong)
        );
        let mut p = Parser::new();
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        p.feed(&garbage).unwrap();
        p.feed(b"\xff\xfe:\x00\n\n\n::\r\n").unwrap();
        let _ = all(&mut p);
    }

    #[test]
    fn an_endless_event_of_short_lines_is_refused() {
        let mut p = Parser::new();
        let line = b"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
        let value = line.len() - "data: ".len(); // its data and the joining newline
        let mut held = 0;
        let refused = loop {
            if let Err(e) = p.feed(line) {
                break e;
            }
            held += value;
            assert!(held <= MAX_DATA + value, "still buffering {held} bytes");
        };
        assert_eq!(refused, SseError::EventTooLarge);
        assert!(
            held > MAX_DATA - 2 * value,
            "refused early, at {held} bytes"
        );
        // A big event under the cap is still dispatched.
        let mut p = Parser::new();
        let part = format!("data:{}\n", "z".repeat(MAX_LINE - 5));
        for _ in 0..3 {
            p.feed(part.as_bytes()).unwrap();
        }
        p.feed(b"\n").unwrap();
        assert!(matches!(all(&mut p)[..], [Item::Event(_)]));
    }

    #[test]
    fn the_last_event_id_and_retry_outlive_an_event_without_data() {
        let mut p = Parser::new();
        assert_eq!((p.last_id(), p.retry()), (None, None));
        p.feed(b"id: prime-1\nretry: 250\ndata\n\n").unwrap();
        assert_eq!(all(&mut p), vec![]);
        assert_eq!(p.last_id(), Some("prime-1"));
        assert_eq!(p.retry(), Some(std::time::Duration::from_millis(250)));
        p.feed(b"retry: soon\ndata: x\n\n").unwrap();
        assert_eq!(all(&mut p), vec![ev("message", "x", None)]);
        assert_eq!(p.last_id(), Some("prime-1"));
        assert_eq!(p.retry(), Some(std::time::Duration::from_millis(250)));
    }

    #[test]
    fn what_begins_like_a_byte_order_mark_and_is_not_one_is_kept() {
        let mut p = Parser::new();
        p.feed(b"\xEF").unwrap();
        p.feed(b"\xBBdata: x\n\n").unwrap();
        // The field name then begins with replacement characters: unknown, ignored, as EventSource does.
        assert_eq!(all(&mut p), vec![]);
        p.feed(b"data: y\n\n").unwrap();
        assert_eq!(all(&mut p), vec![ev("message", "y", None)]);
    }
}
