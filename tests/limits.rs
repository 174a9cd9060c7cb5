//! Bad or hostile input gets a clear status, is counted, and hurts no one else.

mod support;

use std::time::Duration;

use http::Method;
use mcp_tether::affinity::SessionKey;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and reads until the server closes; returns what it said.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    within("server answers and closes", s.read_to_end(&mut out))
        .await
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_bodies_get_413_without_reaching_a_backend() {
    let replicas = replicas(1).await;
    let t = tether_with(
        &replicas,
        &SessionKey::generate(),
        "[limits]\nmax_request_body = 1024\n",
    )
    .await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(4000)
    );
    let resp = send_raw(
        Method::POST,
        &mcp_url(&t),
        &[("content-type", "application/json")],
        big.clone(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 413);
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["error"]["code"], -32600);

    // Chunked, so no Content-Length warns ahead: the limit still holds.
    let chunked = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let answer = raw_exchange(t.proxy_addr, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(replicas[0].request_count(), 0);

    // A client that writes its whole oversized body before reading must still
    // read the 413: Tether drains the body instead of resetting the connection.
    let pad = "x".repeat(16 << 20);
    let declared = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{pad}",
        pad.len()
    );
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    within("whole body written", s.write_all(declared.as_bytes()))
        .await
        .expect("Tether reads the body it refuses");
    let mut head = [0u8; 64];
    let n = within("413 read", s.read(&mut head))
        .await
        .expect("no reset");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );

    // A body under the limit still works.
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    assert_eq!(c.whoami().await.unwrap(), "replica-1");
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            "tether_rejected_requests_total{reason=\"body_too_large\"}"
        ),
        3.0,
        "{m}"
    );
}

#[tokio::test]
async fn oversized_heads_get_431_and_slow_heads_are_cut() {
    let replicas = replicas(1).await;
    let t = tether_with(
        &replicas,
        &SessionKey::generate(),
        "[timeouts]\nheader_read = \"300ms\"\n",
    )
    .await;
    let huge = format!(
        "GET /mcp HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = raw_exchange(t.proxy_addr, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    // Slowloris: half a head, then silence. The connection is closed.
    let answer = raw_exchange(t.proxy_addr, b"POST /mcp HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert!(!answer.contains("200 OK"));
    let garbage = raw_exchange(t.proxy_addr, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            "tether_connection_errors_total{kind=\"header_timeout\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "tether_connection_errors_total{kind=\"header_too_large\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(
        sample(&m, "tether_connection_errors_total{kind=\"parse\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(replicas[0].request_count(), 0);
    // And Tether still serves.
    StreamableClient::connect(&mcp_url(&t)).await.unwrap();
}

#[tokio::test]
async fn slow_body_gets_408() {
    let replicas = replicas(1).await;
    let t = tether_with(
        &replicas,
        &SessionKey::generate(),
        "[timeouts]\nrequest_body = \"300ms\"\n",
    )
    .await;
    let answer = raw_exchange(
        t.proxy_addr,
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"jsonrpc\"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(replicas[0].request_count(), 0);
}

#[tokio::test]
async fn slow_upstream_gets_504_and_failing_upstream_passes_its_status() {
    let replicas = replicas(1).await;
    let t = tether_with(
        &replicas,
        &SessionKey::generate(),
        "[timeouts]\nresponse = \"300ms\"\n",
    )
    .await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    replicas[0].set_delay(Duration::from_secs(5));
    let err = c.whoami().await.unwrap_err();
    assert_eq!(err.status, Some(504), "{err}");
    let body: Value = serde_json::from_str(&err.body).unwrap();
    assert_eq!(body["error"]["code"], -32603);
    assert!(body["id"].is_number(), "{body}");

    replicas[0].set_delay(Duration::ZERO);
    replicas[0].set_fail(Some(500));
    let err = c.whoami().await.unwrap_err();
    assert_eq!(err.status, Some(500));
    replicas[0].set_fail(None);
    assert_eq!(c.whoami().await.unwrap(), "replica-1");
    let m = metrics(&t).await;
    assert!(m.contains("kind=\"timeout\""), "{m}");
    assert!(m.contains("status=\"500\""), "{m}");
}

#[tokio::test]
async fn headers_cross_the_hop_as_the_rfc_says() {
    let replicas = replicas(1).await;
    let t = tether(&replicas).await;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let resp = send_raw(
        Method::POST,
        &mcp_url(&t),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer s3cret"),
            ("connection", "X-Hop"),
            ("x-hop", "1"),
            ("x-forwarded-for", "203.0.113.9"),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        init.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let seen = replicas[0].requests().pop().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer s3cret");
    assert_eq!(seen.headers["host"], t.proxy_addr.to_string().as_str());
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["mcp-protocol-version"], "2025-06-18");
    assert!(seen.headers.get("x-hop").is_none());

    // With preserve_host = false the backend sees its own authority.
    let t2 = tether_with(
        &replicas,
        &SessionKey::generate(),
        "preserve_host = false\n",
    )
    .await;
    StreamableClient::connect(&mcp_url(&t2)).await.unwrap();
    let seen = replicas[0].requests().pop().unwrap();
    assert_eq!(
        seen.headers["host"],
        replicas[0].addr().to_string().as_str()
    );
}

#[tokio::test]
async fn non_ascii_session_header_is_a_404_not_a_crash() {
    let replicas = replicas(1).await;
    let t = tether(&replicas).await;
    let answer = raw_exchange(
        t.proxy_addr,
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: \xff\xfe\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    StreamableClient::connect(&mcp_url(&t)).await.unwrap();
}

#[tokio::test]
async fn admin_answers_health_and_metrics() {
    let replicas = replicas(1).await;
    let t = tether(&replicas).await;
    let admin = t.admin_addr.unwrap();
    let health = send_raw(Method::GET, &format!("http://{admin}/healthz"), &[], "")
        .await
        .unwrap();
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let missing = send_raw(Method::GET, &format!("http://{admin}/nope"), &[], "")
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    let m = metrics(&t).await;
    for name in [
        "tether_requests_total",
        "tether_sessions_created_total",
        "tether_active_streams",
        "tether_client_connections",
    ] {
        assert!(m.contains(name), "{name} missing from:\n{m}");
    }
}
