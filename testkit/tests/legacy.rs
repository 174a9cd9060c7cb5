//! Legacy HTTP+SSE behaviour of a replica and of `LegacyClient`.

mod common;

use common::{is_session_id, within};
use http::Method;
use mcp_tether_testkit::{send_raw, LegacyClient, Replica};
use serde_json::json;

#[tokio::test]
async fn typescript_style_flow() {
    within(async {
        let replica = Replica::builder("ts").spawn().await.expect("spawn");
        let mut client = LegacyClient::connect(&format!("{}/sse", replica.url()))
            .await
            .expect("connect");
        let id = client
            .endpoint()
            .strip_prefix("/messages?sessionId=")
            .expect("TS-style endpoint")
            .to_owned();
        assert!(is_session_id(&id), "{id}");
        assert_eq!(
            client.post_url(),
            format!("{}/messages?sessionId={id}", replica.url())
        );
        assert_eq!(replica.live_sessions(), 1);

        let init = client
            .request("initialize", json!({"protocolVersion": "2024-11-05"}))
            .await
            .expect("initialize");
        assert_eq!(init["protocolVersion"], "2024-11-05");
        assert_eq!(init["serverInfo"]["name"], "ts");
        assert_eq!(
            replica.live_sessions(),
            1,
            "initialize creates no new session"
        );
        assert_eq!(client.whoami().await.expect("whoami"), "ts");
        let slept = client
            .call_tool("sleep", json!({"ms": 1}))
            .await
            .expect("sleep");
        assert_eq!(slept["content"][0]["text"], "slept 1 ms");

        // The POST itself is answered 202 "Accepted".
        let seen = replica.requests();
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path_and_query, "/sse");
        assert_eq!(seen[1].path_and_query, format!("/messages?sessionId={id}"));
    })
    .await
}

#[tokio::test]
async fn python_style_param_and_path() {
    within(async {
        let replica = Replica::builder("py")
            .legacy_param("session_id")
            .legacy_messages_path("/messages/")
            .spawn()
            .await
            .expect("spawn");
        let client = LegacyClient::connect(&format!("{}/sse", replica.url()))
            .await
            .expect("connect");
        assert!(
            client.endpoint().starts_with("/messages/?session_id="),
            "{}",
            client.endpoint()
        );
        // Accepted without the trailing slash as well.
        let no_slash = client.post_url().replace("/messages/?", "/messages?");
        let mut client = client.with_post_url(no_slash);
        assert_eq!(client.whoami().await.expect("whoami"), "py");

        // The TS parameter name is not this server's: missing -> 400.
        let id = client.endpoint().rsplit('=').next().expect("id").to_owned();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
        let wrong_param = format!("{}/messages/?sessionId={id}", replica.url());
        let raw = send_raw(Method::POST, &wrong_param, &[], body.clone())
            .await
            .expect("send");
        assert_eq!(raw.status, 400);
        let unknown = format!("{}/messages/?session_id=0123", replica.url());
        let raw = send_raw(Method::POST, &unknown, &[], body)
            .await
            .expect("send");
        assert_eq!(raw.status, 404);
    })
    .await
}

#[tokio::test]
async fn absolute_endpoint() {
    within(async {
        let replica = Replica::builder("abs")
            .absolute_endpoint(true)
            .spawn()
            .await
            .expect("spawn");
        let mut client = LegacyClient::connect(&format!("{}/sse", replica.url()))
            .await
            .expect("connect");
        let prefix = format!("{}/messages?sessionId=", replica.url());
        assert!(
            client.endpoint().starts_with(&prefix),
            "{}",
            client.endpoint()
        );
        assert_eq!(client.post_url(), client.endpoint());
        assert_eq!(client.whoami().await.expect("whoami"), "abs");

        // Seen from another origin, the absolute endpoint is refused like SDK clients do.
        let other_origin = format!("http://localhost:{}/sse", replica.addr().port());
        let err = LegacyClient::connect(&other_origin)
            .await
            .expect_err("cross-origin endpoint");
        assert!(err.message.contains("origin"), "{err}");
    })
    .await
}

#[tokio::test]
async fn chunked_first_event_with_every_line_end() {
    within(async {
        for le in ["\n", "\r\n", "\r"] {
            let replica = Replica::builder("chunky")
                .endpoint_chunk_size(Some(1))
                .line_ending(le)
                .spawn()
                .await
                .expect("spawn");
            let mut client = LegacyClient::connect(&format!("{}/sse", replica.url()))
                .await
                .expect("connect");
            assert!(
                client.endpoint().starts_with("/messages?sessionId="),
                "{le:?}: {}",
                client.endpoint()
            );
            assert_eq!(client.whoami().await.expect("whoami"), "chunky", "{le:?}");
        }
    })
    .await
}

#[tokio::test]
async fn dropped_stream_counts_a_disconnect_and_forgets_the_session() {
    within(async {
        let replica = Replica::builder("drop").spawn().await.expect("spawn");
        let client = LegacyClient::connect(&format!("{}/sse", replica.url()))
            .await
            .expect("connect");
        let post_url = client.post_url();
        assert_eq!(replica.live_sessions(), 1);
        drop(client);
        replica.wait_disconnects(1).await;
        assert_eq!(replica.live_sessions(), 0);
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
        let raw = send_raw(Method::POST, &post_url, &[], body)
            .await
            .expect("send");
        assert_eq!(raw.status, 404);
    })
    .await
}
