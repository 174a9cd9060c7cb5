//! One HTTP/2 stream, served by the HTTP/1.1 request path in memory.
//!
//! The request is written as one HTTP/1.1 exchange (`connection: close`):
//! its pseudo-headers as the request line and `Host`, its fields as they came
//! (h2 has refused connection-specific ones and any CR, LF or NUL), `cookie`
//! fields joined, its body as far as it came (a length when the client
//! declared one or the body is whole, chunked otherwise). That is the first
//! content of an in-memory `Client`'s buffer, as if read from a socket; the
//! rest of the body, and the answer, go through the client's byte stream,
//! which is the h2 stream itself (`super::io`). `conn` serves the client as
//! a socket's: every limit, timeout and the body budget apply to it alike.

use std::net::SocketAddr;
use std::ops::Range;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Request, Response};

use super::io::{Shared, StreamIo};
use crate::downstream::{Client, ConnSettings};
use crate::http1::chunked;
use crate::http1::head::{RequestHead, WrittenRequest};
use crate::metrics::Metrics;
use crate::transport::Stream;

pub(super) struct Context {
    pub peer: SocketAddr,
    /// The peer's address as text, made once per connection.
    pub peer_ip: Arc<str>,
    pub secure: bool,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<ConnSettings>,
    pub resets: Arc<super::Resets>,
}

/// Why a stream is not bridged.
enum End {
    /// The client reset the stream (or the connection went).
    Reset,
    /// The request could not be written as HTTP/1.1 (a CONNECT, say): refused.
    Refused(h2::Reason),
}

/// `streams`: what serves the in-memory client (the connection loop).
pub(super) async fn serve<S, F>(
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    cx: Context,
    streams: Arc<S>,
) where
    S: Fn(Client) -> F,
    F: std::future::Future<Output = ()>,
{
    let mut respond = respond;
    // Reset already (opened and reset at once, as a rapid-reset flood does):
    // no request is started for it.
    let reset = std::future::poll_fn(|c| Poll::Ready(respond.poll_reset(c).is_ready())).await;
    if reset {
        cx.metrics.http2_resets.inc();
        cx.resets.note();
        return;
    }
    let head_request = request.method() == http::Method::HEAD;
    let (parts, mut body) = request.into_parts();
    // Tether reads a body whole anyway: a client waiting for 100 Continue
    // gets it at once (over HTTP/1.1, Tether answers it itself too).
    let expects = parts.headers.get(http::header::EXPECT);
    if expects.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")) {
        let go_on = Response::builder().status(100).body(());
        let sent = go_on.map(|r| respond.send_informational(r).is_ok());
        if !matches!(sent, Ok(true)) {
            return respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }
    let first = match first_bytes(&parts, &mut body) {
        Ok(first) => first,
        Err(End::Refused(reason)) => return respond.send_reset(reason),
        Err(_) => {
            cx.metrics.http2_resets.inc();
            cx.resets.note();
            return;
        }
    };
    drop(parts);
    let rest = (!first.complete).then_some(body);
    let io = Arc::new(Mutex::new(StreamIo::new(
        respond,
        rest,
        first.chunked,
        head_request,
        cx.metrics.clone(),
        cx.resets.clone(),
    )));
    let watched = Shared(io.clone());
    let mut client = Client::with_peer_ip(
        Stream::Boxed(Box::new(Shared(io))),
        cx.peer,
        cx.peer_ip.clone(),
        &cx.settings,
    );
    client.set_secure(cx.secure);
    // The request as far as it came is in the client's buffer, as if read
    // from a socket: no copy, no wait for it; its head read as it was
    // written, not parsed again.
    let head = RequestHead::from_written(
        &first.bytes,
        first.head_len,
        first.written,
        cx.settings.max_header_bytes,
        first.added,
    );
    client.prefill_parsed(first.bytes, head);
    // A reset ends the stream's work whatever it waits on (the body budget,
    // a relay's gate, a store), not only when it next reads or writes: its
    // future is dropped, as a task's that is aborted.
    let mut served = pin!(streams(client));
    std::future::poll_fn(|c| {
        if served.as_mut().poll(c).is_ready() {
            return Poll::Ready(());
        }
        watched.lock().poll_gone(c)
    })
    .await;
}

/// The start of a stream's request as HTTP/1.1 bytes: the head, and the
/// body as far as it has arrived (at most a pooled buffer's worth, as one
/// read from a socket would hold).
struct First {
    bytes: Vec<u8>,
    /// The head's length, and where its parts are.
    head_len: usize,
    written: WrittenRequest,
    /// Fields of the head that are Tether's, not the client's (the
    /// framing, `connection: close`): not counted against its limit.
    added: usize,
    /// The whole request is in `bytes`.
    complete: bool,
    /// The rest of the body is to be chunk-encoded.
    chunked: bool,
}

fn first_bytes(parts: &http::request::Parts, body: &mut RecvStream) -> Result<First, End> {
    let no_body = body.is_end_stream();
    let declared = parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let mut ready = Vec::new();
    let mut ended = no_body;
    let mut size = 0;
    if !no_body {
        // Whoever waits for the body next registers its own waker.
        while size < crate::http1::buf::SIZE {
            match crate::transport::without_waiting(|cx| body.poll_data(cx)) {
                Some(Some(Ok(data))) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    size += data.len();
                    ready.push(data);
                }
                Some(Some(Err(_))) => return Err(End::Reset),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        ended = ended || body.is_end_stream();
    }
    // A body that came whole gets its length; one still coming without a
    // declared length is chunked.
    let framing = match (no_body, declared, ended) {
        (true, _, _) => BodyFraming::None,
        (false, true, _) => BodyFraming::Declared,
        (false, false, true) => BodyFraming::Length(size),
        (false, false, false) => BodyFraming::Chunked,
    };
    let mut bytes = crate::http1::buf::take();
    let (added, written) = request_head(&mut bytes, parts, framing)?;
    let head_len = bytes.len();
    for data in &ready {
        match framing {
            BodyFraming::Chunked => chunked::encode_chunk(data, &mut bytes),
            _ => bytes.extend_from_slice(data),
        }
    }
    if ended && framing == BodyFraming::Chunked {
        bytes.extend_from_slice(chunked::LAST_CHUNK);
    }
    Ok(First {
        bytes,
        head_len,
        written,
        added,
        complete: ended,
        chunked: framing == BodyFraming::Chunked,
    })
}

/// How the bridged request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    None,
    /// The client's `content-length`.
    Declared,
    /// The whole body, already here.
    Length(usize),
    Chunked,
}

/// The HTTP/1.1 request head for a stream's request, into `out` (empty);
/// returns how many of its fields are Tether's own (what an HTTP/1.1 client
/// would have sent is the client's: `:authority` as `Host`, cookies as one
/// field), and where its parts are.
fn request_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    framing: BodyFraming,
) -> Result<(usize, WrittenRequest), End> {
    if parts.method == http::Method::CONNECT {
        return Err(End::Refused(h2::Reason::PROTOCOL_ERROR));
    }
    let method = put(out, parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let target = put(out, target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut written = WrittenRequest::new(method, target);
    let out = &mut Head {
        out,
        written: &mut written,
    };
    // :authority, else a Host field (RFC 9113 §8.3.1).
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| parts.headers.get(http::header::HOST).map(|v| v.as_bytes()));
    if let Some(host) = host {
        out.field(b"host", host);
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        match name.as_str() {
            "host" | "content-length" | "transfer-encoding" | "connection" | "expect" | "te" => {}
            "cookie" => cookies.push(value.as_bytes()),
            _ => out.field(name.as_str().as_bytes(), value.as_bytes()),
        }
    }
    if !cookies.is_empty() {
        out.field(b"cookie", &cookies.join(&b"; "[..]));
    }
    match framing {
        BodyFraming::None => {}
        BodyFraming::Chunked => out.field(b"transfer-encoding", b"chunked"),
        BodyFraming::Declared => {
            if let Some(len) = parts.headers.get(http::header::CONTENT_LENGTH) {
                out.field(b"content-length", len.as_bytes());
            }
        }
        BodyFraming::Length(n) => out.field(b"content-length", n.to_string().as_bytes()),
    }
    out.field(b"connection", b"close");
    out.out.extend_from_slice(b"\r\n");
    let framed = matches!(framing, BodyFraming::Chunked | BodyFraming::Length(_));
    Ok((1 + usize::from(framed), written))
}

/// Appends `bytes`; returns where they are.
fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Range<usize> {
    let start = out.len();
    out.extend_from_slice(bytes);
    start..out.len()
}

/// A head being written, noting where each field is.
struct Head<'a> {
    out: &'a mut Vec<u8>,
    written: &'a mut WrittenRequest,
}

impl Head<'_> {
    fn field(&mut self, name: &[u8], value: &[u8]) {
        let name = put(self.out, name);
        self.out.extend_from_slice(b": ");
        let value = put(self.out, value);
        self.out.extend_from_slice(b"\r\n");
        self.written.field(name, value);
    }
}

#[cfg(test)]
mod tests;
