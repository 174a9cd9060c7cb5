//! SSE polling (SEP-1699, 2025-11-25): a server may close the SSE answer
//! to a request after a priming event (an `id`, a `retry`), and the client
//! resumes it with `GET` and `Last-Event-ID`. Doctor does what such a
//! client does before it judges the answer.

use std::time::Duration;

use http::Method;
use serde_json::Value;
use url::Url;

use super::client::{Client, ClientError};

/// How many times the SSE answer to one POST is resumed (SSE polling).
pub const MAX_POST_RESUMES: usize = 3;

/// What resuming a request's SSE answer needs: the session's GET stream.
#[derive(Clone, Copy)]
pub struct Resume<'a> {
    pub client: &'a Client,
    pub url: &'a Url,
    pub session: Option<&'a str>,
    pub version: &'a str,
}

/// The response to `id` after its POST stream closed early (SSE polling,
/// SEP-1699): wait the `retry` asked (at most the timeout), `GET` with
/// `Last-Event-ID`, read that stream for the response; a few times at most.
pub async fn resumed(
    r: Resume<'_>,
    id: &Value,
    mut last_id: Option<String>,
    mut retry: Option<Duration>,
) -> Result<(Value, Option<Duration>), ClientError> {
    for _ in 0..MAX_POST_RESUMES {
        tokio::time::sleep(retry.unwrap_or_default().min(r.client.timeout)).await;
        let mut headers = vec![("accept", "text/event-stream")];
        if let Some(session) = r.session {
            headers.push(("mcp-session-id", session));
        }
        if !r.version.is_empty() {
            headers.push(("mcp-protocol-version", r.version));
        }
        if let Some(last) = &last_id {
            headers.push(("last-event-id", last));
        }
        let answer = r.client.send(Method::GET, r.url, &headers, None).await?;
        if !answer.status.is_success() || !answer.is_sse() {
            return Err(ClientError::Body(format!(
                "the stream ended first, and resuming it (GET with Last-Event-ID) got {}",
                answer.status.as_u16()
            )));
        }
        let mut stream = answer.into_stream();
        let mut first = None;
        match stream.response(id, r.client.timeout, &mut first).await {
            Ok(message) => return Ok((message, first)),
            Err(ClientError::Polled {
                last_id: l,
                retry: t,
                ..
            }) => {
                last_id = l.or(last_id);
                retry = t.or(retry);
            }
            Err(e) => return Err(e),
        }
    }
    Err(ClientError::Body(format!(
        "the stream ended first, {MAX_POST_RESUMES} times resumed and still no response"
    )))
}
