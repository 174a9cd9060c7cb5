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

use std::pin::Pin;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::headers::Downstream;
use super::sse::{EndpointRewriter, Outcome};
use super::upstream::Response;
use crate::conn::{Client, Watch};
use crate::http1::buf;
use crate::http1::chunked::{self, ChunkedDecoder};
use crate::http1::head::Framing;

/// How a relay ended.
#[derive(Debug)]
pub enum End {
    /// The whole body reached the client. `upstream` is the backend
    /// connection if it can carry another request.
    Complete { upstream: Option<TcpStream> },
    /// An event stream was silent for the idle timeout and was ended cleanly.
    IdleTimeout,
    /// The client closed its connection.
    ClientGone,
    /// The backend failed mid-body, or a body without an event stream went
    /// silent too long: the client's connection must close without the end
    /// of the body, so the client sees the cut.
    Cut(String),
}

/// What the relay does to the body on its way.
pub struct Options {
    pub downstream: Downstream,
    pub idle_timeout: Option<Duration>,
    /// Event streams end cleanly on the idle timeout; other bodies are cut.
    pub event_stream: bool,
    pub rewriter: Option<EndpointRewriter>,
    /// Called once with how the first-event scan ended.
    pub on_first_event: Box<dyn FnOnce(Outcome) + Send>,
}

/// Writes `out` (the response head, already built) and relays the body.
pub async fn relay(
    client: &mut Client,
    response: Response,
    mut out: Vec<u8>,
    options: Options,
) -> End {
    let Response {
        stream: up,
        buf: mut from,
        head,
    } = response;
    let mut emit = Emitter {
        rewriter: options.rewriter,
        on_first_event: Some(options.on_first_event),
        chunked: options.downstream == Downstream::Chunked,
    };
    let mut remaining = match head.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut decoder = ChunkedDecoder::new();
    let mut start = head.len;
    let mut idle: Option<Pin<Box<Sleep>>> = None;
    loop {
        // What arrived: into `out`, re-framed.
        if from.len() > start {
            buf::ensure(&mut out);
        }
        let data = &from[start.min(from.len())..];
        let (done, leftover) = match head.framing {
            Framing::None => (true, data.len()),
            Framing::Length(_) => {
                let take = remaining.min(data.len() as u64) as usize;
                emit.data(&data[..take], &mut out);
                remaining -= take as u64;
                (remaining == 0, data.len() - take)
            }
            Framing::Chunked => {
                let used = match decoder.decode(data, &mut |d| emit.data(d, &mut out)) {
                    Ok(used) => used,
                    Err(e) => {
                        return cut(client, out, from, format!("backend's chunked body: {e}")).await
                    }
                };
                (decoder.is_done(), data.len() - used)
            }
            Framing::UntilClose => {
                emit.data(data, &mut out);
                (false, 0)
            }
        };
        from.clear();
        start = 0;
        if done {
            emit.finish(&mut out);
            let written = client.stream.write_all(&out).await;
            buf::give(out);
            buf::give(from);
            if written.is_err() {
                return End::ClientGone;
            }
            let reusable = head.keep_alive && leftover == 0;
            return End::Complete {
                upstream: reusable.then_some(up),
            };
        }
        if !out.is_empty() {
            if client.stream.write_all(&out).await.is_err() {
                return End::ClientGone;
            }
            out.clear();
        }
        // Nothing in flight: hold no buffer while waiting.
        buf::release_if_empty(&mut out);
        buf::release_if_empty(&mut from);
        if let (Some(sleep), Some(t)) = (&mut idle, options.idle_timeout) {
            sleep.as_mut().reset(Instant::now() + t);
        }
        loop {
            let idle_wait = async {
                match (options.idle_timeout, &mut idle) {
                    (None, _) => std::future::pending().await,
                    (Some(_), Some(sleep)) => sleep.as_mut().await,
                    (Some(t), slot @ None) => {
                        slot.insert(Box::pin(tokio::time::sleep(t))).as_mut().await
                    }
                }
            };
            tokio::select! {
                ready = up.readable() => {
                    if let Err(e) = ready {
                        return cut(client, out, from, format!("backend read: {e}")).await;
                    }
                    buf::ensure(&mut from);
                    match up.try_read_buf(&mut from) {
                        Ok(0) if head.framing == Framing::UntilClose => {
                            emit.finish(&mut out);
                            let written = client.stream.write_all(&out).await;
                            buf::give(out);
                            buf::give(from);
                            return match written {
                                Ok(()) => End::Complete { upstream: None },
                                Err(_) => End::ClientGone,
                            };
                        }
                        Ok(0) => return cut(client, out, from, "backend closed mid-body".into()).await,
                        Ok(_) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            buf::release_if_empty(&mut from);
                        }
                        Err(e) => return cut(client, out, from, format!("backend read: {e}")).await,
                    }
                }
                ready = client.stream.readable(), if client.watching() => {
                    if ready.is_err() || client.on_readable() == Watch::Gone {
                        return End::ClientGone;
                    }
                }
                () = idle_wait => {
                    if options.event_stream {
                        // A stream that ends is a normal SSE close: clients reconnect.
                        emit.finish(&mut out);
                        let _ = client.stream.write_all(&out).await;
                        buf::give(out);
                        return End::IdleTimeout;
                    }
                    return cut(client, out, from, "response body idle for longer than the stream idle timeout".into()).await;
                }
            }
        }
    }
}

/// Ends a relay the client must see as broken: what was decoded so far goes
/// out, the end of the body does not.
async fn cut(client: &mut Client, out: Vec<u8>, from: Vec<u8>, why: String) -> End {
    if !out.is_empty() {
        let _ = client.stream.write_all(&out).await;
    }
    buf::give(out);
    buf::give(from);
    End::Cut(why)
}

/// Re-frames body bytes for the client, through the endpoint rewrite while it lasts.
struct Emitter {
    rewriter: Option<EndpointRewriter>,
    on_first_event: Option<Box<dyn FnOnce(Outcome) + Send>>,
    chunked: bool,
}

impl Emitter {
    fn data(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.is_empty() {
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
        if self.chunked {
            chunked::encode_chunk(data, out);
        } else {
            out.extend_from_slice(data);
        }
    }
}
