//! A legacy HTTP+SSE client (2024-11-05): holds the GET stream, POSTs to the endpoint it named.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Uri};
use serde_json::{json, Value};

use super::transport::{parse_url, send, status_error, EventStream};
use super::{find_response, into_result, request_body, tool_text, ClientError};

/// An open legacy SSE session. Dropping it closes the GET stream.
#[derive(Debug)]
pub struct LegacyClient {
    endpoint: String,
    post_url: String,
    stream: EventStream,
    next_id: u64,
}

impl LegacyClient {
    /// GET `sse_url` and read the first event, which must be `endpoint`. Its data is resolved
    /// against `sse_url`; an absolute URL of another origin is refused, like the SDK clients do.
    pub async fn connect(sse_url: &str) -> Result<Self, ClientError> {
        let base = parse_url(sse_url)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let response = send(Method::GET, &base, headers, Bytes::new()).await?;
        if !response.status().is_success() {
            return Err(status_error(response, "GET legacy SSE stream").await);
        }
        let mut stream = EventStream::new(response);
        let first = stream
            .next_event()
            .await?
            .ok_or_else(|| ClientError::transport("SSE stream ended before the endpoint event"))?;
        if first.event != "endpoint" {
            return Err(ClientError {
                status: None,
                body: first.data,
                message: format!("first SSE event is {:?}, not \"endpoint\"", first.event),
            });
        }
        let post_url = resolve(&base, first.data.trim())?;
        Ok(Self {
            endpoint: first.data,
            post_url,
            stream,
            next_id: 1,
        })
    }

    /// The next event on the GET stream: `Ok(None)` when the stream ended
    /// cleanly, an error when it was cut.
    pub async fn next_event(&mut self) -> Result<Option<crate::SseEvent>, ClientError> {
        self.stream.next_event().await
    }

    /// The endpoint event's data as received.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where POSTs go: the endpoint resolved against the SSE URL (or the override).
    pub fn post_url(&self) -> String {
        self.post_url.clone()
    }

    /// Send POSTs to `url` instead, e.g. through another proxy instance than the GET.
    pub fn with_post_url(mut self, url: String) -> Self {
        self.post_url = url;
        self
    }

    /// POST a JSON-RPC request (expecting 202), then read `event: message` events until the
    /// response with its id arrives; returns `result`.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let url = parse_url(&self.post_url)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = Bytes::from(request_body(id, method, params));
        let response = send(Method::POST, &url, headers, body).await?;
        if response.status().as_u16() != 202 {
            return Err(status_error(response, &format!("POST {method}")).await);
        }
        drop(response); // "Accepted"; its connection is done

        while let Some(event) = self.stream.next_event().await? {
            if event.event != "message" {
                continue;
            }
            let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if let Some(found) = find_response(message, id) {
                return into_result(found, None, &event.data);
            }
        }
        Err(ClientError::transport(format!(
            "{method}: SSE stream ended before the response"
        )))
    }

    /// `tools/call`; returns `result`.
    pub async fn call_tool(&mut self, name: &str, args: Value) -> Result<Value, ClientError> {
        self.request("tools/call", json!({"name": name, "arguments": args}))
            .await
    }

    /// The name of the replica that answered.
    pub async fn whoami(&mut self) -> Result<String, ClientError> {
        let result = self.call_tool("whoami", json!({})).await?;
        tool_text(&result)
    }
}

/// Resolve endpoint data against the SSE URL, refusing another origin.
fn resolve(base: &Uri, endpoint: &str) -> Result<String, ClientError> {
    let scheme = base.scheme_str().unwrap_or("http");
    let origin = format!("{scheme}://{}", base.authority().map_or("", |a| a.as_str()));
    let absolute = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_owned()
    } else if let Some(rest) = endpoint.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if endpoint.starts_with('/') {
        format!("{origin}{endpoint}")
    } else if endpoint.starts_with('?') {
        format!("{origin}{}{endpoint}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{origin}{dir}{endpoint}")
    };
    let resolved: Uri = absolute.parse().map_err(|e| ClientError {
        status: None,
        body: endpoint.to_owned(),
        message: format!("endpoint is not a valid URL: {e}"),
    })?;
    if !same_origin(base, &resolved) {
        return Err(ClientError {
            status: None,
            body: endpoint.to_owned(),
            message: format!("endpoint origin does not match the SSE URL origin {origin}"),
        });
    }
    Ok(absolute)
}

fn same_origin(a: &Uri, b: &Uri) -> bool {
    fn key(uri: &Uri) -> Option<(String, String, u16)> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let default = if scheme == "https" { 443 } else { 80 };
        Some((scheme, host, uri.port_u16().unwrap_or(default)))
    }
    key(a).is_some() && key(a) == key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Uri {
        "http://127.0.0.1:8080/mcp/sse".parse().expect("uri")
    }

    #[test]
    fn resolves_relative_forms() {
        let ok = |e: &str| resolve(&base(), e).expect("resolve");
        assert_eq!(
            ok("/messages?sessionId=1"),
            "http://127.0.0.1:8080/messages?sessionId=1"
        );
        assert_eq!(
            ok("messages/?session_id=1"),
            "http://127.0.0.1:8080/mcp/messages/?session_id=1"
        );
        assert_eq!(ok("?x=1"), "http://127.0.0.1:8080/mcp/sse?x=1");
        assert_eq!(
            ok("http://127.0.0.1:8080/m?x=1"),
            "http://127.0.0.1:8080/m?x=1"
        );
        assert_eq!(ok("//127.0.0.1:8080/m"), "http://127.0.0.1:8080/m");
    }

    #[test]
    fn refuses_other_origins() {
        for endpoint in [
            "http://127.0.0.1:9999/m",
            "https://127.0.0.1:8080/m",
            "//evil/m",
        ] {
            let err = resolve(&base(), endpoint).expect_err(endpoint);
            assert!(err.message.contains("origin"), "{err}");
        }
    }
}
