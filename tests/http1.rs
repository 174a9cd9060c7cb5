//! HTTP/1.1 on the proxy path, over real sockets: framing both ways, request
//! smuggling defences, `Expect`, pipelining, upstream connection reuse and the
//! stale kept-alive connection race. The backends here are raw TCP scripts,
//! so each test can make a backend misbehave in exactly one way.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use mcp_tether_testkit::raw::{echo_target, exchange, find, post, read_until, After, RawBackend};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn upstream_connections_are_reused_and_a_stale_one_is_retried() {
    let keep = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![keep.url()], "").await;
    for i in 0..5 {
        // A new client connection each time: reuse is on the upstream side.
        let answer = exchange(
            t.proxy_addr,
            post(&format!("/r{i}"), "{}", "Connection: close\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(&format!("POST /r{i} HTTP/1.1")), "{answer}");
    }
    assert_eq!(
        keep.accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection for five calls"
    );

    // A backend that closes each connection after answering, without saying
    // so: the next request finds a dead pooled connection, which Tether must
    // retry on a new one instead of failing the call.
    let closing = RawBackend::start(|req| (echo_target(req).0, After::SilentClose)).await;
    let t = tether_urls(vec![closing.url()], "").await;
    for i in 0..3 {
        let answer = exchange(
            t.proxy_addr,
            post(&format!("/s{i}"), "{}", "Connection: close\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "call {i}: {answer}");
        // The backend has closed the pooled connection before the next call.
        within("the backend's close", async {
            while closing.closed.load(Ordering::SeqCst) <= i {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
    assert_eq!(closing.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(
        closing.seen().len(),
        3,
        "each call reached the backend once"
    );
    let m = metrics(&t).await;
    assert!(
        !m.contains("tether_upstream_errors_total{"),
        "no failed call: {m}"
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let both = format!(
        "{}{}",
        post("/first", "{\"a\":1}", ""),
        post("/second", "{}", "Connection: close\r\n")
    );
    let answer = exchange(t.proxy_addr, both.as_bytes()).await;
    let first = answer.find("POST /first").expect("first answered");
    let second = answer.find("POST /second").expect("second answered");
    assert!(first < second, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
}

#[tokio::test]
async fn chunked_request_bodies_reach_the_backend_with_a_length() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let request = "POST /mcp HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let answer = exchange(t.proxy_addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = backend.seen();
    let lower = seen[0].to_ascii_lowercase();
    assert!(lower.contains("content-length: 11\r\n"), "{}", seen[0]);
    assert!(!lower.contains("transfer-encoding"), "{}", seen[0]);
    assert!(seen[0].ends_with("\r\n\r\nhello world"), "{}", seen[0]);
}

#[tokio::test]
async fn ambiguous_framing_is_refused_before_any_backend() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    for (request, status) in [
        // The classic smuggling pair: which one ends the body?
        ("POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        ("POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", "400"),
        ("POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "400"),
        ("POST /mcp HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        ("POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "501"),
        ("POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
    ] {
        let answer = exchange(t.proxy_addr, request.as_bytes()).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{request:?} -> {answer}");
    }
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_connection_errors_total{kind=\"parse\"}"),
        5.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "tether_rejected_requests_total{reason=\"body_read\"}"),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_tether() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: lb\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "HTTP/1.1 100 Continue\r\n\r\n").await;
    s.write_all(body.as_bytes()).await.unwrap();
    read_until(&mut s, &mut got, "POST /mcp").await;
    let seen = backend.seen();
    assert!(
        !seen[0].to_ascii_lowercase().contains("expect"),
        "{}",
        seen[0]
    );
    assert!(seen[0].ends_with(body), "{}", seen[0]);
}

/// A backend whose responses need re-framing: chunked, close-delimited, HEAD.
fn reframing(request: &str) -> (Vec<u8>, After) {
    let line = request.lines().next().unwrap_or("");
    let bytes: &[u8] = if line.starts_with("GET /chunked") {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\n\r\n"
    } else if line.starts_with("HEAD") {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\r\n"
    } else {
        // No length at all: the body runs until the backend closes.
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close".to_vec(),
            After::SilentClose,
        );
    };
    (bytes.to_vec(), After::KeepOpen)
}

#[tokio::test]
async fn responses_are_reframed_for_each_client() {
    let backend = RawBackend::start(reframing).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    let mut got = Vec::new();
    // HTTP/1.1: both bodies arrive chunked, on one kept-alive connection.
    s.write_all(b"GET /chunked HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, &mut got, "0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked\r\n"),
        "{text}"
    );
    assert!(
        text.contains("3\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\n\r\n"),
        "{text}"
    );
    got.clear();
    s.write_all(b"GET /close HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, &mut got, "0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.contains("b\r\nuntil close\r\n0\r\n\r\n"), "{text}");
    got.clear();
    // HEAD: the length describes the body it does not have.
    s.write_all(b"HEAD /x HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    within("HEAD answered", s.read_to_end(&mut got))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.contains("Content-Length: 1234\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "no body after a HEAD answer: {text}"
    );

    // HTTP/1.0 knows no chunks: the body ends when Tether closes.
    let answer = exchange(t.proxy_addr, b"GET /chunked HTTP/1.0\r\nHost: lb\r\n\r\n").await;
    assert!(answer.ends_with("\r\n\r\n{\"a\":1}\n"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("transfer-encoding"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_body_cut_by_the_backend_is_cut_for_the_client() {
    let backend = RawBackend::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":".to_vec(),
            After::SilentClose,
        )
    })
    .await;
    let t = tether_urls(vec![backend.url()], "").await;
    let answer = exchange(t.proxy_addr, post("/mcp", "{}", "").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("content-length: 100\r\n"), "{answer}");
    assert!(
        answer.ends_with("{\"partial\":"),
        "the client sees a short body: {answer}"
    );
    let m = metrics(&t).await;
    let series = format!(
        "tether_upstream_errors_total{{backend=\"{}\",kind=\"io\"}}",
        backend.addr
    );
    assert_eq!(sample(&m, &series), 1.0, "{m}");
}

#[tokio::test]
async fn a_head_trickled_byte_by_byte_is_read() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    // Every split of the empty line that ends the head happens on the way.
    for byte in post("/slow", "{}", "Connection: close\r\n").as_bytes() {
        s.write_all(std::slice::from_ref(byte)).await.unwrap();
        // Pacing, not synchronisation: each byte its own segment, so its own read.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut out = Vec::new();
    within("answer", s.read_to_end(&mut out)).await.unwrap();
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("POST /slow"), "{answer}");
}

#[tokio::test]
async fn bytes_a_backend_sends_unasked_never_reach_the_next_client() {
    let backend = RawBackend::start(|req| (echo_target(req).0, After::LateBytes)).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let first = exchange(
        t.proxy_addr,
        post("/a", "{}", "Connection: close\r\n").as_bytes(),
    )
    .await;
    assert!(first.contains("POST /a"), "{first}");
    within("the late bytes written", async {
        while backend.late_sent.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let second = exchange(
        t.proxy_addr,
        post("/b", "{}", "Connection: close\r\n").as_bytes(),
    )
    .await;
    assert!(
        second.contains("POST /b"),
        "the second client gets its own answer: {second}"
    );
    assert!(!second.contains("LATE!"), "{second}");
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        2,
        "the dirty connection was dropped"
    );
}

#[tokio::test]
async fn a_request_the_backend_received_is_never_sent_twice() {
    // The backend takes the request on a kept-alive connection, then closes
    // without answering: it may have acted on it, so Tether must not replay it.
    let backend = RawBackend::start(|req| {
        if req.starts_with("POST /close-me") {
            (Vec::new(), After::SilentClose)
        } else {
            echo_target(req)
        }
    })
    .await;
    let t = tether_urls(vec![backend.url()], "").await;
    let warm = exchange(
        t.proxy_addr,
        post("/warm", "{}", "Connection: close\r\n").as_bytes(),
    )
    .await;
    assert!(warm.starts_with("HTTP/1.1 200"), "{warm}");
    let answer = exchange(
        t.proxy_addr,
        post("/close-me", "{}", "Connection: close\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let replays = backend
        .seen()
        .iter()
        .filter(|r| r.starts_with("POST /close-me"))
        .count();
    assert_eq!(replays, 1, "{:?}", backend.seen());
}

/// An event stream whose length was promised, then silence.
fn promised_stream(_: &str) -> (Vec<u8>, After) {
    (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 100\r\n\r\ndata: x\n\n".to_vec(),
        After::KeepOpen,
    )
}

#[tokio::test]
async fn an_idle_stream_with_a_promised_length_is_cut_not_ended() {
    let backend = RawBackend::start(promised_stream).await;
    let t = tether_urls(
        vec![backend.url()],
        "[timeouts]\nstream_idle = \"300ms\"\nheader_read = \"60s\"\n",
    )
    .await;
    // Kept alive: if Tether ended this body "cleanly" the client would wait
    // for 91 more bytes on a connection that stays open.
    let answer = exchange(t.proxy_addr, post("/mcp", "{}", "").as_bytes()).await;
    assert!(answer.contains("content-length: 100\r\n"), "{answer}");
    assert!(answer.ends_with("data: x\n\n"), "{answer}");
    let m = metrics(&t).await;
    let series = format!(
        "tether_stream_idle_timeouts_total{{backend=\"{}\"}}",
        backend.addr
    );
    assert_eq!(sample(&m, &series), 1.0, "{m}");
}

#[tokio::test]
async fn a_client_leaving_during_a_large_request_releases_the_backend() {
    let backend = RawBackend::start(|_| (Vec::new(), After::Hang)).await;
    let t = tether_urls(vec![backend.url()], "").await;
    // A body larger than the head limit: the client's buffer is full of the
    // request being answered, which must not stop Tether watching the client.
    // (A 2026-07-28 request: closing the connection cancels it. Before that
    // revision a close is a half-close and the request goes on;
    // tests/robustness.rs covers both.)
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"pad\",\"arguments\":{{\"pad\":\"{}\"}}}}}}",
        "x".repeat(100_000)
    );
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    let modern = "Mcp-Method: tools/call\r\nMcp-Name: pad\r\nMCP-Protocol-Version: 2026-07-28\r\n";
    s.write_all(post("/mcp", &body, modern).as_bytes())
        .await
        .unwrap();
    within("request reaches the backend", async {
        while backend.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    drop(s);
    within("backend connection closed", async {
        while backend.closed.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_backend_answering_before_the_body_is_read_is_heard() {
    // A backend that refuses a large body from its head alone and never
    // reads the rest: its 413 must reach the client, not a timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while find(&head, b"\r\n\r\n").is_none() {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            head.extend_from_slice(&chunk[..n]);
        }
        let refusal = b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: 14\r\nconnection: close\r\n\r\n{\"error\":\"no\"}";
        s.write_all(refusal).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await; // holds the socket, reads nothing
    });
    let t = tether_urls(
        vec![format!("http://{addr}")],
        "[limits]\nmax_request_body = 33554432\n[timeouts]\nresponse = \"5s\"\n",
    )
    .await;
    let body = "x".repeat(16 << 20);
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    let (mut rd, mut wr) = s.split();
    let request = post("/mcp", &body, "Connection: close\r\n");
    let write = async {
        // Tether stops reading once it has the backend's answer: a write error is fine.
        let _ = wr.write_all(request.as_bytes()).await;
    };
    let read = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let (_, answer) = within("answer", async { tokio::join!(write, read) }).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
}
