use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::{Config, Overrides};

/// A proxy for a backend nobody reaches, and default connection settings.
fn proxy_and_settings(metrics: &Arc<Metrics>) -> (Arc<Proxy>, Arc<ConnSettings>) {
    let overrides = Overrides {
        backends: vec!["http://127.0.0.1:9".into()],
        ..Overrides::default()
    };
    let config = Config::from_parts(Default::default(), overrides, &|_| None).unwrap();
    let proxy = Arc::new(Proxy::new(&config, metrics.clone()));
    let settings = crate::testing::settings_of(&config);
    (proxy, settings)
}

/// Serves one accepted connection with `serve`, for a backend nobody reaches.
async fn serve_one_connection(metrics: Arc<Metrics>) -> TcpStream {
    crate::panic::install_hook();
    let (proxy, settings) = proxy_and_settings(&metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        serve(stream, peer, proxy, metrics, settings).await;
    });
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_panic_below_the_connection_is_answered_502_and_counted() {
    let metrics = Arc::new(Metrics::default());
    let mut client = serve_one_connection(metrics.clone()).await;
    client
        .write_all(b"GET /__tether_test_panic HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            r#"{"error":{"code":-32603,"message":"Internal error"},"id":null,"jsonrpc":"2.0"}"#
        ),
        "{answer}"
    );
    assert_eq!(metrics.internal_errors.get(), 1);
}

/// What a held stream keeps for hours is the connection task: its largest
/// phase decides its size (rare and per-request phases are boxed). Was 1,256
/// bytes before the request and the rare relay paths were boxed, 632 before
/// `serve_client` stopped keeping a second copy of the client (an async fn's
/// arguments).
#[tokio::test]
async fn the_connection_task_stays_small() {
    let metrics = Arc::new(Metrics::default());
    let (proxy, settings) = proxy_and_settings(&metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _c = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (s, peer) = listener.accept().await.unwrap();
    let task = serve(s, peer, proxy, metrics, settings);
    let size = std::mem::size_of_val(&task);
    println!("connection task: {size} bytes");
    assert!(size <= 560, "the connection task grew to {size} bytes");
}

// ---- over in-memory I/O: both sides of the proxy path in one test, with
// tokio's paused clock for the timers (no socket, no real time).

mod memory {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

    use super::*;

    use crate::testing::{backend_pipe_at, memory_client as client, memory_proxy_with, read_until};

    /// A proxy whose one backend is reached over an in-memory pipe: the
    /// pipe is checked in as the backend's idle kept-alive connection.
    fn memory_proxy(metrics: &Arc<Metrics>) -> (Arc<Proxy>, Arc<ConnSettings>) {
        memory_proxy_at(metrics, "http://127.0.0.1:9")
    }

    /// The same, its backend at `url` (for the connections made after the pipe).
    fn memory_proxy_at(metrics: &Arc<Metrics>, url: &str) -> (Arc<Proxy>, Arc<ConnSettings>) {
        memory_proxy_with(metrics, "", &[url])
    }

    /// The backend's end of a pipe checked in as an idle connection.
    fn backend_pipe(proxy: &Proxy) -> DuplexStream {
        backend_pipe_of(proxy, 64 << 10)
    }

    /// The same, the pipe holding at most `size` bytes in flight.
    fn backend_pipe_of(proxy: &Proxy, size: usize) -> DuplexStream {
        backend_pipe_at(proxy, 0, size)
    }

    /// The backend answers `200 ok`, and the client gets it.
    async fn ok_crosses<W: tokio::io::AsyncWrite + Unpin>(backend: &mut W, c: &mut DuplexStream) {
        backend
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let answer = read_until(c, "\r\n\r\nok").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }

    /// An event stream through the proxy, its first event arrived: the
    /// backend's end, the client's end, what the client read.
    async fn event_stream(metrics: &Arc<Metrics>) -> (DuplexStream, DuplexStream, String) {
        let (proxy, settings) = memory_proxy(metrics);
        let mut backend = backend_pipe(&proxy);
        let mut c = client(&proxy, metrics, &settings);
        c.write_all(b"GET /events HTTP/1.1\r\nHost: lb\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut backend, "\r\n\r\n").await;
        backend
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: 1\n\n")
            .await
            .unwrap();
        let first = read_until(&mut c, "data: 1").await;
        (backend, c, first)
    }

    #[tokio::test]
    async fn requests_cross_in_memory_and_the_upstream_connection_is_kept() {
        let metrics = Arc::new(Metrics::default());
        let (proxy, settings) = memory_proxy(&metrics);
        let mut backend = backend_pipe(&proxy);
        let mut c = client(&proxy, &metrics, &settings);
        for i in 0..2 {
            c.write_all(format!("GET /mcp/{i} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let seen = read_until(&mut backend, "\r\n\r\n").await;
            assert!(
                seen.starts_with(&format!("GET /mcp/{i} HTTP/1.1\r\n")),
                "{seen}"
            );
            assert!(seen.contains("x-forwarded-for: 192.0.2.1\r\n"), "{seen}");
            assert!(seen.contains("x-forwarded-proto: http\r\n"), "{seen}");
            ok_crosses(&mut backend, &mut c).await;
        }
        // Both went over the one pipe: it went back to the idle list after each.
        let backend_ref = proxy.pools()[0].fleet.pool().backends()[0].clone();
        assert_eq!(proxy.upstream().idle_count(&backend_ref), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_never_answers_gets_the_504_at_the_response_timeout() {
        let metrics = Arc::new(Metrics::default());
        let (proxy, settings) = memory_proxy(&metrics);
        let mut backend = backend_pipe(&proxy);
        let mut c = client(&proxy, &metrics, &settings);
        let started = tokio::time::Instant::now();
        c.write_all(b"POST /mcp HTTP/1.1\r\nHost: lb\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        read_until(&mut backend, "{}").await;
        let answer = read_until(&mut c, "Upstream timeout").await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        // The clock ran to the response timeout (300 s by default), no further.
        let waited = started.elapsed();
        assert!(waited >= std::time::Duration::from_secs(300), "{waited:?}");
        assert!(waited < std::time::Duration::from_secs(301), "{waited:?}");
        // The connection the backend held is dropped, not reused.
        let mut rest = Vec::new();
        assert_eq!(backend.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_event_stream_ends_cleanly_at_the_idle_timeout() {
        let metrics = Arc::new(Metrics::default());
        let (_backend, mut c, first) = event_stream(&metrics).await;
        assert!(first.contains("transfer-encoding: chunked"), "{first}");
        let started = tokio::time::Instant::now();
        // Then silence: at `timeouts.stream_idle` (600 s) the stream ends with
        // its last chunk, as an SSE close the client reconnects after.
        let end = read_until(&mut c, "0\r\n\r\n").await;
        assert!(end.ends_with("0\r\n\r\n"), "{end:?}");
        assert!(started.elapsed() >= std::time::Duration::from_secs(600));
        assert_eq!(
            metrics
                .stream_idle_timeouts
                .get_or_create(&crate::metrics::BackendLabel {
                    backend: crate::metrics::Name("127.0.0.1:9".into())
                })
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_client_that_goes_mid_stream_closes_the_upstream_connection() {
        let metrics = Arc::new(Metrics::default());
        let (mut backend, c, _) = event_stream(&metrics).await;
        drop(c);
        // The backend's end reads the close: the relay dropped its connection.
        let mut rest = Vec::new();
        assert_eq!(backend.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_idle_connection_with_unasked_bytes_is_never_given_a_request() {
        let metrics = Arc::new(Metrics::default());
        let (proxy, settings) = memory_proxy(&metrics);
        let mut backend = backend_pipe(&proxy);
        // A late answer nobody asked for, waiting on the idle connection.
        backend
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nLATE")
            .await
            .unwrap();
        let mut c = client(&proxy, &metrics, &settings);
        c.write_all(b"GET /mcp HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .unwrap();
        // The pipe is retired at checkout; the new connection to 127.0.0.1:9 is refused.
        let answer = read_until(&mut c, "Upstream unavailable").await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(!answer.contains("LATE"), "{answer}");
        let mut rest = Vec::new();
        assert_eq!(
            backend.read_to_end(&mut rest).await.unwrap(),
            0,
            "no request reached it"
        );
    }

    #[tokio::test]
    async fn a_backend_that_closes_mid_body_cuts_the_client_off() {
        let metrics = Arc::new(Metrics::default());
        let (proxy, settings) = memory_proxy(&metrics);
        let mut backend = backend_pipe(&proxy);
        let mut c = client(&proxy, &metrics, &settings);
        c.write_all(b"GET /mcp HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut backend, "\r\n\r\n").await;
        backend
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        drop(backend);
        // The client gets what came, then the close: never a whole-looking body.
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\nabc"), "{got:?}");
        let io = metrics
            .upstream_errors
            .get_or_create(&crate::metrics::BackendKind {
                backend: crate::metrics::Name("127.0.0.1:9".into()),
                kind: "io",
            })
            .get();
        assert_eq!(io, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_releases_the_backend_after_the_idle_timeout() {
        let metrics = Arc::new(Metrics::default());
        let (proxy, settings) = memory_proxy(&metrics);
        let mut backend = backend_pipe(&proxy);
        let mut c = client(&proxy, &metrics, &settings);
        c.write_all(b"GET /big HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut backend, "\r\n\r\n").await;
        // 4 MiB for a client that reads nothing: the pipes fill, the relay's
        // write waits, and at `timeouts.stream_idle` the relay gives up.
        let writer = tokio::spawn(async move {
            let body = vec![b'x'; 4 << 20];
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            backend.write_all(head.as_bytes()).await?;
            backend.write_all(&body).await
        });
        let started = tokio::time::Instant::now();
        let written = writer.await.unwrap();
        assert!(
            written.is_err(),
            "the relay let go of the backend's connection"
        );
        assert!(started.elapsed() >= std::time::Duration::from_secs(600));
        drop(c);
    }

    /// The future's output if it is ready without waiting.
    fn now_or_never<F: std::future::Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        crate::transport::without_waiting(|cx| f.as_mut().poll(cx))
    }

    /// `f`, or a test failure after 10 s (a bound on a broken test, not a
    /// wait anything relies on).
    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(10), f)
            .await
            .expect("nothing happened within 10 s")
    }

    const POST: &[u8] = b"POST /mcp HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n\
        Content-Length: 46\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}";

    /// Reads one request head and its `content-length` body from a real
    /// backend connection; returns it as text.
    async fn read_request(conn: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                if got.len() >= end + 4 + length {
                    return text;
                }
            }
            match conn.read(&mut chunk).await.unwrap() {
                0 => return String::from_utf8_lossy(&got).into_owned(),
                n => got.extend_from_slice(&chunk[..n]),
            }
        }
    }

    #[tokio::test]
    async fn a_kept_alive_connection_closed_under_the_request_is_retried_on_a_new_one() {
        // The backend closes its idle connection while Tether writes a request
        // on it, before reading any of it: the write fails, so the request
        // never reached the backend and goes, once, on a new connection.
        let metrics = Arc::new(Metrics::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (proxy, settings) = memory_proxy_at(&metrics, &url);
        // The pipe takes 16 bytes: the request's write waits on it.
        let mut stale = backend_pipe_of(&proxy, 16);
        let mut c = client(&proxy, &metrics, &settings);
        c.write_all(POST).await.unwrap();
        // Tether is writing: the first 16 bytes are in the pipe. The backend
        // goes away without taking the rest.
        let mut first = [0u8; 16];
        stale.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"POST /mcp HTTP/1");
        drop(stale);
        let (mut fresh, _) = within(listener.accept()).await.unwrap();
        let request = read_request(&mut fresh).await;
        assert!(request.starts_with("POST /mcp HTTP/1.1\r\n"), "{request}");
        assert!(request.ends_with("\"tools/list\"}"), "{request}");
        ok_crosses(&mut fresh, &mut c).await;
        // Sent once on the new connection, and no second connection was made.
        let mut more = [0u8; 1];
        assert!(
            now_or_never(fresh.read(&mut more)).is_none(),
            "nothing more came on the new connection"
        );
        assert!(now_or_never(listener.accept()).is_none());
    }

    #[tokio::test]
    async fn a_request_the_backend_read_before_closing_is_never_replayed() {
        // The same race the other way: the backend read the request, then
        // closed without a byte of answer. It may have acted on it (a tool
        // call must not run twice): a 502, and no new connection.
        let metrics = Arc::new(Metrics::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (proxy, settings) = memory_proxy_at(&metrics, &url);
        let mut stale = backend_pipe(&proxy);
        let mut c = client(&proxy, &metrics, &settings);
        c.write_all(POST).await.unwrap();
        let seen = read_until(&mut stale, "\"tools/list\"}").await;
        assert!(seen.starts_with("POST /mcp HTTP/1.1\r\n"), "{seen}");
        drop(stale);
        let answer = within(read_until(&mut c, "\"jsonrpc\":\"2.0\"}")).await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(answer.contains("\"id\":1"), "{answer}");
        assert!(
            now_or_never(listener.accept()).is_none(),
            "the request was sent again"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_the_backend_closed_is_retired_at_checkout() {
        let metrics = Arc::new(Metrics::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (proxy, settings) = memory_proxy_at(&metrics, &url);
        drop(backend_pipe(&proxy));
        let mut c = client(&proxy, &metrics, &settings);
        c.write_all(POST).await.unwrap();
        let (mut fresh, _) = within(listener.accept()).await.unwrap();
        let request = read_request(&mut fresh).await;
        assert!(request.starts_with("POST /mcp HTTP/1.1\r\n"), "{request}");
        ok_crosses(&mut fresh, &mut c).await;
        let backend = proxy.pools()[0].fleet.pool().backends()[0].clone();
        // The new connection went back to the idle list; the closed pipe did not.
        assert_eq!(proxy.upstream().idle_count(&backend), 1);
    }
}
