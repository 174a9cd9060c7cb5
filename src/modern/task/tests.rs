use super::*;
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
fn only_a_tools_call_that_declares_the_extension_may_create_a_task() {
    let with = br#"{"params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}}}"#;
    assert!(may_create(Some("tools/call"), with));
    assert!(!may_create(Some("tools/list"), with));
    assert!(!may_create(Some("tools/call"), b"{}"));
}
