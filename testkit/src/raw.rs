//! A backend that speaks HTTP/1.1 by hand, for fault injection: each test
//! makes it misbehave in exactly one way (late bytes, silent closes, odd
//! status lines, a keep-alive timeout), which a real server library would
//! not let it do. Also the raw-socket client helpers those tests use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// What a raw backend does after writing a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum After {
    /// Wait for the next request on the same connection.
    KeepOpen,
    /// Close the connection without having said so (the kept-alive race).
    SilentClose,
    /// Then, unasked, write a second response on the same connection.
    LateBytes,
    /// Then, after `delay`, write these bytes nobody asked for, and keep the
    /// connection open.
    Late { bytes: Vec<u8>, delay: Duration },
    /// Write nothing more and wait until the peer closes.
    Hang,
}

/// The bytes `After::LateBytes` writes.
pub const LATE_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nLATE!";

type Respond = dyn Fn(&str) -> (Vec<u8>, After) + Send + Sync;

/// A backend speaking HTTP/1.1 by hand: reads each request (head and
/// `Content-Length` body), records it, and writes what `respond` returns.
pub struct RawBackend {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    /// Connections the peer (Tether) closed, or that ended.
    pub closed: Arc<AtomicUsize>,
    /// Unasked bytes (`After::LateBytes`, `After::Late`) written after a response.
    pub late_sent: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// How a raw backend treats idle connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawOptions {
    /// A request that arrives on a connection idle at least this long (since
    /// its last response) is read, then the connection is closed without an
    /// answer: what a server does whose keep-alive timer fired a moment
    /// before the request arrived.
    pub idle_close: Option<Duration>,
}

impl RawBackend {
    pub async fn start(
        respond: impl Fn(&str) -> (Vec<u8>, After) + Send + Sync + 'static,
    ) -> RawBackend {
        RawBackend::start_with(RawOptions::default(), respond).await
    }

    pub async fn start_with(
        options: RawOptions,
        respond: impl Fn(&str) -> (Vec<u8>, After) + Send + Sync + 'static,
    ) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let late_sent = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Respond> = Arc::new(respond);
        let (count, gone, log) = (accepted.clone(), closed.clone(), seen.clone());
        let late = late_sent.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (log, gone, respond) = (log.clone(), gone.clone(), respond.clone());
                let late = late.clone();
                tokio::spawn(async move {
                    serve_connection(s, options, &*respond, &log, &late).await;
                    gone.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RawBackend {
            addr,
            accepted,
            closed,
            late_sent,
            seen,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received, as text, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

async fn serve_connection(
    mut s: TcpStream,
    options: RawOptions,
    respond: &Respond,
    log: &Mutex<Vec<String>>,
    late: &AtomicUsize,
) {
    let mut buf = Vec::new();
    let mut idle_since = Instant::now();
    while let Some(request) = read_request(&mut s, &mut buf).await {
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        if options
            .idle_close
            .is_some_and(|t| idle_since.elapsed() >= t)
        {
            return;
        }
        let (bytes, after) = respond(&request);
        if s.write_all(&bytes).await.is_err() {
            return;
        }
        idle_since = Instant::now();
        match after {
            After::KeepOpen => {}
            After::SilentClose => return,
            After::LateBytes => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                if s.write_all(LATE_RESPONSE).await.is_ok() {
                    late.fetch_add(1, Ordering::SeqCst);
                }
            }
            After::Late { bytes, delay } => {
                tokio::time::sleep(delay).await;
                if s.write_all(&bytes).await.is_ok() {
                    late.fetch_add(1, Ordering::SeqCst);
                }
            }
            After::Hang => {
                let mut sink = [0u8; 1024];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// One request (head and `Content-Length` body) from `s`, as text.
pub async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
            if buf.len() >= end + 4 + len {
                let request: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&request).into_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A JSON answer echoing the request line, kept alive.
pub fn echo_target(request: &str) -> (Vec<u8>, After) {
    let line = request.lines().next().unwrap_or("");
    let body = format!("{{\"line\":\"{line}\"}}");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    (response.into_bytes(), After::KeepOpen)
}

/// A POST with a `Content-Length` body and `extra` field lines.
pub fn post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes `bytes` to `addr` and reads until the server closes (at most 20 s).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_to_close(&mut s).await
}

/// Reads from `s` until the peer closes (or resets), at most 20 s.
pub async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("timed out waiting for the server to close");
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `s` until `out` holds `needle` (at most 20 s).
pub async fn read_until(s: &mut TcpStream, out: &mut Vec<u8>, needle: &str) {
    let read = async {
        while find(out, needle.as_bytes()).is_none() {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(out)
            );
            out.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}"));
}
