//! The HTTP client doctor speaks through: HTTP/1.1 (hyper's client
//! connection) over TCP, or TLS verified against the system's roots
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured). One connection per request, as
//! many real MCP clients behave behind a proxy that closes connections, and so
//! nothing a check sees depends on which connection a pool happened to reuse.
//! Every step is bounded by the timeout: a server that never answers costs
//! one timeout, never a hang.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use url::Url;

use super::sse::{self, Item};

/// The longest body read whole (a JSON answer); SSE streams are read as they come.
const MAX_BODY: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no {0} within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("body: {0}")]
    Body(String),
    /// An event stream closed before the awaited response, after setting an
    /// event id or a reconnection time: SSE polling (SEP-1699), to be resumed.
    #[error("the stream ended first ({why}) after setting an event id or retry (SSE polling: a client resumes with GET and Last-Event-ID)")]
    Polled {
        why: String,
        last_id: Option<String>,
        retry: Option<Duration>,
    },
}

impl ClientError {
    /// The endpoint could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect(_)
                | ClientError::Tls(_)
                | ClientError::Timeout("connection" | "TLS handshake", _)
        )
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Aborts the connection's task when the answer is dropped, so an SSE stream
/// given up on is closed at once.
struct ConnGuard(JoinHandle<()>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Client {
    headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Every `Mcp-Session-Id` a server issued this run, so the run's last
    /// step can end each one still open, whatever check it came from and
    /// however that check ended.
    issued: std::sync::Mutex<Vec<Issued>>,
}

/// A session a server issued, with what a DELETE needs to address it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub url: Url,
    pub id: String,
    pub version: String,
    /// A DELETE of it was answered 2xx (ended) or 405 (the server ends none).
    pub ended: bool,
}

/// Parses `--header 'Name: value'`.
pub fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("--header {raw:?}: expected 'Name: value'"))?;
    let name = HeaderName::try_from(name.trim())
        .map_err(|_| format!("--header {raw:?}: not a header name"))?;
    let value = HeaderValue::try_from(value.trim())
        .map_err(|_| format!("--header {raw:?}: not a header value"))?;
    Ok((name, value))
}

impl Client {
    pub fn new(
        url: &Url,
        headers: Vec<(HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Result<Client, String> {
        let tls = match url.scheme() {
            "http" => None,
            "https" => Some(tls_connector()?),
            other => return Err(format!("{url}: scheme {other}: is not http or https")),
        };
        if url.host_str().is_none() {
            return Err(format!("{url}: no host"));
        }
        Ok(Client {
            headers,
            timeout,
            tls,
            issued: Default::default(),
        })
    }

    /// Notes a session id as issued (or its version, once known).
    pub fn issued(&self, url: &Url, id: &str, version: &str) {
        let mut all = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        match all.iter_mut().find(|s| s.id == id && &s.url == url) {
            Some(s) => s.version = version.to_string(),
            None => all.push(Issued {
                url: url.clone(),
                id: id.to_string(),
                version: version.to_string(),
                ended: false,
            }),
        }
    }

    /// Notes a session as ended: nothing more to DELETE.
    pub fn ended(&self, url: &Url, id: &str) {
        let mut all = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        for s in all.iter_mut().filter(|s| s.id == id && &s.url == url) {
            s.ended = true;
        }
    }

    /// Every session issued this run, ended or not.
    pub fn sessions(&self) -> Vec<Issued> {
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends one request on a fresh connection and returns once the response
    /// head is in (within the timeout); the body is read through [`Answer`].
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        let started = Instant::now();
        let io = self.connect(url).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let guard = ConnGuard(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut target = url.path().to_string();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let mut req = http::Request::builder().method(method).uri(target);
        if !self.headers.iter().any(|(n, _)| n == http::header::HOST) {
            req = req.header(http::header::HOST, authority(url));
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = body.map(Bytes::from).unwrap_or_default();
        if !body.is_empty() {
            req = req.header(http::header::CONTENT_LENGTH, body.len());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, sender.send_request(req))
            .await
            .map_err(|_| ClientError::Timeout("response head", self.timeout))?
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let (parts, body) = response.into_parts();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            started,
            head_after: started.elapsed(),
            timeout: self.timeout,
            _conn: guard,
        })
    }

    async fn connect(&self, url: &Url) -> Result<Box<dyn Io>, ClientError> {
        let host = url
            .host_str()
            .ok_or_else(|| ClientError::Connect("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(80);
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ClientError::Timeout("connection", self.timeout))?
            .map_err(|e| ClientError::Connect(format!("{host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| ClientError::Tls(format!("{host}: {e}")))?;
        let stream = tokio::time::timeout(self.timeout, tls.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout("TLS handshake", self.timeout))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Box::new(stream))
    }
}

fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no system CA certificate found for https:// (set SSL_CERT_FILE)".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A response whose head is in.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    started: Instant,
    /// From sending the request to the response head.
    pub head_after: Duration,
    timeout: Duration,
    _conn: ConnGuard,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_sse(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"))
    }

    /// The whole body as text (lossy), within the timeout and [`MAX_BODY`].
    pub async fn text(mut self) -> Result<String, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut out = Vec::new();
        loop {
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .map_err(|_| ClientError::Timeout("whole body", self.timeout))?;
            match frame {
                None => break,
                Some(Err(e)) => return Err(ClientError::Body(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if out.len() + data.len() > MAX_BODY {
                            return Err(ClientError::Body(format!("over {MAX_BODY} bytes")));
                        }
                        out.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Reads the event stream this answer carries.
    pub fn into_stream(self) -> Stream {
        Stream {
            answer: self,
            parser: sse::Parser::new(),
        }
    }

    /// The JSON-RPC response to request `id`: the body itself (JSON), or the
    /// first event whose data is that response (SSE), within the timeout;
    /// with an SSE answer, also how long after the request its first item came.
    pub async fn jsonrpc(
        self,
        id: &serde_json::Value,
    ) -> Result<(serde_json::Value, Option<Duration>), ClientError> {
        let timeout = self.timeout;
        if !self.is_sse() {
            let text = self.text().await?;
            let message = serde_json::from_str(&text)
                .map_err(|e| ClientError::Body(format!("not JSON ({e}): {}", clip(&text))))?;
            return Ok((message, None));
        }
        let mut stream = self.into_stream();
        let mut first = None;
        let message = stream.response(id, timeout, &mut first).await?;
        Ok((message, first))
    }
}

/// `data` parsed, if it is the JSON-RPC response (result or error) to `id`.
pub fn response_to(data: &str, id: &serde_json::Value) -> Option<serde_json::Value> {
    let message: serde_json::Value = serde_json::from_str(data).ok()?;
    let is_response = message.get("result").is_some() || message.get("error").is_some();
    (is_response && message.get("id") == Some(id)).then_some(message)
}

/// The first 200 characters of `text`, for a line of a report, control
/// characters escaped ([`printable`]): every string a server sent goes
/// through here before it is shown.
pub fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", printable(&text[..at])),
        None => printable(text),
    }
}

/// `text` with every control character (C0, DEL, C1: escape sequences, a
/// carriage return that rewrites a line, a newline that forges one) written
/// as `\x1b` or `\u{9b}`, so what a hostile server sends cannot drive the
/// terminal the report is read on.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c as u32 {
            0..=0x1f | 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            0x80..=0x9f => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

/// What [`Stream::next`] found.
#[derive(Debug)]
pub enum Next {
    /// An item, and when it arrived.
    Item(Instant, Item),
    /// Nothing before the deadline; the stream is still open.
    Idle,
    /// The stream ended (cleanly or not), with why.
    Closed(String),
}

/// An open event stream.
pub struct Stream {
    answer: Answer,
    parser: sse::Parser,
}

impl Stream {
    /// When the request that opened this stream was sent.
    pub fn started(&self) -> Instant {
        self.answer.started
    }

    /// The last event id the stream set (what `Last-Event-ID` resumes from).
    pub fn last_id(&self) -> Option<&str> {
        self.parser.last_id()
    }

    /// The reconnection time the stream set with `retry:`.
    pub fn retry(&self) -> Option<Duration> {
        self.parser.retry()
    }

    /// The first event whose data is the JSON-RPC response to `id`, within
    /// `timeout`; `first` gets how long after the request the stream's first
    /// item came. A close after an event id or `retry` is [`ClientError::Polled`].
    pub async fn response(
        &mut self,
        id: &serde_json::Value,
        timeout: Duration,
        first: &mut Option<Duration>,
    ) -> Result<serde_json::Value, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next(deadline).await {
                Next::Item(at, item) => {
                    first.get_or_insert(at.saturating_duration_since(self.started()));
                    if let Item::Event(event) = item {
                        if let Some(message) = response_to(&event.data, id) {
                            return Ok(message);
                        }
                    }
                }
                Next::Idle => return Err(ClientError::Timeout("response event", timeout)),
                Next::Closed(why) if self.resumable() => {
                    return Err(ClientError::Polled {
                        why,
                        last_id: self.last_id().map(str::to_string),
                        retry: self.retry(),
                    })
                }
                Next::Closed(why) => {
                    return Err(ClientError::Body(format!("stream ended first: {why}")))
                }
            }
        }
    }

    /// The stream set an event id or a reconnection time: SSE polling
    /// (SEP-1699, 2025-11-25), where a server may close the stream and the
    /// client resumes with `GET` and `Last-Event-ID`.
    pub fn resumable(&self) -> bool {
        self.last_id().is_some() || self.retry().is_some()
    }

    pub async fn next(&mut self, deadline: Instant) -> Next {
        loop {
            if let Some(item) = self.parser.next_item() {
                return Next::Item(Instant::now(), item);
            }
            let frame = tokio::time::timeout_at(deadline.into(), self.answer.body.frame()).await;
            match frame {
                Err(_) => return Next::Idle,
                Ok(None) => return Next::Closed("closed by the other end".into()),
                Ok(Some(Err(e))) => return Next::Closed(e.to_string()),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if let Err(e) = self.parser.feed(&data) {
                            return Next::Closed(e.to_string());
                        }
                    }
                }
            }
        }
    }
}
