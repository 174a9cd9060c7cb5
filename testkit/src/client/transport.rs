//! HTTP/1.1 plumbing for the test clients: one fresh TCP connection per request.
//!
//! A fresh connection per request keeps disconnects deterministic: the connection task lives
//! exactly as long as the response body, so dropping a body (or a request future) closes the
//! socket at once, which is what a proxy and a replica must notice.

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::ClientError;
use crate::sse::{SseEvent, SseParser};

/// A complete HTTP response, for tests that look at raw status, headers and body.
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one request over a fresh HTTP/1.1 connection and read the whole response.
/// `url` must be `http://host[:port]/path[?query]`.
pub async fn send_raw(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<RawResponse, ClientError> {
    let url = parse_url(url)?;
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = http::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| ClientError::local(format!("bad header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| ClientError::local(format!("bad header value {value:?}: {e}")))?;
        map.append(name, value);
    }
    let response = send(method, &url, map, body.into()).await?;
    let (parts, body) = response.into_parts();
    Ok(RawResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await?,
    })
}

/// Parse an `http://` URL with an authority.
pub(crate) fn parse_url(url: &str) -> Result<Uri, ClientError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ClientError::local(format!("bad URL {url:?}: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(ClientError::local(format!(
            "only http://host:port URLs are supported, got {url:?}"
        )));
    }
    Ok(uri)
}

pub(crate) async fn send(
    method: Method,
    url: &Uri,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<Response<ClientBody>, ClientError> {
    let authority = url
        .authority()
        .ok_or_else(|| ClientError::local(format!("URL without authority: {url}")))?;
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect(format!("{}:{port}", authority.host()))
        .await
        .map_err(|e| ClientError::transport(format!("connect to {authority} failed: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::transport(format!("HTTP handshake failed: {e}")))?;
    let connection = AbortOnDrop(
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "test client connection ended with an error");
            }
        })
        .abort_handle(),
    );

    if !headers.contains_key(HOST) {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| ClientError::local(format!("bad authority: {e}")))?;
        headers.insert(HOST, host);
    }
    let path = url.path_and_query().map_or("/", |pq| pq.as_str());
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(body))
        .map_err(|e| ClientError::local(format!("bad request: {e}")))?;
    *request.headers_mut() = headers;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::transport(format!("request failed: {e}")))?;
    Ok(response.map(|inner| ClientBody {
        inner,
        _connection: connection,
    }))
}

/// Aborts the connection task when dropped, so an abandoned body closes its socket.
#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// === impl ClientBody ===

/// A response body that owns its connection.
#[derive(Debug)]
pub(crate) struct ClientBody {
    inner: Incoming,
    _connection: AbortOnDrop,
}

impl ClientBody {
    /// The next data chunk, `None` at the end.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        while let Some(frame) = self.inner.frame().await {
            let frame =
                frame.map_err(|e| ClientError::transport(format!("reading body failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    pub(crate) async fn collect(mut self) -> Result<Bytes, ClientError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(all))
    }
}

/// Read a non-2xx response into an error carrying its status and body.
pub(crate) async fn status_error(response: Response<ClientBody>, what: &str) -> ClientError {
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("<body unreadable: {error}>"),
    };
    ClientError {
        status: Some(status.as_u16()),
        body,
        message: format!("{what}: HTTP {status}"),
    }
}

pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

// === impl EventStream ===

/// An open SSE response, read event by event. Dropping it closes the connection.
#[derive(Debug)]
pub struct EventStream {
    status: StatusCode,
    headers: HeaderMap,
    body: ClientBody,
    parser: SseParser,
    ended: bool,
}

impl EventStream {
    pub(crate) fn new(response: Response<ClientBody>) -> Self {
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
            parser: SseParser::default(),
            ended: false,
        }
    }

    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The next event; `Ok(None)` once the server ended the stream.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(event) = self.parser.next_event().map_err(ClientError::transport)? {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.next_chunk().await? {
                Some(chunk) => self.parser.push(&chunk),
                None => self.ended = true,
            }
        }
    }
}
