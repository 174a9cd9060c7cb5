//! What hostile clients and misbehaving backends found (issue 8), each over
//! real sockets against a raw backend that misbehaves in exactly one way,
//! each asserting what would break if the defence went.

mod support;

use std::time::Duration;

use mcp_tether_testkit::raw::{
    echo_target, exchange, post, read_to_close, read_until, After, RawBackend, RawOptions,
};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A raw backend answering `status_line` with a small JSON body.
fn answer_with(status_line: &'static str) -> impl Fn(&str) -> (Vec<u8>, After) {
    move |_| {
        let r = format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        (r.into_bytes(), After::KeepOpen)
    }
}

#[tokio::test]
async fn status_lines_without_a_reason_or_with_obs_text_are_relayed() {
    for (line, relayed) in [
        ("HTTP/1.1 200", "HTTP/1.1 200 \r\n"),
        (
            "HTTP/1.1 200 Tr\u{e8}s bien",
            "HTTP/1.1 200 Tr\u{e8}s bien\r\n",
        ),
        ("HTTP/1.1 404 \u{fc}berall", "HTTP/1.1 404 \u{fc}berall\r\n"),
    ] {
        let backend = RawBackend::start(answer_with(line)).await;
        let t = tether_urls(vec![backend.url()], "").await;
        let answer = exchange(
            t.proxy_addr,
            post("/mcp", "{}", "Connection: close\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with(relayed), "{line:?} -> {answer:?}");
        assert!(answer.ends_with("\r\n\r\n{}"), "{answer:?}");
        let m = metrics(&t).await;
        assert_eq!(sample(&m, "tether_internal_errors_total"), 0.0, "{m}");
    }
}

#[tokio::test]
async fn bytes_after_a_head_answer_never_reach_the_next_request() {
    // The backend answers HEAD with a length, then sends those bytes anyway:
    // a connection like that is not trusted with the next request, even one
    // that follows at once (pipelined, so no reactor turn sees the bytes).
    let backend = RawBackend::start(|req| {
        if req.starts_with("HEAD") {
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec();
            let late = After::Late {
                bytes: b"LATE!".to_vec(),
                delay: Duration::from_millis(20),
            };
            (head, late)
        } else {
            echo_target(req)
        }
    })
    .await;
    let t = tether_urls(vec![backend.url()], "").await;
    let both = "HEAD /h HTTP/1.1\r\nHost: lb\r\n\r\nGET /next HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    let answer = exchange(t.proxy_addr, both.as_bytes()).await;
    assert!(
        answer.contains("GET /next HTTP/1.1"),
        "the second request got its own answer: {answer}"
    );
    assert!(!answer.contains("LATE!"), "{answer}");
    assert_eq!(
        backend.accepted(),
        2,
        "the doubtful connection was not reused"
    );
}

#[tokio::test]
async fn a_url_inside_a_query_is_not_an_absolute_target() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let target = "/authorize?redirect_uri=http://h/cb&state=1";
    let request = format!("GET {target} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
    let answer = exchange(t.proxy_addr, request.as_bytes()).await;
    assert!(
        answer.contains(&format!("GET {target} HTTP/1.1")),
        "{answer}"
    );
    assert_eq!(backend.seen().len(), 1);
    assert!(backend.seen()[0].starts_with(&format!("GET {target} HTTP/1.1\r\n")));
}

#[tokio::test]
async fn a_legacy_session_before_a_url_in_the_query_stays_on_its_owner() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    let c = LegacyClient::connect(&sse_url(&t)).await.unwrap();
    let url = format!("{}&next=http://elsewhere/cb", c.post_url());
    let mut c = c.with_post_url(url);
    let owner = c.whoami().await.unwrap();
    for _ in 0..4 {
        assert_eq!(c.whoami().await.unwrap(), owner, "re-balanced");
    }
}

/// A raw backend that opens a legacy stream naming the session `RAW-ID`,
/// and answers every POST 202.
fn legacy_backend(req: &str) -> (Vec<u8>, After) {
    if req.starts_with("GET /sse") {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: endpoint\ndata: /messages?session_id=RAW-ID\n\n".to_vec();
        (head, After::Hang)
    } else {
        (
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_vec(),
            After::KeepOpen,
        )
    }
}

/// The legacy endpoint URL Tether hands a client for `legacy_backend`.
async fn legacy_endpoint(t: &mcp_tether::Running) -> (TcpStream, String) {
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "\n\n").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("endpoint event")
        .to_owned();
    assert!(
        !url.contains("RAW-ID") && url.contains("session_id=t2."),
        "{url}"
    );
    (s, url)
}

#[tokio::test]
async fn no_raw_session_reference_reaches_a_backend() {
    let backend = RawBackend::start(legacy_backend).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let (_stream, url) = legacy_endpoint(&t).await;
    let token = url.split("session_id=").nth(1).unwrap().to_owned();
    // The real one works, with the server's id restored.
    let ok = exchange(
        t.proxy_addr,
        post(&url, "{}", "Connection: close\r\n").as_bytes(),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 202"), "{ok}");
    let spellings = [
        "/messages?session%5Fid=RAW-ID".to_owned(),
        "/messages?sessionI%64=RAW-ID".to_owned(),
        format!("/messages?session_id={token}&session_id=RAW-ID"),
        format!("/messages?session_id={token}&session%5fid=RAW-ID"),
        format!("/messages?session_id={token}&sessionId=RAW-ID"),
        "/messages?sessionId[]=RAW-ID".to_owned(),
        "/messages?sessionId%5B%5D=RAW-ID".to_owned(),
        format!("/messages?session_id={token};session_id=RAW-ID"),
        "/messages?x=1;session_id=RAW-ID".to_owned(),
    ];
    for target in &spellings {
        let answer = exchange(
            t.proxy_addr,
            post(target, "{\"id\":3}", "Connection: close\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{target}: {answer}");
        assert!(
            answer.contains(r#""code":-32001"#) && answer.contains(r#""id":3"#),
            "{answer}"
        );
    }
    // A header token together with a query reference, and two headers.
    for extra in [
        "Mcp-Session-Id: t1.whatever\r\n".to_owned(),
        format!("Mcp-Session-Id: {token}\r\nMcp-Session-Id: RAW-ID\r\n"),
    ] {
        let target = if extra.contains("RAW") {
            "/mcp".to_owned()
        } else {
            url.clone()
        };
        let answer = exchange(
            t.proxy_addr,
            post(&target, "{}", &format!("{extra}Connection: close\r\n")).as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{extra}: {answer}");
    }
    let posts: Vec<String> = backend
        .seen()
        .into_iter()
        .filter(|r| r.starts_with("POST"))
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "only the real request reached the backend: {posts:#?}"
    );
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_invalid_tokens_total{reason=\"ambiguous\"}"),
        9.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_half_closed_client_is_answered_then_closed() {
    // The backend answers after a while, so the client's FIN arrives first.
    let backend = RawBackend::start(|req| {
        let (bytes, _) = echo_target(req);
        (
            Vec::new(),
            After::Late {
                bytes,
                delay: Duration::from_millis(150),
            },
        )
    })
    .await;
    let t = tether_urls(vec![backend.url()], "").await;
    for version in ["1.1", "1.0"] {
        let request =
            format!("POST /mcp HTTP/{version}\r\nHost: lb\r\nContent-Length: 2\r\n\r\n{{}}");
        let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap(); // what `nc -N` does
        let answer = read_to_close(&mut s).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "HTTP/{version}: {answer:?}"
        );
        assert!(answer.contains("POST /mcp HTTP/1.1"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("connection: close\r\n"),
            "{answer}"
        );
    }
}

/// Waits until the backend has a request.
async fn seen_by(backend: &RawBackend) {
    within("request reaches the backend", async {
        while backend.seen().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Waits until Tether has closed a connection to the backend.
async fn closed_by_tether(backend: &RawBackend) {
    within("backend connection closed", async {
        while backend.closed() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A backend that never answers; `closed()` counts the connections Tether closed.
fn silent(_: &str) -> (Vec<u8>, After) {
    (Vec::new(), After::Hang)
}

#[tokio::test]
async fn a_modern_client_that_closes_cancels_its_request_at_once() {
    let backend = RawBackend::start(silent).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let modern = "Mcp-Method: tools/call\r\nMcp-Name: slow\r\nMCP-Protocol-Version: 2026-07-28\r\n";
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}"#;
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(post("/mcp", call, modern).as_bytes())
        .await
        .unwrap();
    seen_by(&backend).await;
    s.shutdown().await.unwrap();
    closed_by_tether(&backend).await;
}

#[tokio::test]
async fn a_client_that_resets_releases_its_backend_in_any_era() {
    let backend = RawBackend::start(silent).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let s = TcpStream::connect(t.proxy_addr).await.unwrap();
    let mut s = s;
    s.write_all(post("/mcp", "{}", "").as_bytes())
        .await
        .unwrap();
    seen_by(&backend).await;
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s); // a reset, not a half-close
    closed_by_tether(&backend).await;
}

/// Sends the head of a POST declaring `len` bytes, and `sent` of them.
async fn slow_body(t: &mcp_tether::Running, len: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    let head = format!("POST /mcp HTTP/1.1\r\nHost: lb\r\nContent-Length: {len}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; sent]).await.unwrap();
    s
}

async fn wait_metric(t: &mcp_tether::Running, series: &str, at_least: f64) {
    within(series, async {
        while sample(&metrics(t).await, series) < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn slow_bodies_wait_for_the_body_budget_and_get_it_back() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        "[limits]\nmax_request_body = 131072\nmax_held_body_bytes = 262144\n[timeouts]\nrequest_body = \"20s\"\n",
    )
    .await;
    let body = 128 * 1024;
    let mut first = slow_body(&t, body, 100 * 1024).await;
    let mut second = slow_body(&t, body, 100 * 1024).await;
    wait_metric(&t, "tether_held_body_bytes", 262144.0).await;
    // The budget is spent: the third waits (TCP holds its bytes back).
    let mut third = slow_body(&t, body, 100 * 1024).await;
    wait_metric(&t, "tether_body_budget_waits_total", 1.0).await;
    first
        .write_all(&vec![b' '; body - 100 * 1024])
        .await
        .unwrap();
    let answer = read_to_close_or_first(&mut first).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The first's budget went to the third.
    for s in [&mut second, &mut third] {
        s.write_all(&vec![b' '; body - 100 * 1024]).await.unwrap();
        let answer = read_to_close_or_first(s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    drop((first, second, third));
    within("budget given back", async {
        while sample(&metrics(&t).await, "tether_held_body_bytes") != 0.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Reads one response (head and a small body) from a kept-alive connection.
async fn read_to_close_or_first(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    read_until(s, &mut got, "}").await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_body_that_finds_no_budget_by_its_deadline_gets_503() {
    // The holder's whole body waits with a slow backend: its budget is held
    // for the exchange too (the bytes are still in memory).
    let backend = RawBackend::start(|req| {
        let (bytes, _) = echo_target(req);
        (
            Vec::new(),
            After::Late {
                bytes,
                delay: Duration::from_secs(5),
            },
        )
    })
    .await;
    let t = tether_urls(
        vec![backend.url()],
        "[limits]\nmax_request_body = 131072\nmax_held_body_bytes = 131072\n[timeouts]\nrequest_body = \"700ms\"\n",
    )
    .await;
    let _holder = slow_body(&t, 131072, 131072).await;
    wait_metric(&t, "tether_held_body_bytes", 131072.0).await;
    let mut late = slow_body(&t, 131072, 100 * 1024).await;
    let answer = read_to_close(&mut late).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains(r#""code":-32603"#), "{answer}");
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_rejected_requests_total{reason=\"body_budget\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(backend.seen().len(), 1, "only the holder's request");
}

#[tokio::test]
async fn trailers_must_be_header_fields() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    for trailer in ["GET /smuggled HTTP/1.1\r\n", "No colon\r\n", "X-A : 1\r\n"] {
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n{trailer}\r\n"
        );
        let answer = exchange(t.proxy_addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{trailer:?}: {answer}");
    }
    let ok = "POST /mcp HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\nX-Checksum: abc\r\n\r\n";
    assert!(exchange(t.proxy_addr, ok.as_bytes())
        .await
        .starts_with("HTTP/1.1 200"));
    assert_eq!(backend.seen().len(), 1, "{:?}", backend.seen());
}

#[tokio::test]
async fn host_is_required_once_and_an_absolute_target_replaces_it() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    for request in [
        "GET /mcp HTTP/1.1\r\n\r\n",
        "GET /mcp HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET /mcp HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /m#frag HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let answer = exchange(t.proxy_addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{request:?}: {answer}");
        assert!(answer.contains(r#""code":-32600"#), "{answer}");
    }
    assert!(backend.seen().is_empty());
    let absolute =
        "GET http://lb.example:8080/x?y=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n";
    let answer = exchange(t.proxy_addr, absolute.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = backend.seen();
    assert!(
        seen[0].starts_with("GET /x?y=1 HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[0].contains("host: lb.example:8080\r\n"), "{}", seen[0]);
    assert!(!seen[0].contains("other"), "{}", seen[0]);
}

#[tokio::test]
async fn a_learned_keep_alive_timeout_stops_reuse_before_the_backend_closes() {
    // The backend announces 1 s, and (as if its timer fired a moment early)
    // drops any request on a connection idle 600 ms or more. Tether keeps
    // such a connection 500 ms (half the announced time, for so short a one).
    let options = RawOptions {
        idle_close: Some(Duration::from_millis(600)),
    };
    let backend = RawBackend::start_with(options, |req| {
        let line = req.lines().next().unwrap_or("");
        let body = format!("{{\"line\":\"{line}\"}}");
        let r = format!(
            "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        (r.into_bytes(), After::KeepOpen)
    })
    .await;
    let t = tether_urls(vec![backend.url()], "").await;
    for i in 0..4 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(700)).await; // the idle gap itself
        }
        let answer = exchange(
            t.proxy_addr,
            post(&format!("/r{i}"), "{}", "Connection: close\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
    }
    assert_eq!(
        backend.accepted(),
        4,
        "a fresh connection after each idle gap"
    );
    let m = metrics(&t).await;
    assert!(!m.contains("tether_upstream_errors_total{"), "{m}");
}

#[tokio::test]
async fn an_invalid_session_id_from_a_backend_is_neither_sealed_nor_counted() {
    for (value, relayed) in [
        ("", "Mcp-Session-Id: \r\n"),
        ("a b", "Mcp-Session-Id: a b\r\n"),
    ] {
        let backend = RawBackend::start(move |_| {
            let r = format!(
                "HTTP/1.1 200 OK\r\nMcp-Session-Id: {value}\r\ncontent-length: 2\r\n\r\n{{}}"
            );
            (r.into_bytes(), After::KeepOpen)
        })
        .await;
        let t = tether_urls(vec![backend.url()], "").await;
        let answer = exchange(
            t.proxy_addr,
            post("/mcp", "{}", "Connection: close\r\n").as_bytes(),
        )
        .await;
        assert!(answer.contains(relayed), "{value:?}: {answer}");
        assert!(!answer.contains("t2."), "{answer}");
        let m = metrics(&t).await;
        assert!(!m.contains("tether_sessions_created_total{"), "{m}");
        let series = format!(
            "tether_invalid_upstream_session_ids_total{{backend=\"{}\"}}",
            backend.addr
        );
        assert_eq!(sample(&m, &series), 1.0, "{m}");
    }
}

#[tokio::test]
async fn later_http1_versions_are_served_and_other_majors_refused() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let answer = exchange(
        t.proxy_addr,
        b"GET /v HTTP/1.2\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(backend.seen()[0].starts_with("GET /v HTTP/1.1\r\n"));
    let answer = exchange(t.proxy_addr, b"GET /v HTTP/2.0\r\nHost: lb\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
}

#[tokio::test]
async fn the_admin_listener_has_the_proxy_head_limits() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let admin = t.admin_addr.unwrap();
    let smuggle = b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = exchange(admin, smuggle).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(400 * 1024)
    );
    let mut s = TcpStream::connect(admin).await.unwrap();
    let _ = s.write_all(big.as_bytes()).await; // it may stop reading
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
}

#[tokio::test]
async fn a_first_event_past_the_scan_limit_is_not_rewritten_even_in_one_read() {
    // 20 KiB of comment, then the endpoint event, all in one write.
    let backend = RawBackend::start(|_| {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n".to_vec();
        r.extend_from_slice(format!(": {}\n", "x".repeat(20 * 1024)).as_bytes());
        r.extend_from_slice(b"event: endpoint\ndata: /messages?sessionId=RAW\n\n");
        (r, After::Hang)
    })
    .await;
    let t = tether_urls(vec![backend.url()], "").await;
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "RAW\n\n").await;
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_sse_first_events_total{result=\"too_large\"}"),
        1.0,
        "{m}"
    );
}

// ---- found in review ----

#[tokio::test]
async fn a_client_that_stops_reading_tethers_own_answers_is_let_go() {
    // It pipelines requests Tether answers itself (404s) and never reads:
    // Tether's writes to it are bounded by the head read timeout.
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "[timeouts]\nheader_read = \"500ms\"\n").await;
    // A small receive window, set before connecting (after, it does not shrink).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut s = socket.connect(t.proxy_addr).await.unwrap();
    let bogus = "GET /mcp HTTP/1.1\r\nHost: lb\r\nMcp-Session-Id: bogus\r\n\r\n".repeat(1000);
    within("Tether lets the connection go", async {
        while s.write_all(bogus.as_bytes()).await.is_ok() {}
    })
    .await;
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn a_request_answered_with_an_interim_response_is_never_replayed() {
    use tokio::net::TcpListener;
    // The backend answers the first request, then on the reused connection
    // reads the second, sends 103, and resets: it read it, so no replay.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(req) = mcp_tether_testkit::raw::read_request(&mut s, &mut buf).await
                {
                    let line = req.lines().next().unwrap_or("").to_owned();
                    log.lock().unwrap().push(line.clone());
                    if line.starts_with("POST /second") {
                        let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\n\r\n").await;
                        socket2::SockRef::from(&s)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                        return; // dropped: a reset
                    }
                    let (bytes, _) = echo_target(&req);
                    let _ = s.write_all(&bytes).await;
                }
            });
        }
    });
    let t = tether_urls(vec![format!("http://{addr}")], "").await;
    let first = exchange(
        t.proxy_addr,
        post("/first", "{}", "Connection: close\r\n").as_bytes(),
    )
    .await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = exchange(
        t.proxy_addr,
        post("/second", "{}", "Connection: close\r\n").as_bytes(),
    )
    .await;
    assert!(second.starts_with("HTTP/1.1 502"), "{second}");
    let times = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("POST /second"))
        .count();
    assert_eq!(times, 1, "{:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn tethers_own_answers_to_head_have_no_body() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let two = "HEAD /mcp HTTP/1.1\r\nHost: lb\r\nMcp-Session-Id: bogus\r\n\r\n\
               HEAD /mcp HTTP/1.1\r\nHost: lb\r\nMcp-Session-Id: bogus\r\nConnection: close\r\n\r\n";
    let answer = exchange(t.proxy_addr, two.as_bytes()).await;
    let heads: Vec<&str> = answer.split("\r\n\r\n").collect();
    assert_eq!(heads.len(), 3, "two heads, nothing after: {answer:?}");
    assert!(
        heads[0].starts_with("HTTP/1.1 404") && heads[0].contains("content-length: "),
        "{answer:?}"
    );
    assert!(
        heads[1].starts_with("HTTP/1.1 404"),
        "the second answer starts right after the first head: {answer:?}"
    );
    assert_eq!(heads[2], "");
}

#[tokio::test]
async fn bodies_waiting_for_the_budget_do_not_starve_each_other() {
    // Found in review: each body held part of the budget while waiting for
    // more, so two that would fit one after the other both timed out.
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        "[limits]\nmax_request_body = 131072\nmax_held_body_bytes = 196608\n[timeouts]\nrequest_body = \"20s\"\n",
    )
    .await;
    let mut a = slow_body(&t, 131072, 65536).await;
    wait_metric(&t, "tether_held_body_bytes", 131072.0).await;
    let mut b = slow_body(&t, 131072, 65536).await;
    wait_metric(&t, "tether_body_budget_waits_total", 1.0).await;
    for s in [&mut a, &mut b] {
        s.write_all(&vec![b' '; 65536]).await.unwrap();
    }
    for s in [&mut a, &mut b] {
        let answer = read_to_close_or_first(s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[tokio::test]
async fn a_half_closed_client_that_then_resets_releases_its_stream() {
    let backend = RawBackend::start(|_| {
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: hello\n\n".to_vec();
        (head, After::Hang)
    })
    .await;
    let t = tether_urls(vec![backend.url()], "").await;
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "data: hello").await;
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    closed_by_tether(&backend).await;
}

#[tokio::test]
async fn field_names_spelled_with_underscores_for_ones_tether_reads_are_refused() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    for field in [
        "Mcp_Session_Id: RAW",
        "Content_Length: 5",
        "Transfer_Encoding: chunked",
        "X_Forwarded_For: 1.2.3.4",
    ] {
        let request = format!(
            "POST /messages HTTP/1.1\r\nHost: lb\r\n{field}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let answer = exchange(t.proxy_addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{field}: {answer}");
    }
    let ok = post("/mcp", "{}", "X_Custom_Thing: 1\r\nConnection: close\r\n");
    assert!(exchange(t.proxy_addr, ok.as_bytes())
        .await
        .starts_with("HTTP/1.1 200"));
    assert_eq!(backend.seen().len(), 1);
}

#[tokio::test]
async fn the_admin_listener_answers_expect_continue() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let mut s = TcpStream::connect(t.admin_addr.unwrap()).await.unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "HTTP/1.1 100 Continue\r\n\r\n").await;
    s.write_all(b"{}").await.unwrap();
    let rest = read_to_close(&mut s).await;
    assert!(rest.contains("HTTP/1.1 405"), "{rest}");
}
