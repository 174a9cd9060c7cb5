//! Kill, disconnect accounting and injected delays.

mod common;

use std::time::Duration;

use common::within;
use mcp_tether_testkit::{LegacyClient, Replica, StreamableClient};
use serde_json::json;
use tokio::net::TcpStream;

#[tokio::test]
async fn kill_refuses_new_connections_and_ends_open_streams() {
    within(async {
        let replica = Replica::builder("k").spawn().await.expect("spawn");
        let mut legacy = LegacyClient::connect(&format!("{}/sse", replica.url()))
            .await
            .expect("connect");
        let streamable = StreamableClient::connect(&format!("{}/mcp", replica.url()))
            .await
            .expect("connect");
        assert_eq!(streamable.whoami().await.expect("whoami"), "k");

        replica.kill();
        let refused = TcpStream::connect(replica.addr())
            .await
            .expect_err("killed");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(legacy.whoami().await.is_err());
        assert_eq!(streamable.whoami().await.expect_err("killed").status, None);
        assert_eq!(replica.live_sessions(), 0);
    })
    .await
}

#[tokio::test]
async fn dropping_the_replica_kills_it() {
    within(async {
        let replica = Replica::builder("d").spawn().await.expect("spawn");
        let addr = replica.addr();
        drop(replica);
        assert!(TcpStream::connect(addr).await.is_err());
    })
    .await
}

#[tokio::test]
async fn dropped_get_stream_is_a_disconnect() {
    within(async {
        let replica = Replica::builder("g").spawn().await.expect("spawn");
        let client = StreamableClient::connect(&format!("{}/mcp", replica.url()))
            .await
            .expect("connect");
        let mut stream = client.get_stream().await.expect("get");
        stream.next_event().await.expect("read").expect("priming");
        drop(stream);
        replica.wait_disconnects(1).await;
        assert_eq!(replica.disconnects(), 1);
        assert_eq!(
            replica.live_sessions(),
            1,
            "the session outlives its GET stream"
        );
    })
    .await
}

#[tokio::test]
async fn abandoned_sleep_call_is_a_disconnect() {
    within(async {
        for sse in [false, true] {
            let replica = Replica::builder("s")
                .sse_responses(sse)
                .spawn()
                .await
                .expect("spawn");
            let client = StreamableClient::connect(&format!("{}/mcp", replica.url()))
                .await
                .expect("connect");
            // initialize + notifications/initialized, then the call.
            assert_eq!(replica.request_count(), 2);
            let call =
                tokio::spawn(
                    async move { client.call_tool("sleep", json!({"ms": 600_000})).await },
                );
            replica.wait_requests(3).await;
            call.abort();
            replica.wait_disconnects(1).await;
            assert_eq!(replica.disconnects(), 1);
        }
    })
    .await
}

#[tokio::test]
async fn abandoned_delayed_answer_is_a_disconnect() {
    within(async {
        let replica = Replica::builder("slow").spawn().await.expect("spawn");
        let client = StreamableClient::connect(&format!("{}/mcp", replica.url()))
            .await
            .expect("connect");
        replica.set_delay(Duration::from_secs(600));
        let call = tokio::spawn(async move { client.whoami().await });
        replica.wait_requests(3).await;
        call.abort();
        replica.wait_disconnects(1).await;

        replica.set_delay(Duration::ZERO);
        let client = StreamableClient::connect(&format!("{}/mcp", replica.url()))
            .await
            .expect("connect");
        assert_eq!(client.whoami().await.expect("whoami"), "slow");
        assert_eq!(replica.disconnects(), 1);
    })
    .await
}
