//! TLS at both ends: terminated for clients (certificates by SNI, reloaded
//! when their files change, handshake failures counted, behind a PROXY
//! header), and spoken to `https://` backends (verified against a CA,
//! refused when untrusted, mTLS, health checks over it).

mod support;

use mcp_tether::config::{parse_file, Config, Overrides};
use mcp_tether_testkit::raw::{echo_target, exchange, After, RawBackend};
use support::pki::{self, connect, presented, round_trip, Ca};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const GET: &[u8] = b"GET /mcp HTTP/1.1\r\nHost: lb.example\r\n\r\n";

fn tls_toml(cert: &pki::Issued, more: &str) -> String {
    format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n{more}\n",
        cert.cert.display().to_string(),
        cert.key.display().to_string()
    )
}

fn field<'a>(seen: &'a str, name: &str) -> Option<&'a str> {
    seen.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

#[tokio::test]
async fn https_requests_reach_the_backend_marked_https() {
    let ca = Ca::new("https");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        &format!("forwarded = true\n{}", tls_toml(&leaf, "")),
    )
    .await;
    let mut tls = connect(&ca.client(), t.proxy_addr, "localhost").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    for _ in 0..3 {
        let answer = round_trip(&mut tls, GET).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let seen = backend.seen();
    assert_eq!(
        seen.len(),
        3,
        "one kept-alive TLS connection carried all three"
    );
    assert_eq!(field(&seen[0], "x-forwarded-proto"), Some("https"));
    assert_eq!(
        field(&seen[0], "forwarded"),
        Some("for=127.0.0.1;proto=https;host=\"lb.example\"")
    );
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_tls_handshakes_total{version=\"1.3\"}"),
        1.0
    );
    // TLS 1.2 too.
    let tls12 = ca.client_versions(&[&rustls::version::TLS12]);
    let mut old = connect(&tls12, t.proxy_addr, "localhost").await;
    assert!(round_trip(&mut old, GET).await.starts_with("HTTP/1.1 200"));
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_tls_handshakes_total{version=\"1.2\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_plain_listener_says_http_and_sends_no_forwarded_unless_asked() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "").await;
    exchange(
        t.proxy_addr,
        b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    let seen = backend.seen();
    assert_eq!(field(&seen[0], "x-forwarded-proto"), Some("http"));
    assert_eq!(field(&seen[0], "forwarded"), None);
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni() {
    let ca = Ca::new("sni");
    let default = ca.issue("default", &["localhost"]);
    let other = ca.issue("other", &["*.example.test", "api.other.test"]);
    let backend = RawBackend::start(echo_target).await;
    let more = format!(
        "[[tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
        other.cert.display().to_string(),
        other.key.display().to_string()
    );
    let t = tether_urls(vec![backend.url()], &tls_toml(&default, &more)).await;
    let client = ca.client();
    for (sni, want) in [
        ("a.example.test", &other.der),
        ("API.other.test", &other.der),
        ("localhost", &default.der),
    ] {
        let mut tls = connect(&client, t.proxy_addr, sni).await;
        assert_eq!(&presented(&tls), want, "{sni}");
        assert!(round_trip(&mut tls, GET).await.starts_with("HTTP/1.1 200"));
    }
    // A name no certificate has: the default one (which the client then refuses).
    let tcp = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("b.a.example.test").unwrap();
    let refused = client.connect(name, tcp).await;
    assert!(refused.is_err(), "the default certificate does not name it");
}

#[tokio::test]
async fn changed_certificate_files_reach_new_connections_and_open_ones_stay() {
    let ca = Ca::new("watch");
    let first = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        &tls_toml(&first, "watch_interval = \"1s\""),
    )
    .await;
    let client = ca.client();
    let mut open = connect(&client, t.proxy_addr, "localhost").await;
    assert!(round_trip(&mut open, GET).await.starts_with("HTTP/1.1 200"));
    // Renewed in place: a new key and certificate under the same names.
    let second = ca.issue("server", &["localhost"]);
    assert_ne!(first.der, second.der);
    eventually("the renewed certificate is served", || async {
        // A fresh client each time: a resumed session shows the certificate it began with.
        presented(&connect(&ca.client(), t.proxy_addr, "localhost").await) == second.der
    })
    .await;
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_tls_certificate_reloads_total{outcome=\"ok\"}"),
        1.0
    );
    // The connection made before still works, on its old certificate.
    assert_eq!(presented(&open), first.der);
    assert!(round_trip(&mut open, GET).await.starts_with("HTTP/1.1 200"));
    // A key that does not match: rejected, the certificate in force stays.
    let third = ca.issue("third", &["localhost"]);
    pki::write_atomically(&second.key, &std::fs::read(&third.key).unwrap());
    eventually("the mismatched key is rejected", || async {
        let m = metrics(&t).await;
        sample(
            &m,
            "tether_tls_certificate_reloads_total{outcome=\"rejected\"}",
        ) == 1.0
    })
    .await;
    let fresh = connect(&ca.client(), t.proxy_addr, "localhost").await;
    assert_eq!(presented(&fresh), second.der);
}

#[tokio::test]
async fn a_reload_reads_the_certificates_again() {
    let ca = Ca::new("reload");
    let first = ca.issue("first", &["localhost"]);
    let second = ca.issue("second", &["localhost"]);
    let backend = RawBackend::start(echo_target).await;
    let conf = ca.dir.join("tether.toml");
    let text = |leaf: &pki::Issued| test_toml(&tls_toml(leaf, "watch_interval = \"0s\""));
    std::fs::write(&conf, text(&first)).unwrap();
    let t = start_from_file(&conf, vec![backend.url()]).await;
    let client = ca.client();
    let mut open = connect(&client, t.proxy_addr, "localhost").await;
    assert_eq!(presented(&open), first.der);
    std::fs::write(&conf, text(&second)).unwrap();
    t.control.reload().expect("reload");
    let fresh = connect(&ca.client(), t.proxy_addr, "localhost").await;
    assert_eq!(presented(&fresh), second.der);
    assert!(round_trip(&mut open, GET).await.starts_with("HTTP/1.1 200"));
    // A reload naming a key that does not match is refused whole.
    let mismatched = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        first.cert.display().to_string(),
        second.key.display().to_string()
    );
    std::fs::write(&conf, test_toml(&mismatched)).unwrap();
    let err = t.control.reload().unwrap_err();
    assert_eq!(err.key, "tls.key", "{err}");
    assert!(err.problem.contains("does not match"), "{err}");
    let still = connect(&ca.client(), t.proxy_addr, "localhost").await;
    assert_eq!(presented(&still), second.der);
    // A client that saw the first certificate resumes its session across
    // the reloads (one ticket key for the process), with no full handshake.
    let resumed = connect(&client, t.proxy_addr, "localhost").await;
    assert_eq!(
        resumed.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
}

#[test]
fn bad_files_are_clear_errors() {
    let ca = Ca::new("errors");
    let a = ca.issue("a", &["localhost"]);
    let b = ca.issue("b", &["localhost"]);
    let load = |text: &str| {
        let file = parse_file(text, "t").unwrap();
        let overrides = Overrides {
            backends: vec!["http://127.0.0.1:1".into()],
            ..Overrides::default()
        };
        Config::from_parts(file, overrides, &|_| None).unwrap_err()
    };
    let p = |path: &std::path::Path| format!("{:?}", path.display().to_string());
    let err = load(&format!(
        "[tls]\ncert = {}\nkey = {}\n",
        p(&a.cert),
        p(&b.key)
    ));
    assert_eq!(err.key, "tls.key");
    assert!(err.problem.contains("does not match"), "{err}");
    let err = load(&format!(
        "[tls]\ncert = \"/nonexistent/c.pem\"\nkey = {}\n",
        p(&a.key)
    ));
    assert_eq!(err.key, "tls.cert");
    assert!(err.problem.contains("cannot read"), "{err}");
    let err = load(&format!(
        "[tls]\ncert = {}\nkey = {}\n",
        p(&a.key),
        p(&a.key)
    ));
    assert_eq!(err.key, "tls.cert", "a key is not a certificate: {err}");
    let err = load(&format!("[tls]\ncert = {}\n", p(&a.cert)));
    assert_eq!(err.key, "tls.key");
    let err = load(&format!("[tls]\nbackend_ca = {}\n", p(&a.key)));
    assert_eq!(err.key, "tls.backend_ca");
    let err = load(&format!("[tls]\nbackend_cert = {}\n", p(&a.cert)));
    assert_eq!(err.key, "tls.backend_cert");
}

#[tokio::test]
async fn an_expired_certificate_is_served_with_a_warning() {
    // Served (an operator may be mid-renewal; refusing to start would be
    // worse), and clients refuse it.
    let ca = Ca::new("expired");
    let leaf = ca.issue_with("old", &["localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], &tls_toml(&leaf, "")).await;
    let tcp = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let err = ca.client().connect(name, tcp).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn failed_handshakes_are_counted_by_reason() {
    let ca = Ca::new("failures");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        &tls_toml(&leaf, "handshake_timeout = \"300ms\""),
    )
    .await;
    // A TCP check (connect, close before a byte): not a failed handshake.
    drop(tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap());
    // Plain HTTP to the TLS port: closed, nothing forwarded.
    let answer = exchange(t.proxy_addr, b"GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!answer.contains("200"), "{answer}");
    // A client that does not trust the certificate (it sends an alert).
    let stranger = Ca::new("stranger");
    let tcp = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(stranger.client().connect(name, tcp).await.is_err());
    // One that connects and says nothing: the handshake timeout closes it.
    let mut silent = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = within("the silent client is closed", silent.read(&mut byte)).await;
    assert!(matches!(read, Ok(0) | Err(_)));
    let m = metrics(&t).await;
    let count = |reason: &str| {
        sample(
            &m,
            &format!("tether_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(count("not_tls"), 1.0, "{m}");
    assert_eq!(count("alert"), 1.0, "{m}");
    assert_eq!(count("timeout"), 1.0, "{m}");
    assert_eq!(count("eof"), 0.0, "a TCP check is not counted: {m}");
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn plain_http_after_a_proxy_header_is_refused_at_once() {
    // Behind a balancer: the PROXY header, then a client that speaks plain
    // HTTP to the TLS port and waits. Refused from the bytes that came with
    // the header, not left to the handshake timeout.
    let ca = Ca::new("proxied-plain");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        &format!(
            "proxy_protocol = true\n{}",
            tls_toml(&leaf, "handshake_timeout = \"60s\"")
        ),
    )
    .await;
    let bytes = [&b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"[..], GET].concat();
    let mut s = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut sink = Vec::new();
    let _ = within(
        "closed well before the 60 s handshake timeout",
        s.read_to_end(&mut sink),
    )
    .await;
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            "tether_tls_handshake_failures_total{reason=\"not_tls\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(backend.seen().is_empty());
}

/// Writes `prefix` in the same write as the first bytes the TLS client
/// sends (its ClientHello), as a balancer's PROXY header often arrives.
struct Prefixed {
    inner: tokio::net::TcpStream,
    prefix: Option<Vec<u8>>,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(prefix) = self.prefix.take() {
            let all = [prefix, buf.to_vec()].concat();
            // Loopback takes a few hundred bytes at once.
            let std = self.inner.try_write(&all).expect("one write");
            assert_eq!(std, all.len());
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn tls_after_a_proxy_header_sent_in_the_same_packet() {
    let ca = Ca::new("proxied");
    let leaf = ca.issue("server", &["localhost"]);
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(
        vec![backend.url()],
        &format!("proxy_protocol = true\n{}", tls_toml(&leaf, "")),
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    tcp.writable().await.unwrap();
    let io = Prefixed {
        inner: tcp,
        prefix: Some(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n".to_vec()),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = ca.client().connect(name, io).await.expect("handshake");
    tls.write_all(GET).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("the answer", tls.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(
        field(&backend.seen()[0], "x-forwarded-for"),
        Some("192.0.2.7")
    );
}

#[tokio::test]
async fn large_bodies_and_event_streams_cross_tls_whole() {
    // 3 MiB answered to a client that reads slowly: TLS holds records back
    // while the socket is full, and must send them all.
    let ca = Ca::new("large");
    let leaf = ca.issue("server", &["localhost"]);
    let big = "x".repeat(3 << 20);
    let body = big.clone();
    let backend = RawBackend::start(move |_| {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        (
            [head.into_bytes(), body.clone().into_bytes()].concat(),
            After::KeepOpen,
        )
    })
    .await;
    let t = tether_urls(vec![backend.url()], &tls_toml(&leaf, "")).await;
    let mut tls = connect(&ca.client(), t.proxy_addr, "localhost").await;
    tls.write_all(GET).await.unwrap();
    tls.flush().await.unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 1024];
    let want = big.len();
    within("the whole body", async {
        loop {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() >= end + 4 + want {
                    return;
                }
            }
            if got.len() % (256 << 10) < 1024 {
                tokio::task::yield_now().await;
            }
        }
    })
    .await;
    // A legacy stream's endpoint event, rewritten, over TLS.
    let replicas = replicas(1).await;
    let t = tether_urls(vec![replicas[0].url()], &tls_toml(&leaf, "")).await;
    let mut tls = connect(&ca.client(), t.proxy_addr, "localhost").await;
    tls.write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut seen = Vec::new();
    within("the endpoint event", async {
        while !String::from_utf8_lossy(&seen).contains("sessionId=") {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    let id = text
        .split("sessionId=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(
        id.starts_with(mcp_tether::affinity::token::PREFIX),
        "sealed: {text}"
    );
}

#[tokio::test]
async fn a_tls_client_that_stops_reading_is_let_go_after_the_idle_timeout() {
    // A large answer to a client that never reads: once the write has waited
    // `stream_idle`, the connection closes without waiting for the client
    // to take TLS's last records (a close that waited would hold the task).
    let ca = Ca::new("stalled");
    let leaf = ca.issue("server", &["localhost"]);
    let body = "y".repeat(32 << 20);
    let backend = RawBackend::start(move |_| {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        (
            [head.into_bytes(), body.clone().into_bytes()].concat(),
            After::KeepOpen,
        )
    })
    .await;
    let t = tether_urls(
        vec![backend.url()],
        &format!(
            "[timeouts]\nstream_idle = \"300ms\"\n{}",
            tls_toml(&leaf, "")
        ),
    )
    .await;
    let mut tls = connect(&ca.client(), t.proxy_addr, "localhost").await;
    tls.write_all(GET).await.unwrap();
    tls.flush().await.unwrap();
    // The client holds the connection open and reads nothing.
    eventually("the stalled connection is closed", || async {
        sample(&metrics(&t).await, "tether_client_connections") == 0.0
    })
    .await;
    drop(tls);
}

#[tokio::test]
async fn a_tls_backend_that_closes_without_close_notify_ends_its_body() {
    // A body delimited by the close, from a TLS server that then drops the
    // connection without close_notify (many do): the body is whole, not cut.
    let ca = Ca::new("no-notify");
    let leaf = ca.issue("backend", &["localhost"]);
    let chain = vec![leaf.der.clone()];
    use rustls::pki_types::pem::PemObject as _;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = tls.read(&mut buf).await.unwrap();
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"until\":\"close\"}")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        // Dropped: the TCP connection closes with no close_notify.
    });
    let ca_line = format!(
        "[tls]\nbackend_ca = {:?}\n",
        ca.pem_path().display().to_string()
    );
    let t = tether_urls(vec![format!("https://localhost:{port}")], &ca_line).await;
    let answer = exchange(
        t.proxy_addr,
        b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("{\"until\":\"close\"}"), "{answer}");
    assert!(
        answer.ends_with("0\r\n\r\n"),
        "the body's end reached the client: {answer:?}"
    );
}

#[tokio::test]
async fn a_reload_reads_the_backend_ca_file_again() {
    // The CA file rewritten in place (a rotated bundle), then a reload: in force.
    let ca = Ca::new("backend-reload");
    let other = Ca::new("backend-reload-other");
    let leaf = ca.issue("backend", &["localhost"]);
    let plain = RawBackend::start(echo_target).await;
    let front = ca.front(&leaf, plain.addr, false).await;
    let bundle = ca.dir.join("bundle.pem");
    std::fs::write(&bundle, std::fs::read(other.pem_path()).unwrap()).unwrap();
    let conf = ca.dir.join("tether.toml");
    let text = format!("[tls]\nbackend_ca = {:?}\n", bundle.display().to_string());
    std::fs::write(&conf, test_toml(&text)).unwrap();
    let t = start_from_file(
        &conf,
        vec![format!("https://localhost:{}", front.addr.port())],
    )
    .await;
    let get = b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    assert!(exchange(t.proxy_addr, get)
        .await
        .starts_with("HTTP/1.1 502"));
    pki::write_atomically(&bundle, &std::fs::read(ca.pem_path()).unwrap());
    t.control.reload().expect("reload");
    assert!(exchange(t.proxy_addr, get)
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn https_backends_are_verified_against_the_configured_ca() {
    let ca = Ca::new("backend");
    let leaf = ca.issue("backend", &["localhost", "127.0.0.1"]);
    let plain = RawBackend::start(echo_target).await;
    let front = ca.front(&leaf, plain.addr, false).await;
    let port = front.addr.port();
    let by_name = format!("https://localhost:{port}");
    let by_ip = format!("https://127.0.0.1:{port}");
    let ca_line = format!(
        "[tls]\nbackend_ca = {:?}\n",
        ca.pem_path().display().to_string()
    );
    for url in [&by_name, &by_ip] {
        let t = tether_urls(vec![url.clone()], &ca_line).await;
        for _ in 0..2 {
            let answer = exchange(
                t.proxy_addr,
                b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{url}: {answer}");
        }
    }
    // Two requests per Tether, one TLS connection each: kept alive and reused.
    assert_eq!(
        front.handshakes.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(plain.seen().len(), 4);
    assert_eq!(field(&plain.seen()[0], "host"), Some("lb"));

    // Untrusted (the system roots do not know this CA): 502, no request.
    let t = tether_urls(vec![by_name.clone()], "").await;
    let answer = exchange(
        t.proxy_addr,
        b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("Upstream unavailable"), "{answer}");
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            &format!("tether_upstream_errors_total{{backend=\"localhost:{port}\",kind=\"tls\"}}")
        ),
        1.0,
        "{m}"
    );
    assert_eq!(plain.seen().len(), 4, "nothing reached the backend");
    // Unless verification is off, explicitly.
    let t = tether_urls(vec![by_name], "[tls]\ninsecure_skip_verify = true\n").await;
    let answer = exchange(
        t.proxy_addr,
        b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_backend_that_asks_for_a_client_certificate_gets_one() {
    let ca = Ca::new("mtls");
    let leaf = ca.issue("backend", &["localhost"]);
    let client_cert = ca.issue("tether-client", &["tether.internal"]);
    let plain = RawBackend::start(echo_target).await;
    let front = ca.front(&leaf, plain.addr, true).await;
    let url = format!("https://localhost:{}", front.addr.port());
    let ca_line = format!(
        "[tls]\nbackend_ca = {:?}\n",
        ca.pem_path().display().to_string()
    );
    let t = tether_urls(vec![url.clone()], &ca_line).await;
    let answer = exchange(
        t.proxy_addr,
        b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 502"),
        "no client certificate: {answer}"
    );
    let with_cert = format!(
        "{ca_line}backend_cert = {:?}\nbackend_key = {:?}\n",
        client_cert.cert.display().to_string(),
        client_cert.key.display().to_string()
    );
    let t = tether_urls(vec![url], &with_cert).await;
    let answer = exchange(
        t.proxy_addr,
        b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(plain.seen().len(), 1);
}

#[tokio::test]
async fn health_checks_speak_tls_to_https_backends() {
    let ca = Ca::new("health");
    let leaf = ca.issue("backend", &["localhost"]);
    let replica = replicas(1).await.remove(0);
    let front = ca.front(&leaf, replica.addr(), false).await;
    let url = format!("https://localhost:{}", front.addr.port());
    let extra = format!(
        "[tls]\nbackend_ca = {:?}\n[health]\ncheck = \"mcp\"\ninterval = \"100ms\"\n",
        ca.pem_path().display().to_string()
    );
    let t = tether_urls(vec![url], &extra).await;
    let series = format!(
        "tether_health_checks_total{{backend=\"localhost:{}\",kind=\"ok\"}}",
        front.addr.port()
    );
    eventually("a probe passes over TLS", || async {
        sample(&metrics(&t).await, &series) >= 2.0
    })
    .await;
}
