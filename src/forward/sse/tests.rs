use super::*;

fn seal(id: &str) -> Option<String> {
    Some(format!("T<{id}>"))
}

fn rewriter() -> EndpointRewriter {
    EndpointRewriter::new(4096, "127.0.0.1:9001".into(), Box::new(seal))
}

/// Pushes `chunks` in order; returns all bytes sent on and the outcome.
fn run(chunks: &[&[u8]]) -> (Vec<u8>, Option<Outcome>) {
    let mut r = rewriter();
    let mut out = Vec::new();
    let mut outcome = None;
    for chunk in chunks {
        if outcome.is_some() {
            out.extend_from_slice(chunk);
            continue;
        }
        if let Some((bytes, o)) = r.push(chunk) {
            out.extend_from_slice(&bytes);
            outcome = Some(o);
        }
    }
    if outcome.is_none() {
        out.extend_from_slice(&r.finish());
    }
    (out, outcome)
}

/// Every way to cut `input` in two and in three (all pairs of cut points).
fn all_splits(input: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut out = vec![vec![input]];
    for i in 0..=input.len() {
        out.push(vec![&input[..i], &input[i..]]);
        for j in i..=input.len() {
            out.push(vec![&input[..i], &input[i..j], &input[j..]]);
        }
    }
    out
}

fn assert_every_split(input: &str, want: &str, outcome: Outcome) {
    for chunks in all_splits(input.as_bytes()) {
        let (out, got) = run(&chunks);
        assert_eq!(
            String::from_utf8_lossy(&out),
            want,
            "chunks {:?}",
            chunks
                .iter()
                .map(|c| String::from_utf8_lossy(c))
                .collect::<Vec<_>>()
        );
        assert_eq!(got, Some(outcome), "chunks {chunks:?}");
    }
}

#[test]
fn endpoint_rewritten_under_every_split_and_line_ending() {
    for eol in ["\n", "\r\n", "\r"] {
        let input =
            format!("event: endpoint{eol}data: /messages?sessionId=abc{eol}{eol}: ping{eol}");
        let want =
            format!("event: endpoint{eol}data: /messages?sessionId=T<abc>{eol}{eol}: ping{eol}");
        assert_every_split(&input, &want, Outcome::Rewritten);
    }
}

#[test]
fn comments_bom_ids_and_utf8_before_the_event_pass_untouched() {
    let input = "\u{feff}: h\u{e9}llo \u{1f600}\r\nid: 7\r\nevent: endpoint\r\ndata:/messages/?session_id=00ff\r\n\r\nevent: message\r\n";
    let want = "\u{feff}: h\u{e9}llo \u{1f600}\r\nid: 7\r\nevent: endpoint\r\ndata:/messages/?session_id=T<00ff>\r\n\r\nevent: message\r\n";
    assert_every_split(input, want, Outcome::Rewritten);
}

#[test]
fn mixed_line_endings_and_blank_lines_without_data() {
    // A blank line before any data dispatches nothing and resets the type.
    let input = "event: other\n\nevent: endpoint\rdata: /m?x=1&sessionId=s1&y=2\r\n\r";
    let want = "event: other\n\nevent: endpoint\rdata: /m?x=1&sessionId=T<s1>&y=2\r\n\r";
    assert_every_split(input, want, Outcome::Rewritten);
}

#[test]
fn cr_at_a_chunk_edge_is_not_a_blank_line() {
    // "data: ...\r" then "\n": one CRLF, so the event is not complete yet.
    let (out, outcome) = run(&[b"event: endpoint\r\ndata: /m?sessionId=a\r", b"\n", b"\r\n"]);
    assert_eq!(outcome, Some(Outcome::Rewritten));
    assert_eq!(out, b"event: endpoint\r\ndata: /m?sessionId=T<a>\r\n\r\n");
    let mut r = rewriter();
    assert!(r
        .push(b"event: endpoint\r\ndata: /m?sessionId=a\r")
        .is_none());
    assert!(r.push(b"\n").is_none());
}

#[test]
fn other_first_events_pass_unchanged() {
    let priming = "id: 0\ndata: \n\nevent: message\ndata: {}\n\n";
    assert_every_split(priming, priming, Outcome::NotEndpoint);
    let message = "event: message\r\ndata: {\"jsonrpc\":\"2.0\"}\r\n\r\n";
    assert_every_split(message, message, Outcome::NotEndpoint);
}

#[test]
fn endpoint_without_session_param_passes_unchanged() {
    let input = "event: endpoint\ndata: /messages\n\n";
    assert_every_split(input, input, Outcome::NoSessionParam);
    let two_lines = "event: endpoint\ndata: /m?sessionId=a\ndata: b\n\n";
    assert_every_split(two_lines, two_lines, Outcome::NoSessionParam);
}

#[test]
fn held_bytes_are_capped() {
    let mut r = EndpointRewriter::new(16, "b:1".into(), Box::new(seal));
    assert!(r.push(b": a comment").is_none());
    let (bytes, outcome) = r.push(b" that goes on and on").unwrap();
    assert_eq!(outcome, Outcome::TooLarge);
    assert_eq!(bytes, &b": a comment that goes on and on"[..]);
}

#[test]
fn stream_ending_early_gives_back_what_was_held() {
    let (out, outcome) = run(&[b"event: endpoint\n", b"data: /m?sessionId=a\n"]);
    assert_eq!(outcome, None);
    assert_eq!(out, b"event: endpoint\ndata: /m?sessionId=a\n");
}

#[test]
fn absolute_urls_naming_the_backend_become_relative() {
    let cases = [
        (
            "http://127.0.0.1:9001/messages?sessionId=a",
            "/messages?sessionId=T<a>",
        ),
        (
            "HTTP://127.0.0.1:9001/m/?session_id=a#f",
            "/m/?session_id=T<a>#f",
        ),
        ("//127.0.0.1:9001/m?sessionId=a", "/m?sessionId=T<a>"),
        // Another origin is not ours to change; only the id is sealed.
        (
            "http://public.example/m?sessionId=a",
            "http://public.example/m?sessionId=T<a>",
        ),
        ("m?sessionId=a", "m?sessionId=T<a>"),
        (
            "/m?sessionId=a#sessionId=b",
            "/m?sessionId=T<a>#sessionId=b",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            rewrite_endpoint(input, "127.0.0.1:9001", seal).as_deref(),
            Some(want),
            "{input}"
        );
    }
    assert_eq!(rewrite_endpoint("/m#sessionId=a", "b:1", seal), None);
    assert_eq!(rewrite_endpoint("/m?sessionId=a", "b:1", |_| None), None);
}

#[test]
fn scanner_reports_ranges() {
    let buf = b": c\nevent:endpoint\ndata:x\ndata: y\n\nrest";
    let ev = FirstEventScanner::default().feed(buf).unwrap();
    assert_eq!(&buf[ev.event.unwrap()], b"endpoint");
    let data: Vec<&[u8]> = ev.data.iter().map(|r| &buf[r.clone()]).collect();
    assert_eq!(data, [&b"x"[..], b"y"]);
    assert_eq!(&buf[ev.end..], b"rest");
}

#[test]
fn events_are_grouped_by_their_blank_line_whatever_the_line_ends() {
    assert_eq!(event_end(b"data: 1\n\ndata: 2\n\n"), Some(9));
    assert_eq!(event_end(b"data: 1\r\n\r\nrest"), Some(11));
    assert_eq!(event_end(b"data: 1\r\rrest"), Some(9));
    assert_eq!(event_end(b": keepalive\n\n"), Some(13));
    assert_eq!(event_end(b"data: 1\n"), None);
    assert_eq!(event_end(b"data: 1\r"), None);
    assert_eq!(
        event_end(b"data: 1\n\r"),
        None,
        "a CR at the end may begin a CRLF"
    );
    assert_eq!(event_end(b""), None);
}

#[test]
fn event_data_joins_lines_and_write_event_keeps_the_rest() {
    let event = b"id: 7\r\nevent: message\r\ndata: {\"a\":\r\ndata:1}\r\n\r\n";
    assert_eq!(event_data(event).unwrap(), b"{\"a\":\n1}");
    assert_eq!(event_data(b": comment\n\n"), None);
    assert_eq!(event_data(b"data\n\n").unwrap(), b"");
    assert_eq!(event_data(b"database: x\n\n"), None);
    let mut out = Vec::new();
    write_event(event, b"{\"a\":2}", &mut out);
    assert_eq!(out, b"id: 7\r\nevent: message\r\ndata: {\"a\":2}\n\r\n");
}

#[test]
fn the_splitter_resumes_and_finds_the_same_ends_at_every_split() {
    let stream: &[u8] = b"data: a\r\n\r\n: c\n\nid: 1\rdata: b\r\rdata: x\n\r\n";
    let whole: Vec<usize> = {
        let mut ends = Vec::new();
        let mut start = 0;
        while let Some(end) = event_end(&stream[start..]) {
            start += end;
            ends.push(start);
        }
        ends
    };
    assert_eq!(whole, [11, 16, 31, 41]);
    for step in 1..stream.len() {
        let mut splitter = Splitter::new();
        let (mut ends, mut start, mut fed) = (Vec::new(), 0, 0);
        while fed < stream.len() {
            fed = (fed + step).min(stream.len());
            while let Some(end) = splitter.next(&stream[start..fed]) {
                start += end;
                ends.push(start);
            }
        }
        assert_eq!(ends, whole, "fed {step} bytes at a time");
    }
}
