//! HTTP/2 to backends configured `protocol = "h2"`: a real h2 server (the
//! `h2` crate) as the backend, over h2c and over TLS with a test CA. Sessions
//! and tokens flow as over HTTP/1.1; an event stream arrives event by event;
//! a client that leaves resets its stream; a refused stream is sent again
//! once, on the same connection, any other failure is a 502 and no replay; concurrent requests share
//! one connection; a server without `h2` by ALPN is refused with a 502; a
//! backend that drains (GOAWAY, no longer listening) finishes its streams
//! in flight, and what cannot reach it any more is failed over, not a 502.

#[path = "h2_backend/server.rs"]
mod server;
mod support;

use std::sync::atomic::Ordering;

use h2::Reason;
use mcp_tether::config::{parse_file, Config, Overrides};
use mcp_tether::Running;
use mcp_tether_testkit::raw::{exchange, find, post, read_until};
use server::{Backend, BIG};
use support::pki::Ca;
use support::*;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// Tether with `backends` (TOML list items) and `extra` TOML.
async fn tether(backends: &[String], extra: &str) -> Running {
    let toml = format!("backends = [{}]\n{extra}", backends.join(", "));
    let file = parse_file(&test_toml(&toml), "test").expect("test config");
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Overrides::default()
    };
    let config = Config::from_parts(file, overrides, &|_| None).expect("config");
    mcp_tether::start(config).await.expect("tether starts")
}

fn h2(url: &str) -> String {
    format!("{{ url = \"{url}\", protocol = \"h2\" }}")
}

const ACCEPT: &str = "Accept: application/json, text/event-stream\r\n";

fn rpc(method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{params}}}"#)
}

fn initialize(name: &str) -> String {
    let params = format!(
        r#"{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"{name}","version":"1"}}}}"#
    );
    post(
        "/mcp",
        &rpc("initialize", &params),
        &format!("{ACCEPT}Connection: close\r\n"),
    )
}

fn call(token: &str, tool: &str, close: bool) -> String {
    let extra = format!(
        "{ACCEPT}Mcp-Session-Id: {token}\r\nMcp-Protocol-Version: 2025-06-18\r\n{}",
        if close { "Connection: close\r\n" } else { "" }
    );
    post(
        "/mcp",
        &rpc(
            "tools/call",
            &format!(r#"{{"name":"{tool}","arguments":{{}}}}"#),
        ),
        &extra,
    )
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// A session begun through Tether: its token.
async fn begin(t: &Running) -> String {
    let answer = exchange(t.proxy_addr, initialize("client").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let token = header(&answer, "mcp-session-id")
        .expect("a token")
        .to_string();
    assert_ne!(token, "s-1", "the backend's id is sealed into a token");
    token
}

async fn session_flow(backend: &Backend, t: &Running) {
    let token = begin(t).await;
    let answer = exchange(t.proxy_addr, call(&token, "echo", true).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("echo in s-1"), "{answer}");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.version, http::Version::HTTP_2);
        assert!(!s.connection_fields, "no connection-specific field: {s:?}");
        assert_eq!(s.authority, "lb", "Host became :authority");
    }
    assert_eq!(
        (seen[0].method.as_str(), seen[1].method.as_str()),
        ("initialize", "tools/call")
    );
    assert_eq!(seen[0].session, None);
    assert_eq!(
        seen[1].session.as_deref(),
        Some("s-1"),
        "the token opened to the backend's id"
    );
    assert_eq!(backend.connections(), 1, "both requests on one connection");
}

#[tokio::test]
async fn a_session_runs_over_h2c() {
    let backend = Backend::plain().await;
    let t = tether(&[h2(&backend.url)], "").await;
    session_flow(&backend, &t).await;
    // The admin API says how the backend is spoken to.
    let admin = t.admin_addr.unwrap();
    let resp = send_raw(
        http::Method::GET,
        &format!("http://{admin}/backends"),
        &[],
        "",
    )
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&resp.text()).unwrap();
    assert_eq!(json["backends"][0]["protocol"], "h2", "{json}");
    let resp = send_raw(
        http::Method::GET,
        &format!("http://{admin}/config"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert!(resp.text().contains("(h2)"), "{}", resp.text());
}

#[tokio::test]
async fn a_request_with_the_most_fields_a_client_may_send_reaches_an_h2_backend() {
    // 128 fields from the client (the limit; one more is a 431), to which
    // Tether adds its X-Forwarded-* on the way: the h2 bridge reads that head
    // back, and must have room for them (it answered 502 here before).
    let backend = Backend::plain().await;
    let t = tether(&[h2(&backend.url)], "").await;
    let params = r#"{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}"#;
    let with_fillers = |n: usize| {
        let mut extra = format!("{ACCEPT}Connection: close\r\n");
        for i in 0..n {
            extra.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        post("/mcp", &rpc("initialize", params), &extra)
    };
    let fields = |request: &str| request.split("\r\n\r\n").next().unwrap().lines().count() - 1;
    let most = with_fillers(123);
    assert_eq!(fields(&most), mcp_tether::http1::head::MAX_FIELDS);
    let answer = exchange(t.proxy_addr, most.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(backend.seen().len(), 1);
    // One more field than the limit is the client's 431, not the backend's.
    let over = with_fillers(124);
    let answer = exchange(t.proxy_addr, over.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(backend.seen().len(), 1);
}

#[tokio::test]
async fn a_session_runs_over_h2_with_tls() {
    let ca = Ca::new("h2-backend");
    let backend = Backend::tls(&ca, &[b"h2"]).await;
    let extra = format!(
        "[tls]\nbackend_ca = {:?}\n",
        ca.pem_path().display().to_string()
    );
    let t = tether(&[h2(&backend.url)], &extra).await;
    session_flow(&backend, &t).await;
}

#[tokio::test]
async fn a_server_that_does_not_choose_h2_is_refused_with_a_502() {
    let ca = Ca::new("h2-no-alpn");
    let backend = Backend::tls(&ca, &[b"http/1.1"]).await;
    let extra = format!(
        "[tls]\nbackend_ca = {:?}\n",
        ca.pem_path().display().to_string()
    );
    let t = tether(&[h2(&backend.url)], &extra).await;
    let answer = exchange(t.proxy_addr, initialize("client").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains("\"jsonrpc\":\"2.0\""),
        "a JSON-RPC body: {answer}"
    );
    assert!(backend.seen().is_empty());
    let id = backend.url.trim_start_matches("https://");
    let m = metrics(&t).await;
    let series = format!("tether_upstream_errors_total{{backend=\"{id}\",kind=\"tls\"}}");
    assert!(sample(&m, &series) >= 1.0, "{m}");
}

#[tokio::test]
async fn an_event_stream_flows_event_by_event() {
    let backend = Backend::plain().await;
    let t = tether(&[h2(&backend.url)], "").await;
    let token = begin(&t).await;
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(call(&token, "stream", true).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    // The first event arrives while the backend holds the second.
    read_until(&mut s, &mut got, "\"first\"").await;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(find(&got, b"second").is_none());
    backend.go.notify_one();
    read_until(&mut s, &mut got, "\"second\"").await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_resets_the_backend_stream() {
    let backend = Backend::plain().await;
    let t = tether(&[h2(&backend.url)], "").await;
    let token = begin(&t).await;
    let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(call(&token, "stream", false).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "\"first\"").await;
    // An abortive close (RST): a cancellation in every era.
    socket2::SockRef::from(&s)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(s);
    assert_eq!(backend.next_reset().await, Reason::CANCEL);
}

#[tokio::test]
async fn a_refused_stream_is_sent_again_once_and_other_failures_are_502s() {
    let backend = Backend::plain().await;
    let t = tether(&[h2(&backend.url)], "").await;
    let token = begin(&t).await;
    let answer = exchange(t.proxy_addr, call(&token, "refuse", true).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let refused: Vec<_> = backend
        .seen()
        .into_iter()
        .filter(|s| s.tool == "refuse")
        .collect();
    assert_eq!(refused.len(), 2, "refused, then sent again: {refused:?}");
    assert_eq!(
        backend.connections(),
        1,
        "again on the same connection: one refused stream condemns no connection"
    );
    // Reset after it was taken: a 502, and never a second run.
    let answer = exchange(t.proxy_addr, call(&token, "fail", true).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("\"jsonrpc\":\"2.0\""), "{answer}");
    let failed = backend
        .seen()
        .into_iter()
        .filter(|s| s.tool == "fail")
        .count();
    assert_eq!(failed, 1, "a failed call is not replayed");
    // Refused every time: sent again once, then a 503 to retry later (the
    // backend is full, not down), never a 502 of a call that may have run.
    let answer = exchange(t.proxy_addr, call(&token, "refuse_always", true).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(header(&answer, "retry-after").is_some(), "{answer}");
    assert!(answer.contains("\"jsonrpc\":\"2.0\""), "{answer}");
    let refused = backend
        .seen()
        .into_iter()
        .filter(|s| s.tool == "refuse_always")
        .count();
    assert_eq!(refused, 2, "sent again once, not more");
    let id = backend.url.trim_start_matches("http://");
    let m = metrics(&t).await;
    let series = format!("tether_upstream_errors_total{{backend=\"{id}\",kind=\"io\"}}");
    assert_eq!(sample(&m, &series), 1.0, "{m}");
    let series = format!("tether_upstream_errors_total{{backend=\"{id}\",kind=\"unprocessed\"}}");
    assert_eq!(sample(&m, &series), 1.0, "{m}");
}

#[tokio::test]
async fn concurrent_requests_share_one_connection() {
    let backend = Backend::plain().await;
    let t = tether(&[h2(&backend.url)], "").await;
    // Eight sessions begun at once, all held by the backend until all eight
    // are in: they can only be streams of one connection at the same time.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let addr = t.proxy_addr;
        set.spawn(async move { exchange(addr, initialize("wait").as_bytes()).await });
    }
    let answers = within("eight at once", set.join_all()).await;
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    }
    assert_eq!(backend.seen().len(), 8);
    assert_eq!(backend.connections(), 1, "one connection, made once");
}

#[test]
fn unknown_protocols_are_config_errors_naming_the_key() {
    let err = |toml: &str| {
        let file = parse_file(toml, "test").expect("parses");
        Config::from_parts(file, Overrides::default(), &|_| None)
            .expect_err("refused")
            .to_string()
    };
    let e = err(r#"backends = ["http://a:1", { url = "http://b:1", protocol = "h3" }]"#);
    assert!(e.contains("backends[1].protocol"), "{e}");
    let e = err("[pools.p]\nbackends = [{ url = \"dns://svc:80\", protocol = \"HTTP/2\" }]\n");
    assert!(e.contains("pools.p.backends[0].protocol"), "{e}");
    // Both known values pass, on backends and discovery sources.
    let ok = r#"backends = [{ url = "http://b:1", protocol = "http/1.1" }, { url = "https://c:443", protocol = "h2" }, { url = "srv://_mcp._tcp.example.com", protocol = "h2" }]"#;
    let file = parse_file(ok, "test").unwrap();
    Config::from_parts(file, Overrides::default(), &|_| None).unwrap();
}

#[tokio::test]
async fn a_reload_changes_the_protocol_of_new_connections() {
    let backend = Backend::plain().await;
    let dir = std::env::temp_dir().join(format!("tether-h2-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("tether.toml");
    let write = |protocol: &str| {
        let entry = format!("{{ url = \"{}\", protocol = \"{protocol}\" }}", backend.url);
        std::fs::write(&conf, test_toml(&format!("backends = [{entry}]\n"))).unwrap();
    };
    write("h2");
    let t = start_from_file(&conf, Vec::new()).await;
    begin(&t).await;
    let before = backend.seen().len();
    // HTTP/1.1 to an h2-only server: it cannot answer, so the reload took.
    write("http/1.1");
    t.control.reload().unwrap();
    let answer = exchange(t.proxy_addr, initialize("client").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert_eq!(backend.seen().len(), before);
    // And back: h2 again, on a new connection; the identity never changed.
    write("h2");
    t.control.reload().unwrap();
    begin(&t).await;
    assert_eq!(backend.seen().len(), before + 1);
    let admin = t.admin_addr.unwrap();
    let resp = send_raw(
        http::Method::GET,
        &format!("http://{admin}/backends"),
        &[],
        "",
    )
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&resp.text()).unwrap();
    let id = backend.url.trim_start_matches("http://");
    assert_eq!(json["backends"][0]["address"], id, "{json}");
    assert_eq!(json["backends"][0]["protocol"], "h2", "{json}");
}

#[tokio::test]
async fn health_checks_speak_h2_to_an_h2_backend() {
    let backend = Backend::plain().await;
    let t = tether(
        &[h2(&backend.url)],
        "[health]\ncheck = \"mcp\"\ninterval = \"50ms\"\n",
    )
    .await;
    let id = backend.url.trim_start_matches("http://").to_string();
    let series = format!("tether_health_checks_total{{backend=\"{id}\",kind=\"ok\"}}");
    eventually("a probe over h2 succeeds", || {
        let t = &t;
        let series = series.clone();
        async move { sample(&metrics(t).await, &series) >= 2.0 }
    })
    .await;
    let probes: Vec<_> = backend
        .seen()
        .into_iter()
        .filter(|s| s.method == "server/discover")
        .collect();
    assert!(!probes.is_empty());
    assert!(probes.iter().all(|s| s.version == http::Version::HTTP_2));
    let m = metrics(&t).await;
    let failed = format!("tether_health_checks_total{{backend=\"{id}\",kind=\"failed\"}}");
    assert_eq!(sample(&m, &failed), 0.0, "{m}");
}

#[tokio::test]
async fn a_connection_that_went_away_is_made_again() {
    let backend = Backend::plain().await;
    let t = tether(&[h2(&backend.url)], "").await;
    let token = begin(&t).await;
    let answer = exchange(t.proxy_addr, call(&token, "goaway", true).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The backend's GOAWAY ends its connection once no stream is open.
    eventually("the first connection ends", || async {
        backend.ended() == 1
    })
    .await;
    let answer = exchange(t.proxy_addr, call(&token, "echo", true).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("echo in s-1"),
        "the session lives on: {answer}"
    );
    assert_eq!(backend.connections(), 2);
}

/// Two h2 backends; a session on the first holds an event stream open
/// (its first event read), and the first then drains (listener closed,
/// GOAWAY) with one idle pipe left to it in Tether's idle list.
struct Drained {
    drains: Backend,
    other: Backend,
    t: Running,
    token: String,
    held: TcpStream,
    got: Vec<u8>,
}

async fn drained(extra: &str) -> Drained {
    let drains = Backend::plain().await;
    let other = Backend::plain().await;
    let t = tether(&[h2(&drains.url), h2(&other.url)], extra).await;
    let mut token = begin(&t).await;
    for _ in 0..16 {
        if !drains.seen().is_empty() {
            break;
        }
        token = begin(&t).await;
    }
    assert!(
        !drains.seen().is_empty(),
        "no session landed on the first backend"
    );
    let mut held = TcpStream::connect(t.proxy_addr).await.unwrap();
    held.write_all(call(&token, "stream", true).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut held, &mut got, "\"first\"").await;
    let answer = exchange(t.proxy_addr, call(&token, "drain", true).as_bytes()).await;
    assert!(answer.contains("draining"), "{answer}");
    Drained {
        drains,
        other,
        t,
        token,
        held,
        got,
    }
}

#[tokio::test]
async fn a_new_session_that_would_go_to_a_draining_backend_goes_to_another() {
    // Round robin, so the first of two new sessions is the draining
    // backend's turn or the next one's: one of them finds its idle pipe,
    // whose connection takes no new stream, and no new connection is had.
    let d = drained("balance = \"round-robin\"").await;
    let before = d.other.seen().len();
    for _ in 0..2 {
        let answer = exchange(d.t.proxy_addr, initialize("after").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let inits = |b: &Backend| b.seen().iter().filter(|s| s.tool == "after").count();
    assert_eq!(inits(&d.drains), 0);
    assert_eq!(d.other.seen().len() - before, 2, "both went to the other");
    assert_eq!(inits(&d.other), 2);
    let id = d.drains.url.trim_start_matches("http://");
    let m = metrics(&d.t).await;
    let refused = format!("tether_upstream_errors_total{{backend=\"{id}\",kind=\"refused\"}}");
    assert!(
        sample(&m, &refused) >= 1.0,
        "the draining one was tried: {m}"
    );
    let io = format!("tether_upstream_errors_total{{backend=\"{id}\",kind=\"io\"}}");
    assert_eq!(sample(&m, &io), 0.0, "{m}");
}

#[tokio::test]
async fn a_backend_that_drains_finishes_its_streams_and_its_sessions_end_with_a_404_not_a_502() {
    // A backend shutting down gracefully stops listening and sends GOAWAY;
    // a held event stream keeps its connection open. The stream in flight
    // finishes; a later call of its session can be sent nowhere (no new
    // stream on that connection, no new connection): that is its owner
    // gone (404, so the client re-initializes) and a new session goes to
    // the other backend; before, both were 502s of a "call that failed".
    let Drained {
        drains,
        other: _other,
        t,
        token,
        mut held,
        mut got,
    } = drained("").await;
    let answer = exchange(t.proxy_addr, call(&token, "echo", true).as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "the owner is gone: {answer}"
    );
    assert!(answer.contains("\"jsonrpc\":\"2.0\""), "{answer}");
    for _ in 0..3 {
        let answer = exchange(t.proxy_addr, initialize("after").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let echoes = |b: &Backend| b.seen().iter().filter(|s| s.tool == "echo").count();
    assert_eq!(echoes(&drains), 0, "nothing reached the draining backend");
    assert_eq!(drains.connections(), 1, "its listener was closed");
    // The stream that was in flight across the GOAWAY ends whole.
    drains.go.notify_one();
    read_until(&mut held, &mut got, "\"second\"").await;
    let id = drains.url.trim_start_matches("http://");
    let m = metrics(&t).await;
    let series = format!("tether_upstream_errors_total{{backend=\"{id}\",kind=\"io\"}}");
    assert_eq!(sample(&m, &series), 0.0, "{m}");
}

#[tokio::test]
async fn a_stalled_stream_does_not_stall_the_others() {
    let backend = Backend::plain().await;
    let t = tether(&[h2(&backend.url)], "").await;
    let token = begin(&t).await;
    // Clients that ask for a large answer and read none of it (yet): four of
    // them, so what their streams hold together is more than a default
    // (64 KiB) connection window.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        // A small receive buffer (no autotuning): what the kernel holds for
        // a client that does not read stays small beside `BIG`.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 << 10).unwrap();
        let mut client = socket.connect(t.proxy_addr).await.unwrap();
        client
            .write_all(call(&token, "big", true).as_bytes())
            .await
            .unwrap();
        stalled.push(client);
    }
    // Until the answers stop moving: every buffer on their way is full, and
    // their streams' windows are spent.
    let mut last = 0;
    eventually("the large answers stall", || {
        let now = backend.handler.big_sent.load(Ordering::Relaxed);
        let still = now > 0 && now == last;
        last = now;
        async move { still }
    })
    .await;
    let held = backend.handler.big_sent.load(Ordering::Relaxed);
    assert!(
        held < STALLED * BIG / 2,
        "bounded buffering: {held} bytes in flight"
    );
    assert!(
        held > STALLED * (64 << 10),
        "each stalled stream holds its own window: {held}"
    );
    // Other calls go through on the same connection meanwhile.
    for _ in 0..3 {
        let request = call(&token, "echo", true);
        let answer = within("a call beside the stalled ones", async {
            exchange(t.proxy_addr, request.as_bytes()).await
        })
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(backend.handler.big_done.load(Ordering::Relaxed), 0);
    assert_eq!(backend.connections(), 1);
    // The clients read now: the windows open as they do, and all of it comes.
    for mut client in stalled {
        let answer = mcp_tether_testkit::raw::read_to_close(&mut client).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{}",
            &answer[..100.min(answer.len())]
        );
        assert!(answer.len() > BIG, "{} bytes", answer.len());
    }
    assert_eq!(backend.handler.big_done.load(Ordering::Relaxed), STALLED);
}

/// Clients of `a_stalled_stream_does_not_stall_the_others`.
const STALLED: usize = 4;

#[tokio::test]
async fn the_backends_stream_limit_holds_and_a_full_connection_gets_a_sibling() {
    // Two streams at once per connection: six calls that each wait for a
    // partner are spread over more connections rather than queued behind
    // the first (a session's event stream holds a stream for hours), each
    // seen once (none refused and sent again).
    let backend = Backend::limited(2).await;
    let t = tether(&[h2(&backend.url)], "").await;
    let token = begin(&t).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (addr, request) = (t.proxy_addr, call(&token, "pair", true));
        set.spawn(async move { exchange(addr, request.as_bytes()).await });
    }
    for answer in within("six paired calls", set.join_all()).await {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let pairs = backend.seen().iter().filter(|s| s.tool == "pair").count();
    assert_eq!(pairs, 6);
    // Three full ones, or two if two calls chose the same one at once (h2
    // then holds the third stream until one ends: still no refusal).
    let connections = backend.connections();
    assert!((2..=3).contains(&connections), "{connections} connections");
}
