//! The one error a request can end in, and how it becomes a response.
//!
//! Every variant knows its HTTP status, its JSON-RPC error code and message
//! (MCP clients read the body), the metric label it is counted under, and
//! whether it is the client's doing (logged quietly) or a fault.

use bytes::Bytes;
use http::StatusCode;

use crate::http1::head::HeadError;
use crate::trust::Limited;

/// Where a failed upstream call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The backend actively refused the connection: nothing was sent.
    Refused,
    /// Any other failure to connect (unreachable, connect timeout): nothing was sent.
    Connect,
    /// The TLS handshake with an `https://` backend failed (an untrusted or
    /// mismatched certificate, most often): nothing was sent.
    Tls,
    /// No response head within the response timeout.
    Timeout,
    /// The connection failed after the request was (perhaps) sent.
    Io,
    /// The backend took the connection but turned the request away before
    /// processing it (an `h2` backend's `REFUSED_STREAM`, twice): nothing
    /// ran, and the backend is up but full, so no health check counts it.
    Unprocessed,
}

impl UpstreamFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Refused => "refused",
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Io => "io",
            UpstreamFailure::Unprocessed => "unprocessed",
        }
    }

    /// Nothing reached the backend, so another one may be tried.
    pub fn nothing_sent(self) -> bool {
        matches!(
            self,
            UpstreamFailure::Refused
                | UpstreamFailure::Connect
                | UpstreamFailure::Tls
                | UpstreamFailure::Unprocessed
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The token did not open, or its owner is gone: the spec's signal to re-initialize.
    #[error("session not found")]
    SessionNotFound,
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body not received within the body timeout")]
    BodyTimeout,
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    #[error("no backend available")]
    NoBackend,
    /// A request head that cannot be served (400, 431, 501, 505).
    #[error("{0}")]
    Head(HeadError),
    /// The global budget for held request bodies stayed spent until the
    /// body's deadline.
    #[error("no memory budget left for the request body")]
    BodyBudget,
    /// A panic below a connection (a bug): answered 502.
    #[error("internal error")]
    Internal,
    /// A 2026-07-28 request whose `Mcp-*` headers and body disagree, or
    /// that lacks a header it must carry.
    #[error("header mismatch: {0}")]
    HeaderMismatch(String),
    /// A task request (SEP-2663) whose task id did not open, or whose owner
    /// is gone: the SEP's error for an unknown task.
    #[error("task not found")]
    TaskNotFound,
    /// No route matches (the routes have no catch-all).
    #[error("no route matches this request")]
    NoRoute,
    /// The session store did not answer in time (never a 404: that would
    /// make clients drop live sessions).
    #[error("session store unavailable: {0}")]
    StoreUnavailable(String),
    /// `Origin` present and not in `allowed_origins`.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// A `[limits.per_caller]` limit.
    #[error("too many requests from this caller ({})", limited_str(.0))]
    CallerLimited(Limited),
    #[error("upstream {backend} failed ({}): {detail}", failure.as_str())]
    Upstream {
        backend: String,
        failure: UpstreamFailure,
        detail: String,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::SessionNotFound => StatusCode::NOT_FOUND,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoBackend | ProxyError::BodyBudget | ProxyError::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream { failure, .. } => match failure {
                UpstreamFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
                // Full, not broken: a retry later may well be taken.
                UpstreamFailure::Unprocessed => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            ProxyError::Head(HeadError::TooLarge | HeadError::TooManyFields) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::Head(HeadError::UnsupportedCoding) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Head(HeadError::UnsupportedVersion) => {
                StatusCode::HTTP_VERSION_NOT_SUPPORTED
            }
            ProxyError::Head(HeadError::Malformed(_)) => StatusCode::BAD_REQUEST,
            ProxyError::Internal => StatusCode::BAD_GATEWAY,
            ProxyError::HeaderMismatch(_) => StatusCode::BAD_REQUEST,
            // As the Python SDK's servers answer -32602.
            ProxyError::TaskNotFound => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ProxyError::CallerLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Seconds for a `Retry-After` field: the refusal is a matter of load.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ProxyError::BodyBudget | ProxyError::StoreUnavailable(_) => Some(1),
            ProxyError::CallerLimited(Limited::Concurrency) => Some(1),
            ProxyError::CallerLimited(Limited::Rate { retry_after }) => Some(*retry_after),
            ProxyError::Upstream {
                failure: UpstreamFailure::Unprocessed,
                ..
            } => Some(1),
            _ => None,
        }
    }

    /// JSON-RPC error code and message for the body.
    fn jsonrpc(&self) -> (i64, &'static str) {
        match self {
            // The code and message the TypeScript SDK uses for an unknown session.
            ProxyError::SessionNotFound => (-32001, "Session not found"),
            ProxyError::BodyTooLarge { .. } => (-32600, "Request body too large"),
            ProxyError::BodyTimeout => (-32600, "Request body timeout"),
            ProxyError::BodyRead(_) => (-32600, "Invalid request body"),
            ProxyError::NoBackend => (-32603, "No backend available"),
            ProxyError::BodyBudget => (-32603, "Server busy: too many pending request bodies"),
            ProxyError::Internal => (-32603, "Internal error"),
            // The 2026-07-28 revision's HeaderMismatch.
            ProxyError::HeaderMismatch(_) => (-32020, "Header mismatch"),
            ProxyError::NoRoute => (-32600, "No route for this request"),
            ProxyError::OriginNotAllowed => (-32600, "Origin not allowed"),
            ProxyError::StoreUnavailable(_) => (-32603, "Session store unavailable"),
            ProxyError::CallerLimited(_) => (-32000, "Too many requests"),
            // The SEP's own example of the unknown-task error.
            ProxyError::TaskNotFound => (-32602, "Failed to retrieve task: Task not found"),
            ProxyError::Head(HeadError::TooLarge | HeadError::TooManyFields) => {
                (-32600, "Request header fields too large")
            }
            ProxyError::Head(HeadError::UnsupportedCoding) => {
                (-32600, "Transfer coding not implemented")
            }
            ProxyError::Head(HeadError::UnsupportedVersion) => {
                (-32600, "HTTP version not supported")
            }
            ProxyError::Head(HeadError::Malformed(_)) => (-32600, "Invalid HTTP request"),
            ProxyError::Upstream { failure, .. } => match failure {
                UpstreamFailure::Timeout => (-32603, "Upstream timeout"),
                UpstreamFailure::Unprocessed => (-32603, "Upstream busy"),
                _ => (-32603, "Upstream unavailable"),
            },
        }
    }

    /// The `reason` label in `tether_rejected_requests_total`, for errors
    /// raised before routing.
    pub fn reject_reason(&self) -> Option<&'static str> {
        match self {
            ProxyError::BodyTooLarge { .. } => Some("body_too_large"),
            ProxyError::BodyTimeout => Some("body_timeout"),
            ProxyError::BodyRead(_) => Some("body_read"),
            ProxyError::NoBackend => Some("no_backend"),
            ProxyError::BodyBudget => Some("body_budget"),
            ProxyError::HeaderMismatch(_) => Some("header_mismatch"),
            ProxyError::NoRoute => Some("no_route"),
            ProxyError::OriginNotAllowed => Some("origin"),
            ProxyError::StoreUnavailable(_) => Some("store_unavailable"),
            ProxyError::CallerLimited(Limited::Concurrency) => Some("caller_concurrency"),
            ProxyError::CallerLimited(Limited::Rate { .. }) => Some("caller_rate"),
            _ => None,
        }
    }

    /// The JSON-RPC error body, echoing the request's id when there was one.
    pub fn body(&self, id: &serde_json::Value) -> Bytes {
        let (code, message) = self.jsonrpc();
        let mut error = serde_json::json!({"code": code, "message": message});
        if let ProxyError::HeaderMismatch(detail) = self {
            error["data"] = serde_json::json!({ "detail": detail });
        }
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "error": error,
            "id": id,
        });
        Bytes::from(body.to_string())
    }
}

fn limited_str(limited: &Limited) -> &'static str {
    match limited {
        Limited::Concurrency => "concurrency",
        Limited::Rate { .. } => "rate",
    }
}

/// The `id` of a single JSON-RPC message, or null (batches, notifications,
/// anything unparsable). Only called on error paths.
pub fn jsonrpc_id(body: &[u8]) -> serde_json::Value {
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        id: serde_json::Value,
    }
    match serde_json::from_slice::<Message>(body) {
        Ok(Message {
            id: id @ (serde_json::Value::Number(_) | serde_json::Value::String(_)),
        }) => id,
        _ => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_not_found_matches_the_sdk_body() {
        let body = ProxyError::SessionNotFound.body(&json!(7));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":7})
        );
        assert_eq!(ProxyError::SessionNotFound.status(), 404);
    }

    #[test]
    fn ids_are_echoed_only_when_valid() {
        assert_eq!(
            jsonrpc_id(br#"{"jsonrpc":"2.0","id":"a","method":"x"}"#),
            json!("a")
        );
        assert_eq!(jsonrpc_id(br#"{"id":3}"#), json!(3));
        for body in [
            &b"[{\"id\":1}]"[..],
            b"{\"method\":\"n\"}",
            b"not json",
            b"",
            b"{\"id\":{}}",
        ] {
            assert_eq!(jsonrpc_id(body), serde_json::Value::Null);
        }
    }

    #[test]
    fn statuses_follow_the_failure() {
        let up = |failure| ProxyError::Upstream {
            backend: "b".into(),
            failure,
            detail: String::new(),
        };
        assert_eq!(up(UpstreamFailure::Timeout).status(), 504);
        assert_eq!(up(UpstreamFailure::Io).status(), 502);
        assert_eq!(up(UpstreamFailure::Unprocessed).status(), 503);
        assert!(UpstreamFailure::Unprocessed.nothing_sent());
        assert_eq!(ProxyError::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(ProxyError::NoBackend.status(), 503);
    }
}
