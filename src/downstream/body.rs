//! A request's body, read whole within its limits: `limits.max_request_body`
//! (413), `timeouts.request_body` (408), and the global body budget (503).
//!
//! A body over the limit is read to its end and thrown away before the 413
//! is sent (within the body timeout and `DRAIN_CAP` bytes), so the client
//! reads the answer instead of a reset. A body that does not arrive with its
//! head holds memory while it trickles in; that memory is taken from the
//! budget shared by all connections before the buffer grows, so a flood of
//! slow bodies waits (and at its deadline gets a 503), never exhausts memory.
//! The budget is taken once per body, all of it (the declared length, or the
//! limit for a chunked body), before the body first waits: a body that held
//! part of it while waiting for more could starve another doing the same.

use std::ops::Range;

use tokio::time::Instant;

use super::budget::{Held, STEP};
use super::{Client, ConnSettings, ReadError};
use crate::error::ProxyError;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::head::{Framing, RequestHead};

/// Most bytes read and discarded from a body that is already over the limit.
pub const DRAIN_CAP: u64 = 64 << 20;

/// A request's body, where it is.
#[derive(Debug)]
pub enum Body {
    /// In the client's buffer, right after the head.
    InBuf(Range<usize>),
    /// Decoded from the chunked coding.
    Owned(Vec<u8>),
}

impl Body {
    pub fn bytes<'a>(&'a self, client_buf: &'a [u8]) -> &'a [u8] {
        match self {
            Body::InBuf(range) => &client_buf[range.clone()],
            Body::Owned(bytes) => bytes,
        }
    }
}

impl Client {
    /// The body `head` announces, if it is already whole in `buf` and within the limit.
    pub fn body_in_buf(&self, head: &RequestHead, settings: &ConnSettings) -> Option<Body> {
        match head.framing {
            Framing::None | Framing::UntilClose => Some(Body::InBuf(head.len..head.len)),
            Framing::Length(len) if len <= settings.max_request_body as u64 => {
                let end = head.len + len as usize;
                (self.buf.len() >= end).then_some(Body::InBuf(head.len..end))
            }
            Framing::Length(_) | Framing::Chunked => None,
        }
    }

    /// Reads the body `head` announces, within the body limits; returns it
    /// with the budget it holds (to be dropped once the request is answered).
    pub async fn read_body(
        &mut self,
        head: &RequestHead,
        settings: &ConnSettings,
    ) -> Result<(Body, Held), ReadError> {
        let limit = settings.max_request_body as u64;
        let deadline = Instant::now() + settings.request_body_timeout;
        let mut held = Held::default();
        match head.framing {
            Framing::None | Framing::UntilClose => Ok((Body::InBuf(head.len..head.len), held)),
            Framing::Length(len) if len > limit => {
                // A client waiting for `100 Continue` has sent nothing yet: answer
                // at once and it never sends the body. So does one announcing a
                // body too large to be worth reading.
                if head.expect_continue || len > DRAIN_CAP {
                    return Err(too_large(settings));
                }
                self.discard(head.len as u64 + len, deadline).await?;
                Err(too_large(settings))
            }
            Framing::Length(len) => {
                let end = head.len + len as usize;
                if self.buf.len() < end {
                    // The whole declared body, taken at once before waiting
                    // for it: a body never holds part of the budget while it
                    // waits for the rest (two such bodies could starve each
                    // other until their deadlines).
                    settings
                        .budget
                        .grow(&mut held, len as usize, deadline)
                        .await
                        .map_err(over_budget)?;
                    self.continue_if_expected(head).await?;
                }
                while self.buf.len() < end {
                    if self.buf.len() == self.buf.capacity() {
                        // Grow by doubling (at least a step), never past the body's end.
                        let cap = self.buf.capacity();
                        let new_cap = (cap * 2).max(cap + STEP).min(end);
                        self.buf.reserve_exact(new_cap - self.buf.len());
                    }
                    self.read_body_more(deadline).await?;
                }
                Ok((Body::InBuf(head.len..end), held))
            }
            Framing::Chunked => {
                self.continue_if_expected(head).await?;
                let body = self
                    .read_chunked(head, settings, &mut held, deadline)
                    .await?;
                Ok((Body::Owned(body), held))
            }
        }
    }

    /// Decodes a chunked body as it arrives. One that does not arrive whole
    /// with its head takes `max_request_body` from the budget before waiting.
    async fn read_chunked(
        &mut self,
        head: &RequestHead,
        settings: &ConnSettings,
        held: &mut Held,
        deadline: Instant,
    ) -> Result<Vec<u8>, ReadError> {
        let limit = settings.max_request_body as u64;
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut seen = 0u64;
        loop {
            let used = decoder
                .decode(&self.buf[head.len..], &mut |data| {
                    seen += data.len() as u64;
                    if seen <= limit {
                        body.extend_from_slice(data);
                    }
                })
                .map_err(|e| ReadError::Body(ProxyError::BodyRead(e.to_string())))?;
            if seen > limit {
                body = Vec::new();
                if seen > DRAIN_CAP {
                    return Err(too_large(settings));
                }
            }
            // Keep only the head and what is not decoded yet.
            self.buf.drain(head.len..head.len + used);
            if decoder.is_done() {
                break;
            }
            // More is to come: its length is unknown, so the most a body may
            // be is taken from the budget, once, before the first wait.
            settings
                .budget
                .grow(held, settings.max_request_body, deadline)
                .await
                .map_err(over_budget)?;
            self.read_body_more(deadline).await?;
        }
        if seen > limit {
            // The body is consumed: the connection stays usable, but a
            // client that sent this much is told once and let go.
            return Err(too_large(settings));
        }
        Ok(body)
    }

    async fn continue_if_expected(&mut self, head: &RequestHead) -> Result<(), ReadError> {
        if head.expect_continue && head.minor == 1 {
            self.write_bounded(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(ReadError::Io)?;
        }
        Ok(())
    }

    /// Reads more of a body by `deadline`: a close mid-body or the deadline
    /// passing is the body's error (400, 408), not the connection's.
    async fn read_body_more(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        match self.read_more(deadline).await {
            Ok(0) => Err(ReadError::Body(ProxyError::BodyRead(
                "connection closed mid-body".into(),
            ))),
            Ok(n) => Ok(n),
            Err(ReadError::Timeout) => Err(ReadError::Body(ProxyError::BodyTimeout)),
            Err(e) => Err(e),
        }
    }

    /// Reads and drops bytes until `total` have been received, by `deadline`.
    async fn discard(&mut self, total: u64, deadline: Instant) -> Result<(), ReadError> {
        let mut seen = self.buf.len() as u64;
        while seen < total {
            self.buf.clear();
            seen += self.read_body_more(deadline).await? as u64;
        }
        self.buf.clear();
        Ok(())
    }
}

fn too_large(settings: &ConnSettings) -> ReadError {
    ReadError::Body(ProxyError::BodyTooLarge {
        limit: settings.max_request_body,
    })
}

fn over_budget(_: super::budget::Exhausted) -> ReadError {
    ReadError::Body(ProxyError::BodyBudget)
}
