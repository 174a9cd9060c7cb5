use super::*;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn rewriter(
    event_stream: bool,
    echo: Option<(&str, &str)>,
    created: Arc<AtomicUsize>,
) -> TaskRewriter {
    TaskRewriter::new(
        event_stream,
        Some(Box::new(|id: &str| Some(format!("t1.sealed-{id}")))),
        echo.map(|(s, c)| (s.to_owned(), c.to_owned())),
        Box::new(move || {
            created.fetch_add(1, Ordering::Relaxed);
        }),
    )
}

fn run(r: &mut TaskRewriter, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        r.push(c, &mut out);
    }
    r.finish(&mut out);
    out
}

const CREATED: &str = r#"{"jsonrpc":"2.0","id":3,"result":{"taskId":"abc","status":"working","resultType":"task","ttlMs":900000}}"#;

#[test]
fn a_new_task_id_is_sealed_in_a_json_body_split_anywhere() {
    for split in [1, 10, CREATED.len() - 1] {
        let n = Arc::new(AtomicUsize::new(0));
        let (a, b) = CREATED.as_bytes().split_at(split);
        let out = run(&mut rewriter(false, None, n.clone()), &[a, b]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["taskId"], "t1.sealed-abc");
        assert_eq!(v["result"]["status"], "working");
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }
}

#[test]
fn the_named_task_goes_back_to_the_clients_token_and_others_stay() {
    let n = Arc::new(AtomicUsize::new(0));
    let get = br#"{"jsonrpc":"2.0","id":4,"result":{"taskId":"abc","status":"completed","resultType":"complete","result":{"content":[{"type":"text","text":"\"taskId\""}]}}}"#;
    let out = run(
        &mut rewriter(false, Some(("abc", "t1.client")), n.clone()),
        &[get],
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["result"]["taskId"], "t1.client");
    assert_eq!(v["result"]["result"]["content"][0]["text"], "\"taskId\"");
    assert_eq!(n.load(Ordering::Relaxed), 0, "an echo is no new task");
    // A result that is not a task, or an error, passes byte for byte.
    for body in [
        &br#"{"jsonrpc":"2.0","id":5,"result":{"content":[],"taskId":"x"}}"#[..],
        br#"{"jsonrpc":"2.0","id":24,"error":{"code":-32602,"message":"Task abc not found"}}"#,
        b"not json \"taskId\"",
    ] {
        let out = run(&mut rewriter(false, None, n.clone()), &[body]);
        assert_eq!(out, body);
    }
}

#[test]
fn event_streams_are_rewritten_event_by_event_and_comments_pass_at_once() {
    let n = Arc::new(AtomicUsize::new(0));
    let mut r = rewriter(true, None, n.clone());
    let mut out = Vec::new();
    r.push(b": keepalive\n\n", &mut out);
    assert_eq!(out, b": keepalive\n\n", "a comment is not held");
    out.clear();
    let progress = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n";
    r.push(progress, &mut out);
    assert_eq!(out, progress);
    out.clear();
    let event = format!("event: message\ndata: {CREATED}\n\n");
    let (a, b) = event.as_bytes().split_at(30);
    r.push(a, &mut out);
    assert!(out.is_empty(), "half an event is held");
    r.push(b, &mut out);
    r.finish(&mut out);
    let data = crate::forward::sse::event_data(&out).unwrap();
    let v: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(v["result"]["taskId"], "t1.sealed-abc");
    assert!(out.starts_with(b"event: message\n"));
    assert_eq!(n.load(Ordering::Relaxed), 1);
}

#[test]
fn the_request_body_gets_the_servers_id() {
    let body = br#"{"jsonrpc":"2.0","id":9,"method":"tasks/get","params":{"taskId":"t1.client","_meta":{"k":1}}}"#;
    let out = restore_body(body, "abc").unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["params"]["taskId"], "abc");
    assert_eq!(v["params"]["_meta"]["k"], 1);
    assert_eq!(v["id"], 9);
    assert!(restore_body(b"{}", "abc").is_none());
}

#[test]
fn only_the_id_changes_numbers_and_key_order_stay() {
    let n = Arc::new(AtomicUsize::new(0));
    let body = br#"{"id":18446744073709551616,"jsonrpc":"2.0","result":{"z":1.10,"taskId":"abc","big":123456789012345678901234567890,"resultType":"task"}}"#;
    let out = run(&mut rewriter(false, None, n.clone()), &[body]);
    let expected = br#"{"id":18446744073709551616,"jsonrpc":"2.0","result":{"z":1.10,"taskId":"t1.sealed-abc","big":123456789012345678901234567890,"resultType":"task"}}"#;
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(expected)
    );
    let request = br#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"tasks/update","params":{"taskId":"t1.x","inputResponses":{"k":{"n":1.50}}}}"#;
    let restored = restore_body(request, "srv \"1\"").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&restored),
        r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"tasks/update","params":{"taskId":"srv \"1\"","inputResponses":{"k":{"n":1.50}}}}"#
    );
    // A duplicated taskId is ambiguous: left alone.
    let twice =
        br#"{"jsonrpc":"2.0","id":1,"result":{"taskId":"a","taskId":"b","resultType":"task"}}"#;
    assert_eq!(run(&mut rewriter(false, None, n.clone()), &[twice]), twice);
    // An echo only for the task the request named.
    let other = br#"{"jsonrpc":"2.0","id":4,"result":{"taskId":"zzz","resultType":"complete"}}"#;
    assert_eq!(
        run(
            &mut rewriter(false, Some(("abc", "t1.c")), n.clone()),
            &[other]
        ),
        other
    );
}

#[test]
fn crlf_events_split_at_every_byte_come_out_whole() {
    let event = format!("event: message\r\ndata: {CREATED}\r\n\r\n: ping\r\n\r\n");
    let bytes = event.as_bytes();
    for at in 1..bytes.len() {
        let n = Arc::new(AtomicUsize::new(0));
        let out = run(
            &mut rewriter(true, None, n.clone()),
            &[&bytes[..at], &bytes[at..]],
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("t1.sealed-abc") && !text.contains("\"abc\""),
            "split at {at}: {text}"
        );
        assert!(text.ends_with(": ping\r\n\r\n"), "split at {at}: {text}");
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }
}

#[test]
fn an_oversized_event_passes_and_the_next_one_is_rewritten() {
    let n = Arc::new(AtomicUsize::new(0));
    let mut r = rewriter(true, None, n.clone());
    let mut out = Vec::new();
    // A large event in many small reads: scanned once (no quadratic rescans),
    // passed once it is over the bound.
    let big = format!("data: {{\"taskId\":\"{}\"}}\n\n", "x".repeat(MAX_BODY + 10));
    for chunk in big.as_bytes().chunks(1448) {
        r.push(chunk, &mut out);
    }
    assert_eq!(out.len(), big.len());
    assert_eq!(out, big.as_bytes());
    out.clear();
    let next = format!("data: {CREATED}\n\n");
    r.push(next.as_bytes(), &mut out);
    assert!(String::from_utf8_lossy(&out).contains("t1.sealed-abc"));
    // An event the stream never ends goes out at the finish as it was.
    out.clear();
    r.push(b"data: {\"par", &mut out);
    r.finish(&mut out);
    assert_eq!(out, b"data: {\"par");
}
