use super::*;

const V: &[u8] = b"2026-07-28";

fn headers<'a>(method: Option<&'a str>, name: Option<&'a str>) -> Headers<'a> {
    Headers {
        version: Some(V),
        method: method.map(str::as_bytes),
        name: name.map(str::as_bytes),
    }
}

fn call(name: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{{}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#
    )
}

#[test]
fn matching_headers_pass() {
    let body = call("report_q3");
    let m = check(
        &headers(Some("tools/call"), Some("report_q3")),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(m.method.as_deref(), Some("tools/call"));
    let read =
        br#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a b"}}"#;
    assert!(check(&headers(Some("resources/read"), Some("file:///a b")), read).is_ok());
    let list = br#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
    assert!(check(&headers(Some("tools/list"), None), list).is_ok());
    let note = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
    assert!(check(&headers(Some("notifications/cancelled"), None), note).is_ok());
    let task = br#"{"jsonrpc":"2.0","id":4,"method":"tasks/get","params":{"taskId":42}}"#;
    assert!(check(&headers(Some("tasks/get"), Some("42")), task).is_ok());
    // The real tasks client sends no Mcp-Name; the real server accepts that.
    assert!(check(&headers(Some("tasks/get"), None), task).is_ok());
    // A notification needs no Mcp-Method (the revision defines none for it).
    assert!(check(&headers(None, None), note).is_ok());
}

#[test]
fn every_disagreement_is_a_mismatch() {
    let body = call("report_q3");
    let b = body.as_bytes();
    for (h, why) in [
        (
            headers(Some("tools/list"), Some("report_q3")),
            "Mcp-Method is not",
        ),
        (
            headers(None, Some("report_q3")),
            "Mcp-Name given without Mcp-Method",
        ),
        (headers(Some("tools/call"), None), "Mcp-Name is missing"),
        (
            headers(Some("tools/call"), Some("report_q4")),
            "Mcp-Name is not",
        ),
        (
            headers(Some("tools/call"), Some("REPORT_Q3")),
            "Mcp-Name is not",
        ),
        (
            Headers {
                version: None,
                ..headers(Some("tools/call"), Some("report_q3"))
            },
            "MCP-Protocol-Version is missing",
        ),
        (
            Headers {
                version: Some(b"2026-08-01"),
                ..headers(Some("tools/call"), Some("report_q3"))
            },
            "MCP-Protocol-Version is not",
        ),
    ] {
        let err = check(&h, b).unwrap_err();
        assert!(err.starts_with(why), "{h:?}: {err}");
    }
    let no_name = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#;
    assert!(check(&headers(Some("tools/call"), Some("x")), no_name).is_err());
    let task = br#"{"jsonrpc":"2.0","id":4,"method":"tasks/get","params":{"taskId":"42"}}"#;
    assert!(check(&headers(Some("tasks/get"), Some("43")), task).is_err());
}

#[test]
fn bodies_the_headers_cannot_mirror() {
    // Two `method` members: a server could read either.
    let twice = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#;
    assert!(check(&headers(Some("tools/list"), None), twice).is_err());
    // Not JSON with Mcp-Method: a mismatch; without it, the server's to answer.
    assert!(check(&headers(Some("tools/list"), None), b"{not json").is_err());
    assert!(check(&headers(None, None), b"{not json").is_ok());
    // A batch (gone in this revision) is no one message.
    assert!(check(&headers(Some("tools/list"), None), b"[]").is_err());
    // A response the client sends back has no method to mirror.
    let response = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
    assert!(check(&headers(None, None), response).is_ok());
    assert!(check(&headers(Some("tools/list"), None), response).is_err());
}

#[test]
fn numbers_compare_as_numbers() {
    assert!(same_value(b"7", &serde_json::json!(7)));
    assert!(same_value(b"7.0", &serde_json::json!(7)));
    assert!(same_value(b"-3", &serde_json::json!(-3)));
    assert!(!same_value(b"7", &serde_json::json!("07")));
    assert!(!same_value(b"07x", &serde_json::json!(7)));
    assert!(!same_value(b"true", &serde_json::json!(true)));
}

#[test]
fn what_a_hostile_client_could_route_by_is_refused() {
    // Mcp-Name alone, or on a method that names nothing: a route on the
    // name must not take it.
    let list = br#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
    assert!(check(&headers(Some("tools/list"), Some("report_x")), list).is_err());
    assert!(check(&headers(None, Some("report_x")), list).is_err());
    // `"id": null` is a request, not a notification: Mcp-Method is needed.
    let null_id =
        br#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"admin_wipe"}}"#;
    assert!(check(&headers(None, None), null_id).is_err());
    // JSON servers read and serde refuses, under a routing header.
    for body in [
        &br#"{"id":1,"method":"tools/call","params":{"name":"report_x","uri":"\ud800"}}"#[..],
        br#"{"id":1,"method":"tools/call","params":{"name":"report_x","taskId":NaN}}"#,
    ] {
        assert!(check(&headers(Some("tools/call"), Some("report_x")), body).is_err());
    }
    let deep = format!(
        r#"{{"id":1,"method":"tools/call","params":{{"name":"report_x","uri":{}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(check(
        &headers(Some("tools/call"), Some("report_x")),
        deep.as_bytes()
    )
    .is_err());
}
