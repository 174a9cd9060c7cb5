//! One pipe's bridge: HTTP/1.1 requests in, h2 streams out, the answers back
//! as HTTP/1.1, one request after another for as long as the pipe is kept.
//!
//! The pipe closed without an answer is what Tether reads as a failed call
//! (a 502 with its JSON-RPC body, counted in `tether_upstream_errors_total`);
//! a body cut mid-way is a cut body, as on a socket. A request that never
//! reached the backend (no connection could be had, no stream opened, the
//! stream refused unprocessed twice) closes the pipe with its reason
//! (`pipe::Unsent`): Tether then takes it as the backend's failure to
//! connect, and fails over from it as from a refused connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, ReadHalf, WriteHalf};

use super::pipe::Unsent;
use super::translate::{self, Body, Request};
use super::{Conn, DialError, Link, Picked, Target};
use crate::error::UpstreamFailure;
use crate::http1::chunked::{self, ChunkedDecoder};
use crate::http1::head::{Framing, RequestHead};

/// Connections tried past the first for a stream that cannot be opened
/// (every live one may have been told to go away), before a fresh one.
const MAX_GONE: usize = super::MAX_CONNECTIONS;

/// Largest request head read from the pipe (Tether wrote it; its own limit
/// on a client's head is lower).
const MAX_HEAD: usize = 256 << 10;

/// Why a bridge stops serving its pipe.
enum End {
    /// Tether's end of the pipe is gone (nothing more to do), or the
    /// exchange is over and the pipe is to be closed.
    Closed,
    /// The call failed; the pipe closes without (the rest of) an answer.
    Failed(String),
    /// Nothing of the request reached the backend: the pipe closes with
    /// this reason.
    Unsent(DialError),
}

pub(super) async fn serve(
    pipe: DuplexStream,
    unsent: Unsent,
    link: Arc<Link>,
    target: Target,
    first: Option<Conn>,
) {
    let (mut rd, mut wr) = tokio::io::split(pipe);
    let mut buf = Vec::new();
    let mut conn = first;
    loop {
        // Nothing is held while the pipe is idle (a large body's buffer goes);
        // a pooled buffer comes back with the next request.
        crate::http1::buf::release_if_empty(&mut buf);
        let request = match next_request(&mut rd, &mut buf, conn.as_ref(), &target).await {
            Some(request) => request,
            None => return,
        };
        let close = request.close;
        match exchange(
            &link, &target, &mut conn, request, &mut rd, &mut wr, &mut buf,
        )
        .await
        {
            Ok(()) if !close => {}
            Ok(()) | Err(End::Closed) => return,
            Err(End::Failed(detail)) => {
                tracing::warn!(backend = %target.authority, error = %detail, "HTTP/2 call failed");
                return;
            }
            Err(End::Unsent(why)) => {
                // Tether logs and counts it, as a failure to connect.
                tracing::debug!(backend = %target.authority, error = %why.detail, "HTTP/2 request went nowhere");
                unsent.set(why);
                return;
            }
        }
    }
}

/// The next request from the pipe: `None` when the pipe closed, the request
/// is unreadable, or (between requests) the connection it would use ended.
async fn next_request(
    rd: &mut ReadHalf<DuplexStream>,
    buf: &mut Vec<u8>,
    conn: Option<&Conn>,
    target: &Target,
) -> Option<Request> {
    let head = loop {
        if !buf.is_empty() {
            match RequestHead::parse_forwarded(buf, MAX_HEAD) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "request for an h2 backend unreadable");
                    return None;
                }
            }
        }
        let mut ended = conn.map(|c| c.closed.subscribe());
        let idle = buf.is_empty();
        let gone = async {
            match ended.as_mut() {
                // Idle and its connection ended: the pipe ends too, so the
                // idle list drops it rather than reuse a dead connection.
                Some(e) if idle => {
                    let _ = e.wait_for(|ended| *ended).await;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            n = read_more(rd, buf) => match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            () = gone => {
                // A request written in that instant is served (on a new
                // connection), not dropped; else the pipe ends.
                let now = tokio::time::timeout(Duration::ZERO, rd.read_buf(buf)).await;
                if !matches!(now, Ok(Ok(n)) if n > 0) {
                    return None;
                }
            }
        }
    };
    let body = match read_body(rd, buf, &head).await {
        Ok(body) => body,
        Err(()) => return None,
    };
    let request = translate::request(buf, &head, body, &target.scheme, &target.authority);
    buf.drain(..head.len);
    match request {
        Ok(request) => Some(request),
        Err(what) => {
            tracing::warn!(problem = what, "request for an h2 backend not translatable");
            None
        }
    }
}

/// Reads more of a request. An idle pipe waits with no buffer of its own:
/// the first bytes land on the stack, then go into a pooled buffer.
async fn read_more(rd: &mut ReadHalf<DuplexStream>, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if !buf.is_empty() {
        return rd.read_buf(buf).await;
    }
    let mut first = [0u8; 1024];
    let n = rd.read(&mut first).await?;
    crate::http1::buf::ensure(buf);
    buf.extend_from_slice(&first[..n]);
    Ok(n)
}

/// The whole body after `head` (left in `buf` after the head's bytes; the
/// bytes after it stay for the next request).
async fn read_body(
    rd: &mut ReadHalf<DuplexStream>,
    buf: &mut Vec<u8>,
    head: &RequestHead,
) -> Result<Bytes, ()> {
    let start = head.len;
    match head.framing {
        Framing::None | Framing::UntilClose => Ok(Bytes::new()),
        Framing::Length(n) => {
            let n = usize::try_from(n).map_err(|_| ())?;
            while buf.len() - start < n {
                if rd.read_buf(buf).await.map_err(|_| ())? == 0 {
                    return Err(());
                }
            }
            let body = Bytes::copy_from_slice(&buf[start..start + n]);
            buf.drain(start..start + n);
            Ok(body)
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            let mut at = start;
            loop {
                let used = decoder
                    .decode(&buf[at..], &mut |d| body.extend_from_slice(d))
                    .map_err(|_| ())?;
                at += used;
                if decoder.is_done() {
                    buf.drain(start..at);
                    return Ok(body.into());
                }
                if rd.read_buf(buf).await.map_err(|_| ())? == 0 {
                    return Err(());
                }
            }
        }
    }
}

/// Whether an h2 error is the connection's (closed, gone away, broken)
/// rather than the crate refusing this request (a user error).
pub(super) fn connection_level(e: &h2::Error) -> bool {
    e.is_io() || e.is_go_away() || e.is_reset() || e.reason().is_some()
}

/// Whether an h2 failure proves the server did not process the stream.
fn unprocessed(e: &h2::Error) -> bool {
    let refused = e.is_reset() && e.is_remote() && e.reason() == Some(Reason::REFUSED_STREAM);
    // Streams above a GOAWAY's last stream id get the GOAWAY as their error.
    refused || (e.is_go_away() && e.is_remote())
}

/// Sends `request` (once more if the first was refused unprocessed: on
/// another connection after a GOAWAY) and relays its answer.
async fn exchange(
    link: &Arc<Link>,
    target: &Target,
    conn: &mut Option<Conn>,
    request: Request,
    rd: &mut ReadHalf<DuplexStream>,
    wr: &mut WriteHalf<DuplexStream>,
    buf: &mut Vec<u8>,
) -> Result<(), End> {
    let mut resent = false;
    // Connections a stream could not be opened on (gone since, or going
    // away): each is dropped and the next tried, up to a fresh one.
    let mut gone = 0;
    loop {
        // The pipe's connection, while it has a stream to spare; else the
        // link's pick (another connection, or a new one).
        let mine = conn.take().and_then(|c| c.try_slot().map(|slot| (c, slot)));
        let picked = match mine {
            Some((conn, slot)) => Picked {
                conn,
                slot,
                dialed: false,
            },
            None => link.conn(target).await.map_err(End::Unsent)?,
        };
        // The slot counts the stream until its answer is relayed.
        let Picked {
            conn: c,
            slot: _slot,
            dialed,
        } = picked;
        let head = request.head.clone();
        let body = request.body.clone();
        let (response, send) = match open(&c, head, body.is_empty()).await {
            Ok(opened) => opened,
            // Never opened, the connection's fault: nothing was sent. (An
            // error about the request itself condemns no connection.)
            Err(e) if !dialed && gone <= MAX_GONE && (connection_level(&e) || !c.usable()) => {
                tracing::debug!(error = %e, "h2 connection gone; another carries the request");
                link.discard(&c);
                gone += 1;
                continue;
            }
            // Not even on a fresh connection (or on none of many).
            Err(e) if connection_level(&e) => {
                return Err(End::Unsent(DialError {
                    failure: UpstreamFailure::Connect,
                    detail: format!(
                        "HTTP/2 connection to {} took no new stream: {e}",
                        target.authority
                    ),
                }))
            }
            Err(e) => return Err(End::Failed(format!("open stream: {e}"))),
        };
        *conn = Some(c.clone());
        match answer(response, send, body, rd, buf).await {
            Ok(Answer::Head(response, send)) => {
                return relay(response, send, &request, wr, rd, buf).await;
            }
            Ok(Answer::Gone) => return Err(End::Closed),
            Err(e) if unprocessed(&e) && !resent => {
                resent = true;
                if e.is_go_away() {
                    // The connection goes away: the next request dials anew.
                    tracing::debug!(error = %e, "stream above a GOAWAY's last id; sent again on another connection");
                    link.discard(&c);
                    *conn = None;
                } else {
                    // One stream turned away (a server at its limit, RFC
                    // 9113 section 8.7): its connection stays, and carries it
                    // again if it has room.
                    tracing::debug!(error = %e, "stream refused unprocessed; sent again");
                }
            }
            Err(e) if unprocessed(&e) => {
                return Err(End::Unsent(DialError {
                    failure: UpstreamFailure::Unprocessed,
                    detail: format!(
                        "{} refused the stream unprocessed, twice: {e}",
                        target.authority
                    ),
                }))
            }
            Err(e) => return Err(End::Failed(format!("HTTP/2 stream: {e}"))),
        }
    }
}

/// Opens a stream for `head` on `conn`.
pub(super) async fn open(
    conn: &Conn,
    head: http::Request<()>,
    end: bool,
) -> Result<(ResponseFuture, SendStream<Bytes>), h2::Error> {
    let mut send = conn.send.clone().ready().await?;
    send.send_request(head, end)
}

enum Step {
    Response(Result<http::Response<RecvStream>, h2::Error>),
    /// Tether's end closed (true), or wrote early (false).
    Pipe(bool),
    Capacity(Option<Result<usize, h2::Error>>),
}

enum Answer {
    Head(http::Response<RecvStream>, SendStream<Bytes>),
    /// Tether let go of the pipe: the stream was reset (CANCEL).
    Gone,
}

/// Sends the body and waits for the response head, watching the pipe: a
/// pipe Tether closed resets the stream at once.
async fn answer(
    response: ResponseFuture,
    mut send: SendStream<Bytes>,
    body: Bytes,
    rd: &mut ReadHalf<DuplexStream>,
    buf: &mut Vec<u8>,
) -> Result<Answer, h2::Error> {
    tokio::pin!(response);
    let mut body_sent = body.is_empty();
    let mut pending = body;
    loop {
        let capacity = async {
            if body_sent {
                return std::future::pending().await;
            }
            send.reserve_capacity(pending.len());
            std::future::poll_fn(|cx| send.poll_capacity(cx)).await
        };
        let step = tokio::select! {
            biased;
            r = &mut response => Step::Response(r),
            n = rd.read_buf(buf) => Step::Pipe(matches!(n, Ok(0) | Err(_))),
            granted = capacity => Step::Capacity(granted),
        };
        match step {
            Step::Response(r) => return r.map(|r| Answer::Head(r, send)),
            Step::Pipe(true) => {
                send.send_reset(Reason::CANCEL);
                return Ok(Answer::Gone);
            }
            Step::Pipe(false) => {}
            Step::Capacity(Some(Ok(n))) if n > 0 => {
                let chunk = pending.split_to(n.min(pending.len()));
                body_sent = pending.is_empty();
                send.send_data(chunk, body_sent)?;
            }
            Step::Capacity(Some(Ok(_))) => {}
            Step::Capacity(Some(Err(e))) => return Err(e),
            // The stream closed: its answer (or error) comes through `response`.
            Step::Capacity(None) => body_sent = true,
        }
    }
}

/// The answer as HTTP/1.1 into the pipe, its body as it arrives, each
/// frame's window given back once the pipe took it.
async fn relay(
    response: http::Response<RecvStream>,
    mut send: SendStream<Bytes>,
    request: &Request,
    wr: &mut WriteHalf<DuplexStream>,
    rd: &mut ReadHalf<DuplexStream>,
    buf: &mut Vec<u8>,
) -> Result<(), End> {
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::with_capacity(1024);
    let framing = translate::response_head(&parts, request.head_request, request.close, &mut out);
    let cancel = |send: &mut SendStream<Bytes>| {
        send.send_reset(Reason::CANCEL);
        End::Closed
    };
    if wr.write_all(&out).await.is_err() {
        return Err(cancel(&mut send));
    }
    if framing == Body::None {
        // The stream may still carry a body (a HEAD's server that sends one):
        // not ours to read.
        if !body.is_end_stream() {
            send.send_reset(Reason::CANCEL);
        }
        return Ok(());
    }
    let mut sent: u64 = 0;
    loop {
        // The whole announced length is relayed: the answer is complete for
        // Tether, which may send the pipe's next request now, whenever the
        // server ends the stream (dropping it resets a stream left open).
        if matches!(framing, Body::Length(n) if sent >= n) {
            if !body.is_end_stream() {
                // Its end is the server's to send: waited for a moment
                // aside (a reset now would cancel a handler still running).
                tokio::spawn(drain(body, send));
            }
            return Ok(());
        }
        let data = tokio::select! {
            biased;
            d = body.data() => d,
            n = rd.read_buf(buf) => {
                if matches!(n, Ok(0) | Err(_)) {
                    return Err(cancel(&mut send));
                }
                continue;
            }
        };
        let Some(data) = data else { break };
        let data = data.map_err(|e| End::Failed(format!("response body: {e}")))?;
        let len = data.len();
        sent += len as u64;
        out.clear();
        let bytes: &[u8] = match framing {
            Body::Chunked if len > 0 => {
                chunked::encode_chunk(&data, &mut out);
                &out
            }
            _ => &data,
        };
        if wr.write_all(bytes).await.is_err() {
            return Err(cancel(&mut send));
        }
        let _ = body.flow_control().release_capacity(len);
    }
    if let Body::Length(n) = framing {
        if sent != n {
            return Err(End::Failed(format!("body of {sent} bytes, {n} announced")));
        }
    }
    if framing == Body::Chunked && wr.write_all(chunked::LAST_CHUNK).await.is_err() {
        return Err(End::Closed);
    }
    Ok(())
}

/// Reads a stream whose answer is complete to its end, for at most
/// `DRAIN`; then drops it (a reset, if it has not ended).
async fn drain(mut body: RecvStream, send: SendStream<Bytes>) {
    let to_end = async {
        while let Some(Ok(data)) = body.data().await {
            let _ = body.flow_control().release_capacity(data.len());
        }
    };
    let _ = tokio::time::timeout(DRAIN, to_end).await;
    drop(send);
}

/// How long a complete answer's stream may take to end.
const DRAIN: Duration = Duration::from_secs(2);
