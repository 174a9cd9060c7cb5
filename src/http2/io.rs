//! An HTTP/2 stream as the byte stream of an in-memory `Client`: what the
//! connection loop reads is the stream's request body as HTTP/1.1 (its DATA
//! frames, chunk-encoded when the client declared no length), and what it
//! writes, an HTTP/1.1 answer, goes out as the stream's response: the head
//! parsed with the proxy's own parser and sent as HEADERS, the body decoded
//! from its framing and sent as DATA under the stream's flow control (an
//! event stream is never held back). No pipe and no second future between
//! the two: a write is on the wire's queue when it returns.
//!
//! Backpressure: a write is taken whole once what came before it is sent;
//! what the window does not take waits in `pending` (one write's worth at
//! most), and the next write, or a flush, waits until it is sent. A client
//! that gives no window for `SEND_STALL` has the stream reset.
//!
//! A reset from the client (RST_STREAM, or the connection gone) reads as a
//! reset connection, so the request upstream ends at once; it is counted
//! (`tether_http2_resets_total`, and the connection's rapid-reset guard) if
//! the answer had not ended. An answer that ends before it is whole (the
//! backend cut it, Tether closed after an error) resets the stream
//! (`INTERNAL_ERROR`): the client must not take it for a whole one. The
//! stream's task also watches for a reset (`poll_gone`, through `Shared`),
//! so a request waiting on something else (the body budget) ends at once.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::http1::chunked::{self, ChunkedDecoder};
use crate::http1::head::{FieldKind, Framing, ResponseHead};
use crate::metrics::Metrics;

/// Largest response head taken: above the limit on a backend's head
/// (64 KiB), since the head Tether writes may be longer (a sealed token in
/// place of a session id).
const MAX_HEAD: usize = 256 << 10;
/// Longest a response waits for a client that gives its stream no window
/// (it stopped reading): then the stream is reset and its relay ends.
const SEND_STALL: Duration = Duration::from_secs(60);

/// The answer, as far as it went.
enum Answer {
    /// Its head is not whole yet: what came of it.
    Head {
        respond: SendResponse<Bytes>,
        part: Vec<u8>,
    },
    /// The head is sent; the body goes as DATA frames.
    Body {
        send: SendStream<Bytes>,
        framing: Framing,
        /// Of a `Length` body.
        remaining: u64,
        decoder: ChunkedDecoder,
        /// The body is all decoded: the last of `pending` ends the stream.
        finishing: bool,
    },
    /// Whole, or reset: nothing more goes out.
    Done,
}

pub(super) struct StreamIo {
    /// The request body still to come (`None` once it ended).
    body: Option<RecvStream>,
    /// The body still to come is chunk-encoded for the reader.
    chunked: bool,
    /// Bytes for the reader not taken yet (a frame larger than its buffer,
    /// a chunk's framing), from `carry_at`.
    carry: Vec<u8>,
    carry_at: usize,
    answer: Answer,
    head_request: bool,
    /// Decoded body bytes the window has not taken yet.
    pending: Bytes,
    /// Armed while `pending` waits for window.
    stall: Option<Pin<Box<Sleep>>>,
    /// The client reset the stream (or the connection failed).
    reset: bool,
    /// Our side ended: reads end too.
    closed: bool,
    metrics: Arc<Metrics>,
    resets: Arc<super::Resets>,
}

impl StreamIo {
    /// `body`: the request body still to come (none if it came whole),
    /// chunk-encoded for the reader when `chunked`.
    pub(super) fn new(
        respond: SendResponse<Bytes>,
        body: Option<RecvStream>,
        chunked: bool,
        head_request: bool,
        metrics: Arc<Metrics>,
        resets: Arc<super::Resets>,
    ) -> StreamIo {
        StreamIo {
            body,
            chunked,
            carry: Vec::new(),
            carry_at: 0,
            answer: Answer::Head {
                respond,
                part: Vec::new(),
            },
            head_request,
            pending: Bytes::new(),
            stall: None,
            reset: false,
            closed: false,
            metrics,
            resets,
        }
    }

    /// The client reset the stream (or the connection went): counted once,
    /// if the answer had not ended.
    fn gone(&mut self) -> io::Error {
        if !self.reset {
            self.reset = true;
            if !matches!(self.answer, Answer::Done) {
                self.metrics.http2_resets.inc();
                self.resets.note();
            }
        }
        io::ErrorKind::ConnectionReset.into()
    }

    /// Ready once the client has reset the stream, whatever the request
    /// path is waiting on (the body budget, a relay's gate, a store): the
    /// stream's task then drops it. Pending once the answer has ended.
    pub(super) fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.reset {
            return Poll::Ready(());
        }
        if self.closed {
            return Poll::Pending;
        }
        ready!(self.poll_reset(cx));
        self.gone();
        Poll::Ready(())
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.answer {
            Answer::Head { respond, .. } => respond.poll_reset(cx).map(|_| ()),
            Answer::Body { send, .. } => send.poll_reset(cx).map(|_| ()),
            Answer::Done => Poll::Pending,
        }
    }

    /// Takes the answer's bytes: the head until it is whole, then the body.
    fn take(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.answer {
            Answer::Head { part, .. } if part.is_empty() => self.take_head(data, false),
            Answer::Head { part, .. } => {
                part.extend_from_slice(data);
                self.take_head(&[], true)
            }
            Answer::Body { .. } => self.take_body(data),
            // Bytes after the end (none are written): dropped.
            Answer::Done => Ok(()),
        }
    }

    /// Parses the head from `data` (or from what came of it, `in_part`) and
    /// sends it; the bytes after it are the body's.
    fn take_head(&mut self, data: &[u8], in_part: bool) -> io::Result<()> {
        let Answer::Head { respond, part } = &mut self.answer else {
            return Ok(());
        };
        let held = std::mem::take(part);
        let all = if in_part { &held[..] } else { data };
        let mut at = 0;
        let head = loop {
            match ResponseHead::parse_written(&all[at..], MAX_HEAD, self.head_request) {
                // An interim answer (Tether sends none): skipped.
                Ok(Some(head)) if head.status < 200 => at += head.len,
                Ok(Some(head)) => break head,
                Ok(None) => {
                    let mut keep = held;
                    if !in_part {
                        keep.extend_from_slice(data);
                    }
                    keep.drain(..at);
                    *part = keep;
                    return Ok(());
                }
                Err(_) => return Err(self.broken()),
            }
        };
        let start = at + head.len;
        // One copy for the head's values and, where it goes as it is, the
        // body that came with it.
        let verbatim = matches!(head.framing, Framing::Length(_) | Framing::UntilClose);
        let copied = Bytes::copy_from_slice(&all[at..if verbatim { all.len() } else { start }]);
        let response = match response(copied.slice(..head.len), &head) {
            Some(response) => response,
            None => return Err(self.broken()),
        };
        let no_body = matches!(head.framing, Framing::None | Framing::Length(0));
        let send = match respond.send_response(response, no_body) {
            Ok(send) => send,
            Err(_) => return Err(self.gone()),
        };
        if no_body {
            self.answer = Answer::Done;
            return Ok(());
        }
        self.answer = Answer::Body {
            send,
            framing: head.framing,
            remaining: match head.framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            decoder: ChunkedDecoder::new(),
            finishing: false,
        };
        if verbatim {
            return self.take_body_from(&all[start..], Some(copied.slice(head.len..)));
        }
        self.take_body(&all[start..])
    }

    /// Decodes body bytes into `pending` (empty when this is called).
    fn take_body(&mut self, data: &[u8]) -> io::Result<()> {
        self.take_body_from(data, None)
    }

    /// As `take_body`; `shared`: `data` already copied, where the body
    /// goes as it came.
    fn take_body_from(&mut self, data: &[u8], shared: Option<Bytes>) -> io::Result<()> {
        let Answer::Body {
            send,
            framing,
            remaining,
            decoder,
            finishing,
        } = &mut self.answer
        else {
            return Ok(());
        };
        let (decoded, done) = match framing {
            Framing::Length(_) => {
                let take = (*remaining).min(data.len() as u64) as usize;
                *remaining -= take as u64;
                let body = match shared {
                    Some(mut shared) => {
                        shared.truncate(take);
                        shared
                    }
                    None => Bytes::copy_from_slice(&data[..take]),
                };
                (body, *remaining == 0)
            }
            Framing::Chunked => {
                let mut out = Vec::new();
                if decoder
                    .decode(data, &mut |d| out.extend_from_slice(d))
                    .is_err()
                {
                    return Err(self.broken());
                }
                (Bytes::from(out), decoder.is_done())
            }
            Framing::UntilClose => (
                shared.unwrap_or_else(|| Bytes::copy_from_slice(data)),
                false,
            ),
            Framing::None => (Bytes::new(), true),
        };
        if done && decoded.is_empty() {
            if send.send_data(Bytes::new(), true).is_err() {
                return Err(self.gone());
            }
            self.answer = Answer::Done;
            return Ok(());
        }
        *finishing = done;
        self.pending = decoded;
        Ok(())
    }

    /// Sends `pending` as the window allows; `Pending` (the waker
    /// registered) while the window is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let Answer::Body {
                send, finishing, ..
            } = &mut self.answer
            else {
                self.pending = Bytes::new();
                break;
            };
            send.reserve_capacity(self.pending.len());
            match send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(0))) => continue,
                Poll::Ready(Some(Ok(n))) => {
                    self.stall = None;
                    let chunk = self.pending.split_to(n.min(self.pending.len()));
                    let last = *finishing && self.pending.is_empty();
                    if send.send_data(chunk, last).is_err() {
                        return Poll::Ready(Err(self.gone()));
                    }
                    if last {
                        self.answer = Answer::Done;
                    }
                }
                Poll::Ready(_) => return Poll::Ready(Err(self.gone())),
                Poll::Pending => {
                    let stall = self
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(SEND_STALL)));
                    if stall.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The client gave no window for that long: it stopped reading.
                    send.send_reset(h2::Reason::CANCEL);
                    self.answer = Answer::Done;
                    self.pending = Bytes::new();
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The answer cannot be sent as HTTP/2 (Tether wrote something it
    /// cannot parse): the stream is reset.
    fn broken(&mut self) -> io::Error {
        self.end_broken();
        io::Error::new(io::ErrorKind::InvalidData, "answer not HTTP/1.1")
    }

    fn end_broken(&mut self) {
        match std::mem::replace(&mut self.answer, Answer::Done) {
            Answer::Head { mut respond, .. } => respond.send_reset(h2::Reason::INTERNAL_ERROR),
            Answer::Body { mut send, .. } => send.send_reset(h2::Reason::INTERNAL_ERROR),
            Answer::Done => {}
        }
        self.pending = Bytes::new();
    }

    /// Our side ends: a body that runs until the close ends the stream; an
    /// answer not whole resets it. Every write that succeeds is flushed
    /// before the next, so bytes still waiting for window here are a write
    /// given up on (the relay's write timeout: the client stopped reading):
    /// the stream is cancelled, not ended past its window.
    fn finish(&mut self) {
        self.closed = true;
        if let Answer::Body {
            send,
            framing,
            finishing,
            ..
        } = &mut self.answer
        {
            if !self.pending.is_empty() {
                send.send_reset(h2::Reason::CANCEL);
                self.answer = Answer::Done;
                self.pending = Bytes::new();
                return;
            }
            if *finishing || *framing == Framing::UntilClose {
                let _ = send.send_data(Bytes::new(), true);
                self.answer = Answer::Done;
                return;
            }
        }
        if !self.reset {
            self.end_broken();
        }
    }
}

/// The stream's response head from the HTTP/1.1 one (`bytes`, parsed as
/// `head`), its values shared from one copy of it.
fn response(fields: Bytes, head: &ResponseHead) -> Option<Response<()>> {
    let mut response = Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(head.status).ok()?;
    // Filled in place (a builder moves its whole state at every field).
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
    Some(response)
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

impl AsyncRead for StreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if this.reset {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            if this.carry_at < this.carry.len() {
                let rest = &this.carry[this.carry_at..];
                let n = rest.len().min(out.remaining());
                out.put_slice(&rest[..n]);
                this.carry_at += n;
                if this.carry_at == this.carry.len() {
                    this.carry.clear();
                    this.carry_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let Some(body) = &mut this.body else {
                // The request is all read: only a reset is news.
                ready!(this.poll_reset(cx));
                return Poll::Ready(Err(this.gone()));
            };
            match ready!(body.poll_data(cx)) {
                // An empty frame (the END_STREAM some clients send after the
                // body) is nothing to read: an empty read would be a close.
                Some(Ok(data)) if data.is_empty() => {}
                Some(Ok(data)) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    if this.chunked {
                        chunked::encode_chunk(&data, &mut this.carry);
                    } else if data.len() <= out.remaining() {
                        out.put_slice(&data);
                        return Poll::Ready(Ok(()));
                    } else {
                        this.carry.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => return Poll::Ready(Err(this.gone())),
                None => {
                    this.body = None;
                    if this.chunked {
                        this.carry.extend_from_slice(chunked::LAST_CHUNK);
                    }
                }
            }
        }
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        ready!(this.poll_drain(cx))?;
        this.take(data)?;
        // What the window takes now goes; the rest waits for the next
        // write or a flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        // Unwinding: the h2 stream is dropped as it is (h2 resets it), with
        // nothing more done here that could panic again.
        if std::thread::panicking() {
            return;
        }
        if !self.closed {
            self.finish();
        }
    }
}

/// A `StreamIo` shared between the in-memory client, which reads and
/// writes it, and the stream's task, which watches it for a reset
/// (`poll_gone`). Both run in that one task, so the lock is never waited on.
pub(super) struct Shared(pub Arc<Mutex<StreamIo>>);

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, StreamIo> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, out)
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}
