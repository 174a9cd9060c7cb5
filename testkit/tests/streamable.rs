//! Streamable HTTP behaviour of a replica, seen through the test clients and raw requests.

mod common;

use common::{is_session_id, within};
use http::Method;
use mcp_tether_testkit::{send_raw, Replica, StreamableClient};
use serde_json::{json, Value};

const SESSION_NOT_FOUND: &str =
    r#"{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}"#;

fn call(id: u64, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": {}}})
    .to_string()
}

#[tokio::test]
async fn stateful_session_flow() {
    within(async {
        let replica = Replica::builder("alpha").spawn().await.expect("spawn");
        let url = format!("{}/mcp", replica.url());
        let client = StreamableClient::connect(&url).await.expect("connect");
        let session = client.session_id().expect("session id").to_owned();
        assert!(is_session_id(&session), "{session}");
        assert_eq!(replica.live_sessions(), 1);

        assert_eq!(client.whoami().await.expect("whoami"), "alpha");
        assert_eq!(
            client.last_session_header().as_deref(),
            Some(session.as_str())
        );
        let echoed = client
            .call_tool("echo", json!({"a": [1, 2]}))
            .await
            .expect("echo");
        assert_eq!(echoed["content"][0]["text"], r#"{"a":[1,2]}"#);
        assert_eq!(
            client.request("ping", json!({})).await.expect("ping"),
            json!({})
        );
        let tools = client.request("tools/list", json!({})).await.expect("list");
        let names: Vec<&str> = tools["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(names, ["whoami", "echo", "sleep"]);
        let err = client
            .request("nope", json!({}))
            .await
            .expect_err("unknown method");
        assert!(err.message.contains("-32601"), "{err}");
        assert_eq!(err.status, Some(200));

        // Recorded in order, with headers and body.
        let seen = replica.requests();
        assert_eq!(seen.len(), 7);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path_and_query, "/mcp");
        let init: Value = serde_json::from_slice(&seen[0].body).expect("json");
        assert_eq!(init["method"], "initialize");
        assert!(seen[0].headers.get("mcp-session-id").is_none());
        assert_eq!(seen[2].headers["mcp-session-id"], session.as_str());
        assert_eq!(seen[2].headers["mcp-protocol-version"], "2025-06-18");

        // Unknown session: 404 with the TypeScript SDK's exact body; missing: 400.
        let unknown = send_raw(
            Method::POST,
            &url,
            &[
                ("content-type", "application/json"),
                ("mcp-session-id", "deadbeef"),
            ],
            call(9, "whoami"),
        )
        .await
        .expect("send");
        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.text(), SESSION_NOT_FOUND);
        let missing = send_raw(Method::POST, &url, &[], call(9, "whoami"))
            .await
            .expect("send");
        assert_eq!(missing.status, 400);
        assert!(missing.text().contains("-32000"), "{}", missing.text());

        // DELETE ends the session; the header is echoed on it too.
        assert_eq!(client.delete().await.expect("delete"), 200);
        assert_eq!(
            client.last_session_header().as_deref(),
            Some(session.as_str())
        );
        assert_eq!(replica.live_sessions(), 0);
        let gone = client.whoami().await.expect_err("deleted session");
        assert_eq!(gone.status, Some(404));
        assert_eq!(gone.body, SESSION_NOT_FOUND);
        assert_eq!(client.delete().await.expect("delete again"), 404);
    })
    .await
}

#[tokio::test]
async fn notifications_batches_and_bad_json() {
    within(async {
        let replica = Replica::builder("beta").spawn().await.expect("spawn");
        let url = format!("{}/mcp", replica.url());
        let client = StreamableClient::connect(&url).await.expect("connect");
        let session = client.session_id().expect("session").to_owned();
        let headers = [("mcp-session-id", session.as_str())];

        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled"}).to_string();
        let accepted = send_raw(Method::POST, &url, &headers, note)
            .await
            .expect("send");
        assert_eq!(accepted.status, 202);
        assert!(accepted.body.is_empty());
        assert_eq!(accepted.headers["mcp-session-id"], session.as_str());

        let batch = format!("[{},{}]", call(1, "whoami"), call(2, "nope"));
        let answered = send_raw(Method::POST, &url, &headers, batch)
            .await
            .expect("send");
        assert_eq!(answered.status, 200);
        let body: Value = serde_json::from_slice(&answered.body).expect("json");
        assert_eq!(body[0]["id"], 1);
        assert_eq!(body[0]["result"]["content"][0]["text"], "beta");
        assert_eq!(body[1]["error"]["code"], -32602);

        let bad = send_raw(Method::POST, &url, &headers, "{not json")
            .await
            .expect("send");
        assert_eq!(bad.status, 400);
        let body: Value = serde_json::from_slice(&bad.body).expect("json");
        assert_eq!(body["error"]["code"], -32700);
    })
    .await
}

#[tokio::test]
async fn stateless_mode() {
    within(async {
        let replica = Replica::builder("gamma")
            .stateless()
            .spawn()
            .await
            .expect("spawn");
        let url = format!("{}/mcp", replica.url());
        let client = StreamableClient::connect(&url).await.expect("connect");
        assert_eq!(client.session_id(), None);
        assert_eq!(client.whoami().await.expect("whoami"), "gamma");
        assert_eq!(client.last_session_header(), None);
        assert_eq!(replica.live_sessions(), 0);

        // Any request stands alone, even without ever initializing.
        let alone = send_raw(Method::POST, &url, &[], call(1, "whoami"))
            .await
            .expect("send");
        assert_eq!(alone.status, 200);
        assert!(alone.headers.get("mcp-session-id").is_none());

        for method in [Method::GET, Method::DELETE] {
            let raw = send_raw(method, &url, &[], "").await.expect("send");
            assert_eq!(raw.status, 405);
        }
        assert_eq!(client.delete().await.expect("delete"), 405);
    })
    .await
}

#[tokio::test]
async fn sse_responses_mode() {
    within(async {
        let replica = Replica::builder("delta")
            .sse_responses(true)
            .spawn()
            .await
            .expect("spawn");
        let url = format!("{}/mcp", replica.url());
        let client = StreamableClient::connect(&url).await.expect("connect");
        let session = client.session_id().expect("session").to_owned();
        assert_eq!(client.whoami().await.expect("whoami"), "delta");

        let raw = send_raw(
            Method::POST,
            &url,
            &[("mcp-session-id", session.as_str())],
            call(5, "whoami"),
        )
        .await
        .expect("send");
        assert_eq!(raw.status, 200);
        assert_eq!(raw.headers["content-type"], "text/event-stream");
        assert_eq!(raw.headers["mcp-session-id"], session.as_str());
        let text = raw.text();
        assert!(text.starts_with("event: message\ndata: {"), "{text}");
        assert!(text.ends_with("\n\n"), "{text}");
    })
    .await
}

#[tokio::test]
async fn standalone_get_stream_ends_on_delete() {
    within(async {
        let replica = Replica::builder("eps").spawn().await.expect("spawn");
        let url = format!("{}/mcp", replica.url());
        let client = StreamableClient::connect(&url).await.expect("connect");
        let mut stream = client.get_stream().await.expect("get");
        assert_eq!(stream.status(), 200);
        assert_eq!(
            stream.headers()["mcp-session-id"],
            client.session_id().expect("session")
        );
        let priming = stream
            .next_event()
            .await
            .expect("read")
            .expect("priming event");
        assert_eq!(priming.id.as_deref(), Some("0"));
        assert_eq!(priming.data, "");

        assert_eq!(client.delete().await.expect("delete"), 200);
        assert!(stream.next_event().await.expect("read").is_none());
        // Ended by the server, so not a disconnect.
        assert_eq!(replica.disconnects(), 0);

        let missing = send_raw(Method::GET, &url, &[], "").await.expect("send");
        assert_eq!(missing.status, 400);
        let unknown = send_raw(Method::GET, &url, &[("mcp-session-id", "x")], "")
            .await
            .expect("send");
        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.text(), SESSION_NOT_FOUND);
    })
    .await
}

#[tokio::test]
async fn set_fail_answers_every_route() {
    within(async {
        let replica = Replica::builder("zeta").spawn().await.expect("spawn");
        let url = format!("{}/mcp", replica.url());
        let client = StreamableClient::connect(&url).await.expect("connect");

        replica.set_fail(Some(503));
        let err = client.whoami().await.expect_err("failing");
        assert_eq!(err.status, Some(503));
        assert!(err.body.contains("injected failure"), "{err}");
        let sse = send_raw(Method::GET, &format!("{}/sse", replica.url()), &[], "")
            .await
            .expect("send");
        assert_eq!(sse.status, 503);
        assert_eq!(
            replica.request_count(),
            4,
            "failed requests are recorded too"
        );

        replica.set_fail(None);
        assert_eq!(client.whoami().await.expect("whoami"), "zeta");
    })
    .await
}
