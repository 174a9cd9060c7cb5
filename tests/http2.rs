//! HTTP/2 from clients: every flow over one h2 connection (sessions, a held
//! legacy stream, 2026-07-28 validation, DELETE), a reset stream cancelling
//! its upstream request, flow control that stalls only the slow stream, a
//! rapid-reset flood answered with GOAWAY while other clients are served,
//! GOAWAY on a graceful shutdown, h2c with prior knowledge, and curl.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use mcp_tether_testkit::raw::{echo_target, After, RawBackend};
use support::pki::{self, Ca};
use support::*;

type H2 = h2::client::SendRequest<Bytes>;

fn tls_toml(cert: &pki::Issued) -> String {
    format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.cert.display().to_string(),
        cert.key.display().to_string()
    )
}

/// An h2 connection over TLS (ALPN h2), its driver spawned.
async fn h2_tls(ca: &Ca, addr: std::net::SocketAddr) -> H2 {
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates({
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        roots
    })
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Windows as browsers and curl set them: a stream's 64 KiB, the
    // connection's much larger, so one unread stream cannot stall the rest.
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(64 << 10)
        .initial_connection_window_size(16 << 20)
        .handshake(tls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// An h2c connection (prior knowledge) to a plain listener.
async fn h2c(addr: std::net::SocketAddr) -> H2 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

/// Sends a request on its own stream and reads the whole answer.
async fn call(h2: &H2, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut h2 = h2.clone().ready().await.unwrap();
    let (response, mut send) = h2
        .send_request(req.body(()).unwrap(), body.is_empty())
        .unwrap();
    if !body.is_empty() {
        send.send_data(Bytes::from(body.to_owned()), true).unwrap();
    }
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut recv = response.into_body();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");
const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"h2","version":"0"}}}"#;
const WHOAMI: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;

#[tokio::test]
async fn every_flow_crosses_one_h2_connection() {
    let ca = Ca::new("h2-flows");
    let leaf = ca.issue("server", &["localhost"]);
    let replicas = replicas(3).await;
    let urls = replicas.iter().map(|r| r.url()).collect();
    let t = tether_urls(urls, &tls_toml(&leaf)).await;
    let h2 = h2_tls(&ca, t.proxy_addr).await;
    // A held legacy stream first: its endpoint event, sealed, while other
    // streams go on beside it.
    let mut sse = h2.clone().ready().await.unwrap();
    let get = Request::get("https://localhost/sse")
        .header("accept", "text/event-stream")
        .body(())
        .unwrap();
    let (held, _) = sse.send_request(get, true).unwrap();
    let held = held.await.unwrap();
    assert_eq!(held.status(), 200);
    let mut events = held.into_body();
    let first = String::from_utf8_lossy(&events.data().await.unwrap().unwrap()).into_owned();
    assert!(first.contains("event: endpoint"), "{first}");
    let endpoint = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(endpoint.contains("sessionId=t2."), "sealed: {endpoint}");
    // Sessions: initialize, then calls that stick, concurrently, on one connection.
    let mut owners = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let init = call(&h2, Method::POST, "/mcp", &[JSON, ACCEPT], INIT).await;
        assert_eq!(init.status, 200, "{}", init.body);
        let sid = init.headers["mcp-session-id"].to_str().unwrap().to_owned();
        assert!(sid.starts_with("t2."), "sealed: {sid}");
        let with = [JSON, ACCEPT, ("mcp-session-id", sid.as_str())];
        // Four at once, each on its own stream of the one connection.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (h2, sid) = (h2.clone(), sid.clone());
            set.spawn(async move {
                let with = [JSON, ACCEPT, ("mcp-session-id", sid.as_str())];
                call(&h2, Method::POST, "/mcp", &with, WHOAMI).await.body
            });
        }
        let names: Vec<String> = set.join_all().await;
        assert!(
            names.windows(2).all(|w| w[0] == w[1]),
            "one owner: {names:?}"
        );
        owners.insert(names[0].clone());
        let gone = call(&h2, Method::DELETE, "/mcp", &with[2..], "").await;
        assert!(gone.status < 300, "DELETE: {}", gone.status);
    }
    assert!(owners.len() >= 2, "sessions spread: {owners:?}");
    // The legacy session's POST, on yet another stream; its answer comes on the held one.
    let post = call(&h2, Method::POST, &endpoint, &[JSON], WHOAMI).await;
    assert_eq!(post.status, 202, "{}", post.body);
    let answer = String::from_utf8_lossy(&events.data().await.unwrap().unwrap()).into_owned();
    assert!(answer.contains("replica-"), "{answer}");
    // 2026-07-28: headers checked against the body, over h2 as over HTTP/1.1.
    let modern = call(
        &h2,
        Method::POST,
        "/mcp",
        &[
            JSON,
            ACCEPT,
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        WHOAMI,
    )
    .await;
    assert_eq!(modern.status, 400, "{}", modern.body);
    assert!(modern.body.contains("-32020"), "{}", modern.body);
    let m = metrics(&t).await;
    assert_eq!(sample(&m, "tether_http2_connections_total"), 1.0);
    assert!(sample(&m, "tether_http2_streams_total") >= 30.0, "{m}");
}

#[tokio::test]
async fn a_reset_stream_cancels_its_upstream_request() {
    let ca = Ca::new("h2-reset");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(|_| (Vec::new(), After::Hang)).await;
    let t = tether_urls(vec![backend.url()], &tls_toml(&leaf)).await;
    let h2 = h2_tls(&ca, t.proxy_addr).await;
    let mut send = h2.clone().ready().await.unwrap();
    let req = Request::post("https://localhost/mcp")
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (_response, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(WHOAMI.as_bytes()), true)
        .unwrap();
    within("the request reaches the backend", async {
        while backend.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(backend.closed.load(Ordering::Relaxed), 0);
    body.send_reset(h2::Reason::CANCEL);
    within("the upstream connection is closed", async {
        while backend.closed.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let m = metrics(&t).await;
    assert_eq!(sample(&m, "tether_http2_resets_total"), 1.0);
}

#[tokio::test]
async fn a_stream_whose_window_is_full_stalls_no_other() {
    let ca = Ca::new("h2-window");
    let leaf = ca.issue("server", &["localhost"]);
    let big = "z".repeat(4 << 20);
    let backend = RawBackend::start(move |req| {
        if req.contains("big") {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len());
            (
                [head.into_bytes(), big.clone().into_bytes()].concat(),
                After::KeepOpen,
            )
        } else {
            echo_target(req)
        }
    })
    .await;
    let t = tether_urls(vec![backend.url()], &tls_toml(&leaf)).await;
    let h2 = h2_tls(&ca, t.proxy_addr).await;
    // The big answer's stream is never read: its window fills and stays full.
    let mut send = h2.clone().ready().await.unwrap();
    let (stalled, _) = send
        .send_request(
            Request::get("https://localhost/big").body(()).unwrap(),
            true,
        )
        .unwrap();
    let stalled = stalled.await.unwrap();
    assert_eq!(stalled.status(), 200);
    for i in 0..5 {
        let small = within(
            "a small answer beside it",
            call(&h2, Method::GET, &format!("/small/{i}"), &[], ""),
        )
        .await;
        assert_eq!(small.status, 200);
        assert!(
            small.body.contains(&format!("/small/{i}")),
            "{}",
            small.body
        );
    }
    drop(stalled);
}

/// Hangs on `/flood` (a tool call that never ends), echoes anything else.
fn flood_or_echo(req: &str) -> (Vec<u8>, After) {
    match req.starts_with("POST /flood") {
        true => (Vec::new(), After::Hang),
        false => echo_target(req),
    }
}

#[tokio::test]
async fn a_rapid_reset_flood_gets_goaway_and_other_clients_are_served() {
    // Streams opened and reset at once, faster than they are accepted: the
    // h2 crate's guard answers with GOAWAY (ENHANCE_YOUR_CALM), counted.
    let ca = Ca::new("h2-flood");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(flood_or_echo).await;
    let extra = format!("{}[http2]\nmax_concurrent_streams = 10\n", tls_toml(&leaf));
    let t = tether_urls(vec![backend.url()], &extra).await;
    let other = h2_tls(&ca, t.proxy_addr).await;
    let attacker = h2_tls(&ca, t.proxy_addr).await;
    let mut refused = false;
    for _ in 0..5000 {
        let Ok(mut send) = attacker.clone().ready().await else {
            refused = true;
            break;
        };
        let req = Request::post("https://localhost/flood").body(()).unwrap();
        match send.send_request(req, false) {
            Ok((_, mut body)) => body.send_reset(h2::Reason::CANCEL),
            Err(_) => {
                refused = true;
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the flooding connection was ended");
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_connection_errors_total{kind=\"rapid_reset\"}"),
        1.0,
        "{m}"
    );
    // The other client, on its own connection to the same Tether, is served.
    for i in 0..3 {
        let a = call(&other, Method::GET, &format!("/ok/{i}"), &[], "").await;
        assert_eq!(a.status, 200);
    }
}

#[tokio::test]
async fn accepted_streams_reset_past_the_limit_end_the_connection() {
    // Slower: each stream is accepted and its request reaches the backend
    // before the reset (the work is started). Past twice the stream limit
    // within the window, Tether's own guard sends GOAWAY.
    let ca = Ca::new("h2-resets");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(flood_or_echo).await;
    let extra = format!("{}[http2]\nmax_concurrent_streams = 10\n", tls_toml(&leaf));
    let t = tether_urls(vec![backend.url()], &extra).await;
    let attacker = h2_tls(&ca, t.proxy_addr).await;
    let mut ended = None;
    for i in 0..40 {
        let Ok(mut send) = attacker.clone().ready().await else {
            ended = Some(i);
            break;
        };
        let req = Request::post("https://localhost/flood")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let Ok((response, mut body)) = send.send_request(req, false) else {
            ended = Some(i);
            break;
        };
        if body
            .send_data(Bytes::from_static(WHOAMI.as_bytes()), true)
            .is_err()
        {
            ended = Some(i);
            break;
        }
        tokio::pin!(response);
        // The request reaches the backend, or the stream fails (the GOAWAY).
        let reached = within("the request reaches the backend", async {
            loop {
                if backend.seen().len() > i {
                    return true;
                }
                tokio::select! {
                    _ = &mut response => return false,
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        })
        .await;
        if !reached {
            ended = Some(i);
            break;
        }
        body.send_reset(h2::Reason::CANCEL);
    }
    let ended = ended.expect("the connection was ended");
    assert!(ended > 20, "not before the limit: {ended}");
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_connection_errors_total{kind=\"rapid_reset\"}"),
        1.0,
        "{m}"
    );
    assert!(sample(&m, "tether_http2_resets_total") > 20.0, "{m}");
}

#[tokio::test]
async fn a_graceful_shutdown_sends_goaway_and_lets_streams_finish() {
    let ca = Ca::new("h2-goaway");
    let leaf = ca.issue("server", &["localhost"]);
    let replica = replicas(1).await;
    let t = tether_urls(vec![replica[0].url()], &tls_toml(&leaf)).await;
    let h2 = h2_tls(&ca, t.proxy_addr).await;
    let init = call(&h2, Method::POST, "/mcp", &[JSON, ACCEPT], INIT).await;
    let sid = init.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let sleep = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":500}}}"#;
    let with = [JSON, ACCEPT, ("mcp-session-id", sid.as_str())];
    let slow = call(&h2, Method::POST, "/mcp", &with, sleep);
    tokio::pin!(slow);
    // Started, then the shutdown begins while it runs.
    assert!(tokio::time::timeout(Duration::from_millis(100), &mut slow)
        .await
        .is_err());
    t.begin_shutdown();
    let done = within("the call in flight finishes", slow).await;
    assert_eq!(done.status, 200, "{}", done.body);
    // No new stream after the GOAWAY.
    let refused = match h2.clone().ready().await {
        Err(_) => true,
        Ok(mut send) => match send.send_request(
            Request::get("https://localhost/mcp").body(()).unwrap(),
            true,
        ) {
            Err(_) => true,
            Ok((resp, _)) => resp.await.is_err(),
        },
    };
    assert!(refused, "a stream after GOAWAY is refused");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_on_an_opt_in_listener_beside_http1() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "[http2]\nh2c = true\n").await;
    let h2 = h2c(t.proxy_addr).await;
    let a = call(&h2, Method::GET, "/mcp?x=1", &[], "").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("GET /mcp?x=1 HTTP/1.1"), "{}", a.body);
    assert_eq!(
        backend.seen()[0]
            .lines()
            .find(|l| l.starts_with("x-forwarded-proto")),
        Some("x-forwarded-proto: http")
    );
    // HTTP/1.1 on the same port still works.
    let answer = mcp_tether_testkit::raw::exchange(
        t.proxy_addr,
        b"GET /one HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Without the opt-in, the preface is not HTTP/1.1.
    let plain = tether_urls(vec![backend.url()], "").await;
    let tcp = tokio::net::TcpStream::connect(plain.proxy_addr)
        .await
        .unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let refused = match send.send_request(Request::get("http://lb/mcp").body(()).unwrap(), true) {
        Err(_) => true,
        Ok((resp, _)) => resp.await.is_err(),
    };
    assert!(refused);
}

#[tokio::test]
async fn curl_speaks_http2_to_tether() {
    let ca = Ca::new("h2-curl");
    let leaf = ca.issue("server", &["localhost"]);
    let replicas = replicas(2).await;
    let t = tether_urls(replicas.iter().map(|r| r.url()).collect(), &tls_toml(&leaf)).await;
    let url = format!("https://localhost:{}/mcp", t.proxy_addr.port());
    let ca_path = ca.pem_path();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-i", "--http2", "--max-time", "20", "--cacert"])
            .arg(ca_path)
            .args([
                "-H",
                "content-type: application/json",
                "-H",
                "accept: application/json, text/event-stream",
            ])
            .args(["-d", INIT, &url])
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/2 200"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.to_ascii_lowercase().contains("mcp-session-id: t2."),
        "{text}"
    );
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_like_an_idle_http1_one() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        "[http2]\nh2c = true\n[timeouts]\nheader_read = \"1s\"\n",
    )
    .await;
    // No stream at all: GOAWAY after header_read, then closed.
    let tcp = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    let (_send, conn) = h2::client::handshake(tcp).await.unwrap();
    within("the idle connection is closed", conn).await.ok();
    // Idle after a request: the same.
    let tcp = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    assert_eq!(call(&send, Method::GET, "/once", &[], "").await.status, 200);
    within("closed once idle", driver).await.unwrap().ok();
}

#[tokio::test]
async fn a_stream_reset_as_it_opens_sends_nothing_upstream() {
    // HEADERS and RST_STREAM back to back, as a rapid-reset flood sends them:
    // the stream is seen reset before any request is started for it.
    let ca = Ca::new("h2-reset-at-open");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], &tls_toml(&leaf)).await;
    let h2 = h2_tls(&ca, t.proxy_addr).await;
    for _ in 0..10 {
        let mut send = h2.clone().ready().await.unwrap();
        let req = Request::get("https://localhost/reset").body(()).unwrap();
        let (_, mut body) = send.send_request(req, false).unwrap();
        body.send_reset(h2::Reason::CANCEL);
    }
    // A request after them, on the same connection, is answered: they were handled.
    assert_eq!(call(&h2, Method::GET, "/after", &[], "").await.status, 200);
    let seen = backend.seen();
    assert!(
        seen.iter().all(|r| !r.starts_with("GET /reset")),
        "a reset stream reached the backend: {seen:?}"
    );
}

#[tokio::test]
async fn a_client_that_expects_100_continue_is_answered() {
    let ca = Ca::new("h2-expect");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], &tls_toml(&leaf)).await;
    let h2 = h2_tls(&ca, t.proxy_addr).await;
    let a = call(
        &h2,
        Method::POST,
        "/mcp",
        &[JSON, ("expect", "100-continue")],
        "{}",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The backend gets the body whole, and no Expect (Tether took care of it).
    let seen = &backend.seen()[0];
    assert!(!seen.to_ascii_lowercase().contains("expect:"), "{seen}");
    assert!(seen.ends_with("{}"), "{seen}");
}

/// Sends `parts` as a request body, one DATA frame each, the last ending
/// the stream; returns the status.
async fn post_in_parts(h2: &H2, headers: &[(&str, &str)], parts: &[String]) -> u16 {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("https://localhost/mcp");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut h2 = h2.clone().ready().await.unwrap();
    let (response, mut send) = h2.send_request(req.body(()).unwrap(), false).unwrap();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            // An empty DATA frame (what some clients end a body with).
            send.send_data(Bytes::new(), i + 1 == parts.len()).unwrap();
            continue;
        }
        send.reserve_capacity(part.len());
        let mut data = Bytes::from(part.clone());
        while !data.is_empty() {
            let n = std::future::poll_fn(|cx| send.poll_capacity(cx))
                .await
                .unwrap()
                .unwrap();
            let chunk = data.split_to(n.min(data.len()));
            let last = data.is_empty() && i + 1 == parts.len();
            send.send_data(chunk, last).unwrap();
        }
    }
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    while let Some(chunk) = recv.data().await {
        let _ = recv.flow_control().release_capacity(chunk.unwrap().len());
    }
    status
}

/// A JSON-RPC ping padded to about `size` bytes, in `n` parts.
fn padded_ping(size: usize, n: usize) -> (String, Vec<String>) {
    let frame = r#"{"jsonrpc":"2.0","id":9,"method":"ping","params":{"pad":""}}"#;
    let pad = "x".repeat(size - frame.len());
    let body = frame.replace(r#""pad":"""#, &format!(r#""pad":"{pad}""#));
    let step = body.len().div_ceil(n);
    let parts = body
        .as_bytes()
        .chunks(step)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    (body, parts)
}

#[tokio::test]
async fn request_bodies_reach_the_backend_whole_however_they_come() {
    // A body that comes whole with its head is handed over at once (with a
    // length when the client gave none); the rest of a longer one follows
    // through the pipe. Each way the backend gets exactly the client's bytes.
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        "[http2]
h2c = true
",
    )
    .await;
    let h2 = h2c(t.proxy_addr).await;
    // (size, parts, a declared length, an empty frame ends the body: httpx
    // sends one, and the stream's end read as an empty read, a close, made
    // Tether drop the request as the client's leaving)
    let cases: [(usize, usize, bool, bool); 7] = [
        (100, 1, false, false),
        (100, 1, true, false),
        (40_000, 4, false, false),
        (40_000, 4, true, false),
        (100, 1, true, true),
        (40_000, 4, true, true),
        (40_000, 4, false, true),
    ];
    for (i, (size, n, declared, empty_end)) in cases.into_iter().enumerate() {
        let (body, mut parts) = padded_ping(size, n);
        if empty_end {
            parts.push(String::new());
        }
        let length = body.len().to_string();
        let mut headers = vec![JSON, ACCEPT];
        if declared {
            headers.push(("content-length", &length));
        }
        let status = post_in_parts(&h2, &headers, &parts).await;
        assert_eq!(status, 200, "case {i}");
        let seen = &backend.seen()[i];
        let (head, got) = seen.split_once("\r\n\r\n").unwrap();
        assert_eq!(got, body, "case {i}: the body as sent");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("\r\ncontent-length: {length}")),
            "case {i}: {head}"
        );
        assert!(!head.contains("transfer-encoding"), "case {i}: {head}");
    }
}

#[tokio::test]
async fn a_stream_with_the_most_fields_a_client_may_send_is_served() {
    // As an HTTP/1.1 client's would count: `:authority` is its Host, and
    // the fields Tether writes itself for the stream (its framing,
    // `connection: close`) are not the client's. 128 is the limit, one more
    // is a 431 that reaches no backend (it was a 431 from 126 on).
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "[http2]\nh2c = true\n").await;
    let h2 = h2c(t.proxy_addr).await;
    let names: Vec<String> = (0..126).map(|i| format!("x-filler-{i}")).collect();
    let with_fillers = |n: usize| {
        let mut headers = vec![JSON, ACCEPT];
        headers.extend(names[..n].iter().map(|name| (name.as_str(), "1")));
        headers
    };
    // Host, content-type, accept and 125 fillers: 128.
    let a = call(&h2, Method::POST, "/mcp", &with_fillers(125), WHOAMI).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains("x-filler-124: 1"), "{}", seen[0]);
    let a = call(&h2, Method::POST, "/mcp", &with_fillers(126), WHOAMI).await;
    assert_eq!(a.status, 431, "{}", a.body);
    assert!(a.body.contains("\"jsonrpc\""), "{}", a.body);
    assert_eq!(backend.seen().len(), 1);
}

#[tokio::test]
async fn a_field_name_http1_refuses_reaches_no_backend() {
    // HPACK names may hold `"`, which an HTTP/1.1 name may not (found in
    // review): written into the backend's request, it went through.
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "[http2]\nh2c = true\n").await;
    let h2 = h2c(t.proxy_addr).await;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("https://localhost/mcp")
        .header(JSON.0, JSON.1)
        .header(ACCEPT.0, ACCEPT.1)
        .body(())
        .unwrap();
    req.headers_mut().insert(
        http::HeaderName::from_lowercase(b"x\"y").unwrap(),
        http::HeaderValue::from_static("1"),
    );
    let mut send = h2.clone().ready().await.unwrap();
    let (response, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(WHOAMI.as_bytes()), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
    // The connection serves the next stream.
    let a = call(&h2, Method::POST, "/mcp", &[JSON, ACCEPT], WHOAMI).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// Opens a POST stream declaring `len` bytes and sends `sent` of them.
async fn part_body(h2: &H2, len: usize, sent: usize) -> h2::SendStream<Bytes> {
    let mut send = h2.clone().ready().await.unwrap();
    let req = Request::post("https://localhost/mcp")
        .header("content-type", "application/json")
        .header("content-length", len.to_string())
        .body(())
        .unwrap();
    let (_response, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from(vec![b' '; sent]), false)
        .unwrap();
    body
}

#[tokio::test]
async fn a_stream_reset_while_it_waits_for_the_body_budget_ends_at_once() {
    // The budget is held by one stream's body; five more wait for it, and
    // their client resets them. The reset is seen while they wait, not when
    // their wait times out (60 s here): they are counted, and their waits
    // end (the holder is still served afterwards).
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        "[http2]\nh2c = true\n[limits]\nmax_request_body = 131072\nmax_held_body_bytes = 131072\n[timeouts]\nrequest_body = \"60s\"\n",
    )
    .await;
    let h2 = h2c(t.proxy_addr).await;
    let mut holder = part_body(&h2, 131072, 100 * 1024).await;
    eventually("the holder takes the budget", || async {
        sample(&metrics(&t).await, "tether_held_body_bytes") == 131072.0
    })
    .await;
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(part_body(&h2, 131072, 100 * 1024).await);
    }
    eventually("five bodies wait for the budget", || async {
        sample(&metrics(&t).await, "tether_body_budget_waits_total") == 5.0
    })
    .await;
    assert_eq!(sample(&metrics(&t).await, "tether_http2_resets_total"), 0.0);
    for body in &mut waiting {
        body.send_reset(h2::Reason::CANCEL);
    }
    eventually("the five resets are seen while they wait", || async {
        sample(&metrics(&t).await, "tether_http2_resets_total") == 5.0
    })
    .await;
    assert!(backend.seen().is_empty());
    holder
        .send_data(Bytes::from(vec![b' '; 131072 - 100 * 1024]), true)
        .unwrap();
    eventually("the holder's request reaches the backend", || async {
        backend.seen().len() == 1
    })
    .await;
    eventually("the budget is given back", || async {
        sample(&metrics(&t).await, "tether_held_body_bytes") == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_backend_answer_with_the_most_fields_reaches_an_h2_client_whole() {
    // 128 fields from the backend, the most its head may have; Tether adds
    // its framing and `connection: close` when it writes the answer for the
    // stream, which must still be read back (it was a reset).
    let backend = RawBackend::start(|_| {
        let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n");
        for i in 0..126 {
            head.push_str(&format!("x-many-{i}: {i}\r\n"));
        }
        head.push_str("content-length: 2\r\n\r\n{}");
        (head.into_bytes(), After::KeepOpen)
    })
    .await;
    let t = tether_urls(vec![backend.url()], "[http2]\nh2c = true\n").await;
    let h2 = h2c(t.proxy_addr).await;
    let a = within("the answer", call(&h2, Method::GET, "/many", &[], "")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, "{}");
    assert_eq!(a.headers.get("x-many-125").unwrap(), "125");
    assert_eq!(a.headers.get("x-many-0").unwrap(), "0");
}

/// How a stream's answer ends: its status, or the h2 error the client saw
/// (its head or its body read whole).
async fn outcome(h2: &H2, method: Method, path: &str) -> Result<u16, String> {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .body(())
        .unwrap();
    let mut h2 = h2
        .clone()
        .ready()
        .await
        .map_err(|e| format!("ready: {e}"))?;
    let (response, _) = h2
        .send_request(req, true)
        .map_err(|e| format!("send: {e}"))?;
    let response = response.await.map_err(|e| format!("head: {e}"))?;
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

/// A backend that gives every request `answer`.
async fn answering(answer: &'static [u8], after: After) -> RawBackend {
    RawBackend::start(move |_| (answer.to_vec(), after.clone())).await
}

#[tokio::test]
async fn a_bodiless_answer_reaches_a_strict_client_with_one_valid_length_or_none() {
    // Found in review: the backend's Content-Length on a 204, a 304 or a
    // HEAD answer went into HEADERS as it came; the h2 crate and nghttp2
    // (curl) refuse a list, a duplicate, a stray value or a 204's length
    // as a protocol error.
    let cases: [(Method, &[u8]); 6] = [
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5, 5\r\n\r\n",
        ),
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: abc\r\n\r\n",
        ),
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\ncontent-length: 7\r\n\r\n",
        ),
        (
            Method::HEAD,
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
        ),
        (
            Method::GET,
            b"HTTP/1.1 204 No Content\r\ncontent-length: -1\r\n\r\n",
        ),
        (
            Method::GET,
            b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n",
        ),
    ];
    for (method, answer) in cases {
        let backend = answering(answer, After::KeepOpen).await;
        let t = tether_urls(vec![backend.url()], "[http2]\nh2c = true\n").await;
        let h2 = h2c(t.proxy_addr).await;
        let got = within("the answer", outcome(&h2, method.clone(), "/x")).await;
        let text = String::from_utf8_lossy(answer);
        assert!(
            got.is_ok(),
            "{method} answered {text:?}: the h2 client got {got:?}"
        );
        let url = format!("http://127.0.0.1:{}/x", t.proxy_addr.port());
        let head = method == Method::HEAD;
        let out = tokio::task::spawn_blocking(move || {
            let mut curl = std::process::Command::new("curl");
            curl.args(["-sS", "-i", "--http2-prior-knowledge", "--max-time", "10"]);
            if head {
                curl.arg("-I");
            }
            curl.arg(url).output().expect("curl runs")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{text:?} reached curl as: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn a_cut_answer_is_reset_not_taken_for_a_whole_one() {
    // The backend closes before the answer is whole: the client sees a
    // reset stream, and the connection serves the next one.
    let cases: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ];
    for answer in cases {
        let backend = answering(answer, After::SilentClose).await;
        let t = tether_urls(vec![backend.url()], "[http2]\nh2c = true\n").await;
        let h2 = h2c(t.proxy_addr).await;
        let got = within("the cut answer", outcome(&h2, Method::GET, "/x")).await;
        // Reset before or after its head went (the reset may overtake it).
        assert!(
            got.as_ref()
                .is_err_and(|e| e.contains("stream error received")),
            "{:?}: {got:?}",
            String::from_utf8_lossy(answer)
        );
        let next = within("the next answer", outcome(&h2, Method::GET, "/y")).await;
        assert!(
            !next.as_ref().is_err_and(|e| e.starts_with("ready")),
            "the connection ended with the cut stream: {next:?}"
        );
    }
}
