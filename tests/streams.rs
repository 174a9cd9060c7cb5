//! Streams: a client disconnect reaches the backend at once; idle streams end
//! after the idle timeout, never after a total timeout.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test]
async fn dropped_legacy_stream_closes_the_upstream_stream() {
    let replicas = replicas(1).await;
    let t = tether(&replicas).await;
    let mut c = LegacyClient::connect(&sse_url(&t)).await.unwrap();
    c.whoami().await.unwrap();
    assert_eq!(replicas[0].disconnects(), 0);
    drop(c);
    within(
        "upstream sees the disconnect",
        replicas[0].wait_disconnects(1),
    )
    .await;
    // The stream gauge falls back once the body is gone.
    let id = replicas[0].url().trim_start_matches("http://").to_string();
    let series = format!("tether_active_streams{{backend=\"{id}\"}}");
    within("gauge back to 0", async {
        while sample(&metrics(&t).await, &series) != 0.0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn client_gone_during_a_slow_call_cancels_the_upstream_request() {
    // From 2026-07-28 on, closing the response stream is the cancellation
    // (before it, a close is a half-close and the call is still answered:
    // tests/robustness.rs).
    use tokio::io::AsyncWriteExt;
    let replica = Replica::builder("replica-1")
        .stateless()
        .spawn()
        .await
        .unwrap();
    let t = tether(std::slice::from_ref(&replica)).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 60_000}}})
    .to_string();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Method: tools/call\r\nMcp-Name: sleep\r\n\
         MCP-Protocol-Version: 2026-07-28\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    within("slow call reaches the replica", replica.wait_requests(1)).await;
    drop(s);
    within("upstream sees the disconnect", replica.wait_disconnects(1)).await;
}

#[tokio::test]
async fn dropped_streamable_get_stream_reaches_the_owner() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    let owner = sticky_owner(&c, 1).await;
    let r = replicas.iter().find(|r| r.name() == owner).unwrap();
    let mut stream = c.get_stream().await.unwrap();
    within("priming", stream.next_event()).await.unwrap();
    drop(stream);
    within("owner sees the disconnect", r.wait_disconnects(1)).await;
}

#[tokio::test]
async fn idle_stream_ends_after_the_idle_timeout() {
    let replicas = replicas(1).await;
    let t = tether_with(
        &replicas,
        &mcp_tether::affinity::SessionKey::generate(),
        "[timeouts]\nstream_idle = \"300ms\"\n",
    )
    .await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    let mut stream = c.get_stream().await.unwrap();
    assert!(within("priming", stream.next_event())
        .await
        .unwrap()
        .is_some());
    // The replica sends nothing more: Tether ends the stream cleanly.
    assert!(within("idle end", stream.next_event())
        .await
        .unwrap()
        .is_none());
    within("upstream closed too", replicas[0].wait_disconnects(1)).await;
    let m = metrics(&t).await;
    assert!(
        m.contains("tether_stream_idle_timeouts_total{backend="),
        "{m}"
    );
}

#[tokio::test]
async fn a_stream_that_talks_outlives_the_idle_timeout() {
    // Each call answers on the legacy stream within the idle timeout, so the
    // stream lives across many timeouts' worth of time: no total timeout.
    let replicas = replicas(1).await;
    let t = tether_with(
        &replicas,
        &mcp_tether::affinity::SessionKey::generate(),
        "[timeouts]\nstream_idle = \"1s\"\n",
    )
    .await;
    let mut c = LegacyClient::connect(&sse_url(&t)).await.unwrap();
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            c.call_tool("sleep", json!({"ms": 400}))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Ok(())
        );
    }
    assert_eq!(replicas[0].disconnects(), 0);
}
