//! A Streamable HTTP client (2025-03-26 .. 2025-11-25), with or without a session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, Uri};
use serde_json::{json, Value};

use super::transport::{is_event_stream, parse_url, send, status_error, ClientBody, EventStream};
use super::{find_response, into_result, request_body, tool_text, ClientError};

const PROTOCOL_VERSION: &str = "2025-06-18";
const MCP_SESSION_ID: &str = "mcp-session-id";
const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";

/// An initialized Streamable HTTP session (or a stateless client when the server sent no id).
#[derive(Debug)]
pub struct StreamableClient {
    url: Uri,
    session_id: Option<String>,
    protocol_version: String,
    next_id: AtomicU64,
    last_session_header: Mutex<Option<String>>,
}

impl StreamableClient {
    /// POST `initialize`, then `notifications/initialized`. `url` is the MCP endpoint, e.g.
    /// `http://127.0.0.1:8080/mcp`.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let mut client = Self {
            url: parse_url(url)?,
            session_id: None,
            protocol_version: PROTOCOL_VERSION.to_owned(),
            next_id: AtomicU64::new(1),
            last_session_header: Mutex::new(None),
        };
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "tether-testkit", "version": "0.1.0"},
        });
        let result = client.request_inner("initialize", params, false).await?;
        client.session_id = client.last_session_header();
        if let Some(version) = result.get("protocolVersion").and_then(Value::as_str) {
            client.protocol_version = version.to_owned();
        }

        let body = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        let response = client.post(body, true).await?;
        if !response.status().is_success() {
            return Err(status_error(response, "notifications/initialized").await);
        }
        Ok(client)
    }

    /// Continues an existing session through `url` (another proxy instance, say) without a new
    /// `initialize`. Fails only on a bad URL.
    pub fn resume(url: &str, session_id: &str) -> Result<Self, ClientError> {
        Ok(Self {
            url: parse_url(url)?,
            session_id: Some(session_id.to_owned()),
            protocol_version: PROTOCOL_VERSION.to_owned(),
            next_id: AtomicU64::new(1000),
            last_session_header: Mutex::new(None),
        })
    }

    /// The session id the server assigned at initialize (`None` for a stateless server).
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The protocol version agreed at initialize, sent as `MCP-Protocol-Version`.
    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// The `Mcp-Session-Id` header of the most recent response (`None` if it had none).
    pub fn last_session_header(&self) -> Option<String> {
        self.last_session_header
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Send any JSON-RPC request in this session and return its `result`.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.request_inner(method, params, true).await
    }

    /// `tools/call`; accepts a JSON or an SSE response and returns `result`.
    pub async fn call_tool(&self, name: &str, args: Value) -> Result<Value, ClientError> {
        self.request("tools/call", json!({"name": name, "arguments": args}))
            .await
    }

    /// The name of the replica that answered.
    pub async fn whoami(&self) -> Result<String, ClientError> {
        tool_text(&self.call_tool("whoami", json!({})).await?)
    }

    /// Open the standalone GET stream of the session. Non-2xx statuses are errors.
    pub async fn get_stream(&self) -> Result<EventStream, ClientError> {
        let mut headers = self.headers(true);
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let response = send(Method::GET, &self.url, headers, Bytes::new()).await?;
        self.note_session_header(response.headers());
        if !response.status().is_success() {
            return Err(status_error(response, "GET stream").await);
        }
        Ok(EventStream::new(response))
    }

    /// DELETE the session; returns the status, whatever it is.
    pub async fn delete(&self) -> Result<u16, ClientError> {
        let response = send(Method::DELETE, &self.url, self.headers(true), Bytes::new()).await?;
        self.note_session_header(response.headers());
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }

    async fn request_inner(
        &self,
        method: &str,
        params: Value,
        initialized: bool,
    ) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let response = self
            .post(request_body(id, method, params), initialized)
            .await?;
        if !response.status().is_success() {
            return Err(status_error(response, method).await);
        }
        read_response(response, id, method).await
    }

    async fn post(
        &self,
        body: String,
        initialized: bool,
    ) -> Result<Response<ClientBody>, ClientError> {
        let mut headers = self.headers(initialized);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let response = send(Method::POST, &self.url, headers, Bytes::from(body)).await?;
        self.note_session_header(response.headers());
        Ok(response)
    }

    /// Session id and protocol version headers (only once initialized).
    fn headers(&self, initialized: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if !initialized {
            return headers;
        }
        if let Some(value) = self
            .session_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert(MCP_SESSION_ID, value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.protocol_version) {
            headers.insert(MCP_PROTOCOL_VERSION, value);
        }
        headers
    }

    fn note_session_header(&self, headers: &HeaderMap) {
        let seen = headers
            .get(MCP_SESSION_ID)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        *self
            .last_session_header
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = seen;
    }
}

/// Find the response to `id` in a 2xx JSON or SSE body.
async fn read_response(
    response: Response<ClientBody>,
    id: u64,
    method: &str,
) -> Result<Value, ClientError> {
    let status = response.status().as_u16();
    if is_event_stream(response.headers()) {
        let mut stream = EventStream::new(response);
        while let Some(event) = stream.next_event().await? {
            let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                continue; // priming events and the like
            };
            if let Some(found) = find_response(message, id) {
                return into_result(found, Some(status), &event.data);
            }
        }
        return Err(ClientError {
            status: Some(status),
            body: String::new(),
            message: format!("{method}: SSE stream ended without the response"),
        });
    }
    let body = response.into_body().collect().await?;
    let raw = String::from_utf8_lossy(&body).into_owned();
    let parsed = serde_json::from_slice::<Value>(&body).ok();
    match parsed.and_then(|message| find_response(message, id)) {
        Some(found) => into_result(found, Some(status), &raw),
        None => Err(ClientError {
            status: Some(status),
            body: raw,
            message: format!("{method}: no JSON-RPC response with id {id} in the body"),
        }),
    }
}
