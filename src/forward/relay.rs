//! The response body, from the backend's socket to the client's.
//!
//! Bytes are written to the client as soon as they arrive (an SSE event is
//! never held back), re-framed for the client's hop (`Content-Length` kept
//! when nothing changes the length, chunked otherwise), and passed through
//! the legacy `endpoint` rewrite until the first event is decided. Between
//! reads nothing is held: buffers go back to the pool, which is what makes an
//! idle held stream cost little more than its two sockets.
//!
//! While it waits, the relay also watches the client: a client that goes away
//! ends the relay at once, and dropping the upstream socket closes the
//! backend's connection (that is how a disconnect reaches the backend).

use std::future::Future as _;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::headers::Downstream;
use super::sse::{EndpointRewriter, Outcome};
use super::upstream::Response;
use crate::downstream::Client;
use crate::http1::buf;
use crate::http1::chunked::{self, ChunkedDecoder};
use crate::http1::head::Framing;
use crate::transport::Stream;

/// How a relay ended.
#[derive(Debug)]
pub enum End {
    /// The whole body reached the client. `reusable`: the backend connection
    /// can carry another request (`Relay::into_upstream`).
    Complete { reusable: bool },
    /// The body was silent for the idle timeout. An event stream is ended
    /// cleanly (`clean`); any other body is cut, like `Cut`.
    IdleTimeout { clean: bool },
    /// The client closed its connection.
    ClientGone,
    /// Tether's shutdown grace ran out: an event stream was ended cleanly.
    Shutdown,
    /// The backend failed mid-body, or a body without an event stream went
    /// silent too long: the client's connection must close without the end
    /// of the body, so the client sees the cut.
    Cut(String),
}

/// Called once with how the first-event scan ended.
pub type OnFirstEvent = Box<dyn FnOnce(Outcome) + Send>;

/// A rewrite of the whole body on its way (the task ids of the 2026-07-28
/// revision): takes decoded body bytes, may hold some back, gives the bytes
/// that are ready. The client's framing must then be chunked (or until close).
pub trait Rewrite: Send {
    fn push(&mut self, chunk: &[u8], ready: &mut Vec<u8>);
    /// The body ended: whatever is held.
    fn finish(&mut self, ready: &mut Vec<u8>);
}

/// Work that must be done before the next bytes go to the client (a legacy
/// session recorded in the session store before its `endpoint` event is
/// sent, so a POST that follows at once finds it). Asked before each write
/// while the first event is undecided; `Err` cuts the body.
pub type Gate = Box<dyn FnMut() -> Option<GateWait> + Send>;
pub type GateWait = Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// What the relay does to the body on its way.
pub struct Options {
    pub downstream: Downstream,
    pub idle_timeout: Option<Duration>,
    /// Event streams end cleanly on the idle timeout; other bodies are cut.
    pub event_stream: bool,
    /// The legacy endpoint rewrite, and what to call once with how its
    /// first-event scan ended.
    pub rewriter: Option<(EndpointRewriter, OnFirstEvent)>,
    /// A rewrite of the whole body.
    pub rewrite: Option<Box<dyn Rewrite>>,
    pub gate: Option<Gate>,
}

/// A response body on its way: the backend connection and what the relay
/// has to remember between reads. Kept small: it is most of what an idle
/// held stream costs.
pub struct Relay {
    up: Stream,
    /// Bytes read from the backend and not yet relayed (unallocated while empty).
    from: Vec<u8>,
    /// Bytes for the client (unallocated while empty); first the response head.
    out: Vec<u8>,
    /// Where the body starts in `from` (after the head, on the first pass).
    start: usize,
    framing: Framing,
    keep_alive: bool,
    /// Body bytes still due, for `Framing::Length`.
    remaining: u64,
    decoder: ChunkedDecoder,
    emit: Emitter,
    idle_timeout: Option<Duration>,
    idle: Option<Pin<Box<Sleep>>>,
    event_stream: bool,
    /// The client was promised a `Content-Length`: the body cannot end early.
    length_framed: bool,
    /// How long the backend said it keeps an idle connection (`Keep-Alive: timeout`).
    idle_hint: Option<Duration>,
    /// An event stream's wait for the end of a shutdown's grace: made at its
    /// first wait and kept, so the shared waiter list is joined once per
    /// stream, not once per event.
    ending: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl Relay {
    /// `out` holds the response head, already built for the client.
    pub fn new(response: Response, out: Vec<u8>, options: Options) -> Self {
        let Response {
            stream,
            buf,
            head,
            request_complete,
        } = response;
        let idle_hint = head.keep_alive_timeout(&buf).map(Duration::from_secs);
        let (rewriter, on_first_event) = match options.rewriter {
            Some((rewriter, report)) => (Some(Box::new(rewriter)), Some(report)),
            None => (None, None),
        };
        Relay {
            up: stream,
            from: buf,
            out,
            start: head.len,
            framing: head.framing,
            // A head that declares a body it does not have (a HEAD answer
            // with a length, a 204 with one) may be followed by those bytes:
            // such a connection is not trusted with another request.
            keep_alive: head.keep_alive && request_complete && !head.declares_unsent_body,
            remaining: match head.framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            decoder: ChunkedDecoder::new(),
            emit: Emitter {
                rewriter,
                rewrite: options.rewrite,
                gate: options.gate,
                on_first_event,
                chunked: options.downstream == Downstream::Chunked,
            },
            idle_timeout: options.idle_timeout,
            idle: None,
            event_stream: options.event_stream,
            // Promised a length by either side: the body cannot end early
            // (a rewritten body is chunked to the client, but a backend
            // that stops short of its length has cut it).
            length_framed: matches!(options.downstream, Downstream::Length(_))
                || matches!(head.framing, Framing::Length(_)),
            idle_hint,
            ending: None,
        }
    }

    /// Writes the head and relays the body until it ends, either side fails,
    /// or the client goes.
    pub async fn run(&mut self, client: &mut Client) -> End {
        client.answering();
        loop {
            let (done, leftover) = match self.take_arrived() {
                Ok(step) => step,
                Err(why) => {
                    self.drop_gated();
                    return Box::pin(self.cut(client, why)).await;
                }
            };
            // A legacy session recorded before its endpoint event goes out.
            if let Some(wait) = self.emit.gate_wait() {
                if let Err(why) = wait.await {
                    self.drop_gated();
                    return Box::pin(self.cut(client, why)).await;
                }
            }
            if done {
                self.emit.finish(&mut self.out);
                let written = send(client, &self.out, self.idle_timeout).await;
                buf::give(std::mem::take(&mut self.out));
                buf::give(std::mem::take(&mut self.from));
                if written.is_err() {
                    return End::ClientGone;
                }
                let reusable = self.keep_alive && leftover == 0;
                return End::Complete { reusable };
            }
            if !self.out.is_empty() {
                if send(client, &self.out, self.idle_timeout).await.is_err() {
                    return End::ClientGone;
                }
                self.out.clear();
            }
            // Nothing in flight: hold no buffer while waiting.
            buf::release_if_empty(&mut self.out);
            buf::release_if_empty(&mut self.from);
            match self.wait(client).await {
                Wait::Data => {}
                Wait::Closed if self.framing == Framing::UntilClose => {
                    self.emit.finish(&mut self.out);
                    let written = send(client, &self.out, self.idle_timeout).await;
                    buf::give(std::mem::take(&mut self.out));
                    return match written {
                        Ok(()) => End::Complete { reusable: false },
                        Err(_) => End::ClientGone,
                    };
                }
                Wait::Closed => {
                    return Box::pin(self.cut(client, "backend closed mid-body".into())).await
                }
                Wait::Failed(e) => {
                    return Box::pin(self.cut(client, format!("backend read: {e}"))).await
                }
                Wait::ClientGone => return End::ClientGone,
                // An event stream can end here unless its length was promised.
                Wait::Idle if self.event_stream && !self.length_framed => {
                    // A stream that ends is a normal SSE close: clients reconnect.
                    self.emit.finish(&mut self.out);
                    let _ = send(client, &self.out, self.idle_timeout).await;
                    buf::give(std::mem::take(&mut self.out));
                    return End::IdleTimeout { clean: true };
                }
                Wait::Shutdown => {
                    // Tether is stopping: the stream ends like an SSE close.
                    self.emit.finish(&mut self.out);
                    let _ = send(client, &self.out, self.idle_timeout).await;
                    buf::give(std::mem::take(&mut self.out));
                    buf::give(std::mem::take(&mut self.from));
                    return End::Shutdown;
                }
                Wait::Idle => {
                    let why = "response body idle for longer than the stream idle timeout";
                    Box::pin(self.cut(client, why.into())).await;
                    return End::IdleTimeout { clean: false };
                }
            }
        }
    }

    /// The backend connection, for the idle pool, with the idle time the
    /// backend announced for it.
    pub fn into_upstream(self) -> (Stream, Option<Duration>) {
        (self.up, self.idle_hint)
    }

    /// Moves what arrived from the backend into `out`, re-framed. Returns
    /// whether the body is complete, and how many bytes came after its end.
    fn take_arrived(&mut self) -> Result<(bool, usize), String> {
        if self.from.len() > self.start {
            buf::ensure(&mut self.out);
        }
        let data = &self.from[self.start.min(self.from.len())..];
        let (emit, out) = (&mut self.emit, &mut self.out);
        let step = match self.framing {
            Framing::None => (true, data.len()),
            Framing::Length(_) => {
                let take = self.remaining.min(data.len() as u64) as usize;
                emit.data(&data[..take], out);
                self.remaining -= take as u64;
                (self.remaining == 0, data.len() - take)
            }
            Framing::Chunked => {
                let used = self
                    .decoder
                    .decode(data, &mut |d| emit.data(d, out))
                    .map_err(|e| format!("backend's chunked body: {e}"))?;
                (self.decoder.is_done(), data.len() - used)
            }
            Framing::UntilClose => {
                emit.data(data, out);
                (false, 0)
            }
        };
        self.from.clear();
        self.start = 0;
        Ok(step)
    }

    /// Waits until the backend sends more (read into `from`), closes or
    /// fails, the client goes, or the idle timeout passes.
    ///
    /// Readiness is polled on the sockets themselves (`poll_read_ready`), not
    /// through `readable()` futures: those carry a waiter node each (150
    /// bytes), and this state lives as long as the stream does.
    async fn wait(&mut self, client: &mut Client) -> Wait {
        if let (Some(sleep), Some(t)) = (&mut self.idle, self.idle_timeout) {
            sleep.as_mut().reset(Instant::now() + t);
        }
        // Only an event stream (perhaps held for hours) waits for a shutdown;
        // any other body is a request in flight, which finishes.
        if self.ending.is_none() && self.event_stream && !self.length_framed {
            self.ending = Some(Box::pin(client.lifecycle_arc().until_ending()));
        }
        std::future::poll_fn(|cx| {
            if let Some(ending) = self.ending.as_mut() {
                if ending.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wait::Shutdown);
                }
            }
            if self.up.poll_read_ready(cx).is_ready() {
                buf::ensure(&mut self.from);
                match self.up.poll_read_vec(cx, &mut self.from) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Wait::Closed),
                    Poll::Ready(Ok(_)) => return Poll::Ready(Wait::Data),
                    Poll::Ready(Err(e)) => return Poll::Ready(Wait::Failed(e)),
                    Poll::Pending => buf::release_if_empty(&mut self.from),
                }
            }
            // A client that closes while its answer streams has left (one
            // that had half-closed before the answer began is not watched).
            if client.poll_watch(cx).is_ready() {
                return Poll::Ready(Wait::ClientGone);
            }
            if let Some(t) = self.idle_timeout {
                let sleep = self
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wait::Idle);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Ends a relay the client must see as broken: what was decoded so far
    /// goes out, the end of the body does not.
    /// The bytes not yet sent while a gate stands are not for the client:
    /// an endpoint event whose session was not recorded would lead its
    /// POSTs to a 404. Dropped, so the cut is all the client sees.
    fn drop_gated(&mut self) {
        if self.emit.gate.is_some() {
            self.out.clear();
        }
    }

    async fn cut(&mut self, client: &mut Client, why: String) -> End {
        if !self.out.is_empty() {
            let _ = send(client, &self.out, self.idle_timeout).await;
        }
        buf::give(std::mem::take(&mut self.out));
        buf::give(std::mem::take(&mut self.from));
        End::Cut(why)
    }
}

/// Writes `bytes` to the client. A client that stops reading (its window
/// full) holds the backend connection, so the write may wait at most the idle
/// timeout; the timer is armed only if the bytes did not go at once.
async fn send(client: &mut Client, bytes: &[u8], timeout: Option<Duration>) -> std::io::Result<()> {
    if let Some(line) = client.access() {
        line.bytes += bytes.len() as u64;
    }
    let sent = match client.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let rest = &bytes[sent..];
    if rest.is_empty() && client.try_flush() {
        return Ok(());
    }
    // Rare, and its future (with a timer) is large: boxed, so the relay's
    // state, which a held stream keeps for hours, stays small.
    Box::pin(send_slowly(client, rest, timeout)).await
}

async fn send_slowly(
    client: &mut Client,
    rest: &[u8],
    timeout: Option<Duration>,
) -> std::io::Result<()> {
    match timeout {
        None => client.write_all(rest).await,
        Some(t) => tokio::time::timeout(t, client.write_all(rest))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
    }
}

/// What ended a wait.
enum Wait {
    Data,
    Closed,
    Failed(std::io::Error),
    ClientGone,
    Idle,
    Shutdown,
}

/// Re-frames body bytes for the client, through the endpoint rewrite while it lasts.
struct Emitter {
    /// Boxed: it is gone after the first event, and this lives as long as the stream.
    rewriter: Option<Box<EndpointRewriter>>,
    rewrite: Option<Box<dyn Rewrite>>,
    gate: Option<Gate>,
    on_first_event: Option<OnFirstEvent>,
    chunked: bool,
}

impl Emitter {
    /// What must be done before the bytes in hand go out, if anything; the
    /// gate goes once the first event is decided and nothing is pending.
    /// (Sync, and the wait boxed: the relay's own future stays as small.)
    fn gate_wait(&mut self) -> Option<GateWait> {
        let gate = self.gate.as_mut()?;
        let wait = gate();
        if self.rewriter.is_none() && wait.is_none() {
            self.gate = None;
        }
        wait
    }

    fn data(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if let Some(rewrite) = &mut self.rewrite {
            let mut ready = Vec::new();
            rewrite.push(data, &mut ready);
            self.frame(&ready, out);
            return;
        }
        match &mut self.rewriter {
            None => self.frame(data, out),
            Some(rewriter) => {
                if let Some((bytes, outcome)) = rewriter.push(data) {
                    self.end_rewrite(outcome);
                    self.frame(&bytes, out);
                }
            }
        }
    }

    /// The body ended: whatever the rewrite still held goes on, then the last chunk.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(mut rewriter) = self.rewriter.take() {
            let held = rewriter.finish();
            self.end_rewrite(Outcome::Ended);
            self.frame(&held, out);
        }
        if let Some(mut rewrite) = self.rewrite.take() {
            let mut ready = Vec::new();
            rewrite.finish(&mut ready);
            self.frame(&ready, out);
        }
        if self.chunked {
            out.extend_from_slice(chunked::LAST_CHUNK);
        }
    }

    fn end_rewrite(&mut self, outcome: Outcome) {
        self.rewriter = None;
        if let Some(report) = self.on_first_event.take() {
            report(outcome);
        }
    }

    fn frame(&self, data: &[u8], out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if self.chunked {
            chunked::encode_chunk(data, out);
        } else {
            out.extend_from_slice(data);
        }
    }
}

#[cfg(test)]
mod tests;
