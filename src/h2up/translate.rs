//! HTTP/1.1 <-> HTTP/2 heads, pure (tested in `tests.rs`).
//!
//! A request: its method and origin-form target become `:method`, `:scheme`,
//! `:path`; `Host` becomes `:authority`; connection-specific fields go
//! (`Connection` and the fields it names, `Keep-Alive`, `Proxy-Connection`,
//! `Transfer-Encoding`, `Upgrade`, `TE` except `trailers`: RFC 9113
//! §8.2.2), and so does `Expect` (the body is sent whole at once). The body
//! is whole by then, so its length is always known.
//!
//! An answer: a status line, its fields but the connection-specific ones,
//! then a body framed by the server's `content-length` when it gave a valid
//! one, chunked otherwise, and none for HEAD, 204 and 304.

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};

use crate::http1::head::{self, FieldKind, RequestHead};

/// A request ready for an h2 stream.
#[derive(Debug)]
pub(super) struct Request {
    pub head: http::Request<()>,
    pub body: Bytes,
    /// The request said `Connection: close`: the pipe ends after its answer.
    pub close: bool,
    pub head_request: bool,
}

/// How the answer's body is framed on the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    None,
    Length(u64),
    Chunked,
}

/// The h2 request for an HTTP/1.1 `head` (at the start of `buf`) and its
/// whole `body`. `authority`: the backend's, when the request has no `Host`.
pub(super) fn request(
    buf: &[u8],
    head: &RequestHead,
    body: Bytes,
    scheme: &Scheme,
    authority: &Authority,
) -> Result<Request, &'static str> {
    let method = http::Method::from_bytes(&buf[head.method.clone()]).map_err(|_| "method")?;
    if method == http::Method::CONNECT {
        return Err("CONNECT is not relayed");
    }
    let target = &buf[head.target.clone()];
    let path = match head.target_authority() {
        // Absolute form: the path (and query) after the authority.
        Some(a) => {
            let rest = &buf[a.end..head.target.end];
            match rest.is_empty() {
                true => &b"/"[..],
                false => rest,
            }
        }
        None => target,
    };
    let host = head
        .target_authority()
        .map(|a| &buf[a])
        .or_else(|| head.fields.get(buf, FieldKind::Host));
    let authority = match host {
        Some(h) => Authority::try_from(h).map_err(|_| "host")?,
        None => authority.clone(),
    };
    let uri = http::Uri::builder()
        .scheme(scheme.clone())
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| "target")?;
    let mut out = http::Request::builder().method(method.clone()).uri(uri);
    let mut close = !head.keep_alive;
    for f in &head.fields.list {
        let name = &buf[f.name.clone()];
        let value = &buf[f.value.clone()];
        match f.kind {
            FieldKind::Host
            | FieldKind::ContentLength
            | FieldKind::TransferEncoding
            | FieldKind::Expect => continue,
            FieldKind::Connection => {
                close |= head::tokens(value).any(|t| t.eq_ignore_ascii_case(b"close"));
                continue;
            }
            FieldKind::HopByHop => {
                let te_trailers = name.eq_ignore_ascii_case(b"te")
                    && head::tokens(value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
                if te_trailers {
                    out = out.header(http::header::TE, "trailers");
                }
                continue;
            }
            _ => {}
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            return Err("field");
        };
        out = out.header(name, value);
    }
    let declared = head.fields.get(buf, FieldKind::ContentLength).is_some();
    if !body.is_empty() || declared || head.framing == head::Framing::Chunked {
        out = out.header(http::header::CONTENT_LENGTH, body.len());
    }
    let head_out = out.body(()).map_err(|_| "head")?;
    Ok(Request {
        head: head_out,
        body,
        close,
        head_request: method == http::Method::HEAD,
    })
}

/// Writes the HTTP/1.1 head of an h2 answer into `out`; returns how its body
/// is framed. `close`: say `Connection: close` (the pipe ends after it).
pub(super) fn response_head(
    parts: &http::response::Parts,
    head_request: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Body {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let length = single_length(&parts.headers);
    let bodiless = head_request
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    let body = match (bodiless, length) {
        (true, _) => Body::None,
        (false, Some(n)) => Body::Length(n),
        (false, None) => Body::Chunked,
    };
    for (name, value) in &parts.headers {
        if connection_specific(name) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            // Kept as the framing, or as what a HEAD or 304 answer describes;
            // a 204 has none, and an invalid one gives way to chunks.
            let keep = status != http::StatusCode::NO_CONTENT && length.is_some();
            if !keep {
                continue;
            }
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if body == Body::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    body
}

/// The one valid `content-length` (every copy the same), if there is one.
fn single_length(headers: &http::HeaderMap) -> Option<u64> {
    let mut found = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Fields that mean something only to one hop (h2 forbids them; a server
/// that sends one anyway does not get them through).
fn connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

#[cfg(test)]
mod tests;
