//! One HTTP/2 stream, bridged to the HTTP/1.1 request path in memory.
//!
//! The request goes into a pipe as one HTTP/1.1 exchange (`connection:
//! close`): its pseudo-headers as the request line and `Host`, its fields as
//! they came (h2 has refused connection-specific ones and any CR, LF or NUL),
//! `cookie` fields joined, its body as it arrives (a length when the client
//! declared one, chunked otherwise), so `conn` applies every limit, timeout
//! and the body budget to it as to a socket's. The other end of the pipe is
//! an in-memory `Client` that `conn` serves. The HTTP/1.1 answer that comes
//! back is parsed with the proxy's own parser and sent as the stream's
//! response, its body decoded from its framing and sent under the stream's
//! flow control as it arrives (an event stream is never held back).
//!
//! A reset from the client (RST_STREAM) drops the pipe: the in-memory client
//! reads its end as a reset, and the request upstream ends at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, WriteHalf};

use crate::downstream::{Client, ConnSettings};
use crate::http1::chunked::{self, ChunkedDecoder};
use crate::http1::head::{FieldKind, Framing, ResponseHead};
use crate::metrics::Metrics;
use crate::transport::Stream;

/// The pipe's buffer each way: what a stream holds in flight inside Tether.
const PIPE: usize = 64 << 10;
/// Largest response head read back from the pipe: above the limit on a
/// backend's head (64 KiB), since the head Tether writes may be longer
/// (a sealed token in place of a session id).
const MAX_HEAD: usize = 256 << 10;
/// Longest a response waits for a client that gives its stream no window
/// (it stopped reading): then the stream is reset and its relay ends.
const SEND_STALL: Duration = Duration::from_secs(60);

pub(super) struct Context {
    pub peer: SocketAddr,
    /// The peer's address as text, made once per connection.
    pub peer_ip: Arc<str>,
    pub secure: bool,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<ConnSettings>,
    pub resets: Arc<super::Resets>,
}

/// Why a bridge ended early.
enum End {
    /// The client reset the stream (or the connection went).
    Reset,
    /// The request could not be written as HTTP/1.1 (a CONNECT, say): refused.
    Refused(h2::Reason),
    /// The answer in the pipe ended or broke (Tether closed it after an error).
    Broken,
    /// The client gave the stream no window for `SEND_STALL`.
    Stalled,
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
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let mut client = Client::with_peer_ip(
        Stream::Memory(theirs),
        cx.peer,
        cx.peer_ip.clone(),
        &cx.settings,
    );
    client.set_secure(cx.secure);
    // The request as far as it came is in the client's buffer, as if read
    // from a socket: no copy through the pipe, no wait for it.
    client.prefill(first.bytes);
    let tether = streams(client);
    let bridge = async {
        let rest = (!first.complete).then_some((body, first.chunked));
        match bridge(rest, &mut respond, ours, head_request).await {
            Ok(()) => {}
            Err(End::Reset) => {
                cx.metrics.http2_resets.inc();
                cx.resets.note();
            }
            Err(End::Refused(reason)) => respond.send_reset(reason),
            Err(End::Broken) => respond.send_reset(h2::Reason::INTERNAL_ERROR),
            Err(End::Stalled) => respond.send_reset(h2::Reason::CANCEL),
        }
    };
    tokio::join!(tether, bridge);
}

/// The start of a stream's request as HTTP/1.1 bytes: the head, and the
/// body as far as it has arrived (at most a pooled buffer's worth, as one
/// read from a socket would hold).
struct First {
    bytes: Vec<u8>,
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
    request_head(&mut bytes, parts, framing)?;
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
        complete: ended,
        chunked: framing == BodyFraming::Chunked,
    })
}

/// How the bridged request's body is framed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    None,
    /// The client's `content-length`.
    Declared,
    /// The whole body, already here.
    Length(usize),
    Chunked,
}

/// The rest of the request (`rest`: the body still to come, and whether it
/// is chunk-encoded) into the pipe, the answer out of it.
async fn bridge(
    rest: Option<(RecvStream, bool)>,
    respond: &mut SendResponse<Bytes>,
    pipe: DuplexStream,
    head_request: bool,
) -> Result<(), End> {
    let Some((body, chunked)) = rest else {
        // The whole request is in already (most are): the pipe, unsplit,
        // only carries the answer. (It stays open until the answer is in:
        // its end would read as the client's.)
        let mut pipe = pipe;
        return read_response(respond, &mut pipe, head_request).await;
    };
    let (mut from_tether, mut to_tether) = tokio::io::split(pipe);
    let mut written = false;
    let write = write_body(&mut to_tether, body, chunked);
    tokio::pin!(write);
    // The answer may come before the body is all sent (a 413): both at once.
    let read = read_response(respond, &mut from_tether, head_request);
    tokio::pin!(read);
    loop {
        tokio::select! {
            // The answer (and the reset check with it) first.
            biased;
            done = &mut read => return done,
            sent = &mut write, if !written => {
                written = true;
                sent?;
            }
        }
    }
}

/// The HTTP/1.1 request head for a stream's request, into `out`.
fn request_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    framing: BodyFraming,
) -> Result<(), End> {
    if parts.method == http::Method::CONNECT {
        return Err(End::Refused(h2::Reason::PROTOCOL_ERROR));
    }
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // :authority, else a Host field (RFC 9113 §8.3.1).
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| parts.headers.get(http::header::HOST).map(|v| v.as_bytes()));
    if let Some(host) = host {
        field(out, b"host", host);
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        match name.as_str() {
            "host" | "content-length" | "transfer-encoding" | "connection" | "expect" | "te" => {}
            "cookie" => cookies.push(value.as_bytes()),
            _ => field(out, name.as_str().as_bytes(), value.as_bytes()),
        }
    }
    if !cookies.is_empty() {
        field(out, b"cookie", &cookies.join(&b"; "[..]));
    }
    match framing {
        BodyFraming::None => {}
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::Declared => {
            if let Some(len) = parts.headers.get(http::header::CONTENT_LENGTH) {
                field(out, b"content-length", len.as_bytes());
            }
        }
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    Ok(())
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the rest of the body as DATA frames arrive (chunk-encoded when
/// the client declared no length), giving each frame's window back once it
/// is in the pipe.
async fn write_body(
    pipe: &mut WriteHalf<DuplexStream>,
    mut body: RecvStream,
    chunked: bool,
) -> Result<(), End> {
    // A pipe that fails is Tether's side gone (an error answered, a close):
    // not the client's reset.
    let broken = |_| End::Broken;
    let mut framed = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.map_err(|_| End::Reset)?;
        let len = data.len();
        if chunked {
            framed.clear();
            chunked::encode_chunk(&data, &mut framed);
            pipe.write_all(&framed).await.map_err(broken)?;
        } else {
            pipe.write_all(&data).await.map_err(broken)?;
        }
        let _ = body.flow_control().release_capacity(len);
    }
    if chunked {
        pipe.write_all(chunked::LAST_CHUNK).await.map_err(broken)?;
    }
    Ok(())
}

/// Reads the HTTP/1.1 answer from the pipe and sends it as the stream's
/// response, its body as it comes.
async fn read_response(
    respond: &mut SendResponse<Bytes>,
    pipe: &mut (impl AsyncRead + Unpin),
    head_request: bool,
) -> Result<(), End> {
    let mut buf = crate::http1::buf::take();
    let sent = send_head(respond, pipe, &mut buf, head_request).await;
    crate::http1::buf::give(buf);
    sent
}

async fn send_head(
    respond: &mut SendResponse<Bytes>,
    pipe: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    head_request: bool,
) -> Result<(), End> {
    let head = loop {
        if !buf.is_empty() {
            match ResponseHead::parse(buf, MAX_HEAD, head_request) {
                Ok(Some(head)) if head.status < 200 => {
                    buf.drain(..head.len);
                    continue;
                }
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(_) => return Err(End::Broken),
            }
        }
        let read = pipe.read_buf(buf);
        let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
        tokio::select! {
            n = read => match n {
                Ok(0) | Err(_) => return Err(End::Broken),
                Ok(_) => {}
            },
            _ = reset => return Err(End::Reset),
        }
    };
    // One copy of the head, its values shared from it (not one each), into a
    // map built in place (a builder moves its whole state at every field).
    let fields = Bytes::copy_from_slice(&buf[..head.len]);
    let mut response = Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(head.status).map_err(|_| End::Broken)?;
    let map = response.headers_mut();
    map.reserve(head.fields.list.len());
    for f in &head.fields.list {
        // Hop-by-hop fields go (RFC 9113 §8.2.2); a length stays where it
        // is the framing, or describes a HEAD answer's body.
        let skip = matches!(
            f.kind,
            FieldKind::Connection | FieldKind::HopByHop | FieldKind::TransferEncoding
        ) || (f.kind == FieldKind::ContentLength
            && matches!(head.framing, Framing::Chunked | Framing::UntilClose));
        if skip {
            continue;
        }
        let name = match known_name(f.kind) {
            Some(name) => name,
            None => match HeaderName::from_bytes(&fields[f.name.clone()]) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        let Ok(value) = HeaderValue::from_maybe_shared(fields.slice(f.value.clone())) else {
            continue;
        };
        map.append(name, value);
    }
    let no_body = matches!(head.framing, Framing::None | Framing::Length(0));
    let mut send = respond
        .send_response(response, no_body)
        .map_err(|_| End::Reset)?;
    if no_body {
        return Ok(());
    }
    relay_body(&mut send, pipe, buf, head.len, head.framing).await
}

/// The name of a field the parser has recognised, without looking it up.
fn known_name(kind: FieldKind) -> Option<HeaderName> {
    Some(match kind {
        FieldKind::ContentType => http::header::CONTENT_TYPE,
        FieldKind::ContentLength => http::header::CONTENT_LENGTH,
        FieldKind::SessionId => HeaderName::from_static("mcp-session-id"),
        _ => return None,
    })
}

/// The body, decoded from its HTTP/1.1 framing, as DATA frames; the last
/// one carries END_STREAM (no empty frame after it).
async fn relay_body(
    send: &mut SendStream<Bytes>,
    pipe: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    start: usize,
    framing: Framing,
) -> Result<(), End> {
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut decoder = ChunkedDecoder::new();
    let mut at = start;
    loop {
        let mut data = Vec::new();
        let done = match framing {
            Framing::Length(_) => {
                let take = remaining.min((buf.len() - at) as u64) as usize;
                data.extend_from_slice(&buf[at..at + take]);
                remaining -= take as u64;
                remaining == 0
            }
            Framing::Chunked => {
                decoder
                    .decode(&buf[at..], &mut |d| data.extend_from_slice(d))
                    .map_err(|_| End::Broken)?;
                decoder.is_done()
            }
            _ => {
                data.extend_from_slice(&buf[at..]);
                false
            }
        };
        buf.clear();
        at = 0;
        if !data.is_empty() || done {
            send_data(send, Bytes::from(data), done).await?;
        }
        if done {
            return Ok(());
        }
        let read = pipe.read_buf(buf);
        let reset = std::future::poll_fn(|cx| send.poll_reset(cx));
        tokio::select! {
            n = read => match n {
                Ok(0) if framing == Framing::UntilClose => {
                    return send.send_data(Bytes::new(), true).map_err(|_| End::Reset);
                }
                Ok(0) | Err(_) => return Err(End::Broken),
                Ok(_) => {}
            },
            _ = reset => return Err(End::Reset),
        }
    }
}

/// Sends `data` as the stream's window allows; waits (this stream only)
/// while the client's window is full. `last`: its final frame ends the
/// stream (an empty `data` is then one empty frame with END_STREAM).
async fn send_data(send: &mut SendStream<Bytes>, mut data: Bytes, last: bool) -> Result<(), End> {
    if data.is_empty() {
        return send.send_data(data, last).map_err(|_| End::Reset);
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx));
        let n = match tokio::time::timeout(SEND_STALL, granted).await {
            Ok(Some(Ok(n))) if n > 0 => n,
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return Err(End::Reset),
            // The client gave no window for that long: it stopped reading.
            Err(_) => return Err(End::Stalled),
        };
        let chunk = data.split_to(n.min(data.len()));
        send.send_data(chunk, last && data.is_empty())
            .map_err(|_| End::Reset)?;
    }
    Ok(())
}
