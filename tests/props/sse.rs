//! `forward::sse`: the first-event scanner against the WHATWG event-stream
//! interpretation, and the endpoint rewriter's scan limit.
//!
//! The reference reads a whole buffer at once
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>),
//! restricted to what the scanner reports: lines end in CRLF, LF or CR; one
//! leading UTF-8 BOM is skipped; a line starting with `:` is a comment; a
//! field is `name: value` (one optional space after the colon), a line
//! without a colon a field with an empty value; a blank line dispatches an
//! event if a `data` field was seen, and otherwise resets the event type.
//! A CR ends its line at once (a following LF belongs to it), so an event
//! whose blank line ends in a CR is complete when that CR arrives.

use std::ops::Range;

use mcp_tether::forward::sse::{EndpointRewriter, FirstEvent, FirstEventScanner, Outcome};
use proptest::prelude::*;
use proptest::sample::select;

use crate::{config, pieces, show, Raw};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The first event dispatched by the bytes in `buf`, if they hold one.
fn reference(buf: &[u8]) -> Option<FirstEvent> {
    let mut pos = if buf.starts_with(BOM) { BOM.len() } else { 0 };
    let mut event: Option<Range<usize>> = None;
    let mut data: Vec<Range<usize>> = Vec::new();
    loop {
        let eol = pos + buf[pos..].iter().position(|&b| b == b'\r' || b == b'\n')?;
        let mut next = eol + 1;
        if buf[eol] == b'\r' && buf.get(next) == Some(&b'\n') {
            next += 1;
        }
        let line = &buf[pos..eol];
        if line.is_empty() {
            if !data.is_empty() {
                return Some(FirstEvent {
                    end: next,
                    event,
                    data,
                });
            }
            event = None;
        } else if line[0] != b':' {
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let start = pos + colon + 1;
                    let start = if buf[start..eol].first() == Some(&b' ') {
                        start + 1
                    } else {
                        start
                    };
                    (&line[..colon], start..eol)
                }
                None => (line, eol..eol),
            };
            match name {
                b"event" => event = Some(value),
                b"data" => data.push(value),
                _ => {}
            }
        }
        pos = next;
    }
}

#[derive(Debug, Clone)]
enum Line {
    Comment(String),
    /// `name`, then `:` and the value if any (with `space` after the colon).
    Field {
        name: &'static str,
        value: Option<(bool, Raw)>,
    },
    Blank,
}

fn text() -> impl Strategy<Value = Raw> {
    proptest::collection::vec(
        prop_oneof![
            8 => select(&b"abcxyz019 :/?=&{}\"\t"[..]).prop_map(|b| vec![b]),
            1 => Just("é".as_bytes().to_vec()),
            1 => Just("€".as_bytes().to_vec()),
            1 => Just(BOM.to_vec()),
            1 => select(&[0x80u8, 0xff, 0xc3][..]).prop_map(|b| vec![b]),
        ],
        0..12,
    )
    .prop_map(|v| Raw(v.concat()))
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        2 => "[a-z :]{0,10}".prop_map(Line::Comment),
        8 => (
            prop_oneof![
                4 => select(&["data", "event"][..]),
                2 => select(&["id", "retry", "foo", ""][..]),
                1 => select(&["Data", "data ", " data", "dat", "datas", "eventx", "Event"][..]),
            ],
            proptest::option::weighted(0.85, (any::<bool>(), text())),
        )
            .prop_map(|(name, value)| Line::Field { name, value }),
        3 => Just(Line::Blank),
    ]
}

prop_compose! {
    fn stream()(
        start in prop_oneof![6 => Just(&b""[..]), 3 => Just(BOM), 1 => Just(&b"\xEF\xBB"[..]), 1 => Just(&b"\xEF"[..])],
        lines in proptest::collection::vec((line(), select(&["\r\n", "\n", "\r"][..])), 0..24),
    ) -> Raw {
        let mut out = start.to_vec();
        for (line, eol) in lines {
            match line {
                Line::Comment(c) => {
                    out.push(b':');
                    out.extend_from_slice(c.as_bytes());
                }
                Line::Field { name, value } => {
                    out.extend_from_slice(name.as_bytes());
                    if let Some((space, value)) = value {
                        out.push(b':');
                        if space {
                            out.push(b' ');
                        }
                        out.extend_from_slice(&value);
                    }
                }
                Line::Blank => {}
            }
            out.extend_from_slice(eol.as_bytes());
        }
        Raw(out)
    }
}

/// Prefix lengths that only grow (some repeat), ending with the whole stream.
fn growth(len: usize, steps: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    for &s in steps {
        at = (at + s).min(len);
        out.push(at);
    }
    out.push(len);
    out
}

proptest! {
    #![proptest_config(config(1))]

    /// Fed growing prefixes, the scanner says nothing until a prefix holds
    /// the reference's first event, then reports exactly that event.
    #[test]
    fn scanner_finds_the_first_event(
        stream in stream(),
        steps in proptest::collection::vec(prop_oneof![2 => Just(0usize), 4 => Just(1usize), 4 => 1..8usize, 1 => 1..64usize], 1..64),
    ) {
        let mut scanner = FirstEventScanner::default();
        let mut found = None;
        for len in growth(stream.len(), &steps) {
            let prefix = &stream[..len];
            let want = reference(prefix);
            match scanner.feed(prefix) {
                None => prop_assert_eq!(want, None, "missed in {}", show(prefix)),
                Some(got) => {
                    prop_assert_eq!(Some(&got), want.as_ref(), "in {}", show(prefix));
                    found = Some((got, len));
                    break;
                }
            }
        }
        // The same event as the whole stream's, but for a CRLF cut between
        // its CR and LF (the event was complete at the CR).
        let whole = reference(&stream);
        match (&found, &whole) {
            (None, None) => {}
            (Some((got, len)), Some(want)) => {
                prop_assert_eq!(&got.event, &want.event);
                prop_assert_eq!(&got.data, &want.data);
                let cut_crlf = got.end == *len && stream[got.end - 1] == b'\r' && stream.get(got.end) == Some(&b'\n');
                prop_assert!(got.end == want.end || (cut_crlf && want.end == got.end + 1), "end {} vs {}", got.end, want.end);
            }
            _ => prop_assert!(false, "scanner {:?}, whole stream {:?}", found, whole),
        }
    }

    /// The endpoint rewriter only rewrites an `endpoint` event that ends
    /// within the scan limit; one ending after it goes on untouched
    /// (TooLarge). Either way every byte pushed so far comes out, once.
    #[test]
    fn rewriter_respects_the_scan_limit(
        preface in proptest::collection::vec(prop_oneof![
            Just(&b": comment\n"[..]),
            Just(&b"id: 1\r\n"[..]),
            Just(&b"retry: 10\r"[..]),
            Just(&b"event: other\n\n"[..]),
            Just(&b"\r\n"[..]),
        ], 0..6),
        eols in proptest::collection::vec(select(&["\r\n", "\n", "\r"][..]), 3),
        id in "[0-9a-f-]{1,40}",
        limit in 0..200usize,
        chunk in proptest::collection::vec(1..40usize, 1..8),
    ) {
        let mut eols = eols;
        if eols[1] == "\r" && eols[2].starts_with('\n') {
            eols[2] = "\r"; // `\r` then `\n` would be one line end, not a blank line
        }
        let mut stream = preface.concat();
        let url = format!("/messages?sessionId={id}");
        stream.extend_from_slice(format!("event: endpoint{}data: {url}{}{}", eols[0], eols[1], eols[2]).as_bytes());
        // More than the limit in all, so the rewriter must decide.
        while stream.len() <= limit {
            stream.extend_from_slice(b"data: later\n\n");
        }
        let seal: mcp_tether::forward::sse::SealFn = Box::new(|id: &str| Some(format!("SEALED-{id}")));
        let mut rewriter = EndpointRewriter::new(limit, "backend:1".to_owned(), seal);
        let mut pushed = Vec::new();
        let mut decided = None;
        for piece in pieces(&stream, &chunk) {
            pushed.extend_from_slice(piece);
            if let Some(out) = rewriter.push(piece) {
                decided = Some(out);
                break;
            }
        }
        let Some((out, outcome)) = decided else {
            return Err(TestCaseError::fail("the rewriter never decided on a stream longer than its limit"));
        };
        match reference(&stream[..limit.min(stream.len())]) {
            Some(event) => {
                prop_assert_eq!(outcome, Outcome::Rewritten, "event ends at {} within {}: {}", event.end, limit, show(&stream));
                let data = event.data[0].clone();
                prop_assert_eq!(&stream[data.clone()], url.as_bytes());
                let want = [&pushed[..data.start], format!("/messages?sessionId=SEALED-{id}").as_bytes(), &pushed[data.end..]].concat();
                prop_assert_eq!(Raw(out.to_vec()), Raw(want));
            }
            None => {
                prop_assert_eq!(outcome, Outcome::TooLarge, "no event within {}: {}", limit, show(&stream));
                prop_assert_eq!(Raw(out.to_vec()), Raw(pushed.clone()));
            }
        }
    }
}
