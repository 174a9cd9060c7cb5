//! The response body Tether sends downstream.
//!
//! Either a small body Tether wrote itself (errors), or an upstream body
//! passed on frame by frame as it arrives: hyper writes each frame at once, so
//! an SSE event reaches the client without waiting for more. Around the
//! upstream body sit the idle timeout, the legacy endpoint rewrite (first event
//! only) and the guards that count the request and the stream while they live.
//! Dropping this body (client gone) drops the upstream body, which closes the
//! upstream connection: that is how a disconnect reaches the backend.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::sse::EndpointRewriter;
use crate::metrics::{self, Metrics};
use crate::pool::Outstanding;

/// Why a downstream body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream body failed: {0}")]
    Upstream(#[from] hyper::Error),
    #[error("upstream body idle for longer than the stream idle timeout")]
    IdleTimeout,
}

/// The body of every response Tether sends.
pub struct ProxyBody {
    inner: Inner,
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(Box<Upstream>),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody {
            inner: Inner::Full(Some(bytes.into())),
        }
    }

    pub fn empty() -> Self {
        ProxyBody {
            inner: Inner::Full(None),
        }
    }

    /// Passes `body` on; `outstanding` counts the request against its backend
    /// until the body is done or dropped.
    pub fn upstream(body: Incoming, outstanding: Outstanding) -> UpstreamBuilder {
        UpstreamBuilder(Upstream {
            body,
            idle_timeout: None,
            idle: None,
            rewriter: None,
            stream: None,
            metrics: None,
            _outstanding: outstanding,
        })
    }
}

/// Options of an upstream body; `build()` finishes it.
pub struct UpstreamBuilder(Upstream);

impl UpstreamBuilder {
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.0.idle_timeout = timeout;
        self
    }

    /// Marks the body as an event stream of `backend`: counted in
    /// `tether_active_streams` while open; an idle timeout ends it cleanly.
    pub fn event_stream(mut self, metrics: Arc<Metrics>, backend: &str) -> Self {
        self.0.stream = Some(StreamGuard::new(metrics.clone(), backend));
        self.0.metrics = Some(metrics);
        self
    }

    pub fn rewrite_endpoint(mut self, rewriter: EndpointRewriter) -> Self {
        self.0.rewriter = Some(rewriter);
        self
    }

    pub fn build(self) -> ProxyBody {
        ProxyBody {
            inner: Inner::Upstream(Box::new(self.0)),
        }
    }
}

struct Upstream {
    body: Incoming,
    idle_timeout: Option<Duration>,
    /// Made on the first wait, not per response: most JSON bodies arrive with
    /// their head and never wait.
    idle: Option<Pin<Box<Sleep>>>,
    rewriter: Option<EndpointRewriter>,
    stream: Option<StreamGuard>,
    metrics: Option<Arc<Metrics>>,
    _outstanding: Outstanding,
}

impl Upstream {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(idle) = &mut self.idle {
                        if let Some(t) = self.idle_timeout {
                            idle.as_mut().reset(Instant::now() + t);
                        }
                    }
                    let Some(rewriter) = &mut self.rewriter else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    let Some(data) = frame.data_ref() else {
                        // Trailers on an event stream: give up the rewrite, keep the bytes.
                        let held = rewriter.finish();
                        self.end_rewrite(super::sse::Outcome::Ended);
                        return Poll::Ready(Some(Ok(Frame::data(held))));
                    };
                    if let Some((out, outcome)) = rewriter.push(data) {
                        self.end_rewrite(outcome);
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(None) if self.rewriter.is_some() => {
                    // Send on what was held; the next poll reports the end.
                    let held = self.rewriter.as_mut().map(EndpointRewriter::finish);
                    self.end_rewrite(super::sse::Outcome::Ended);
                    if let Some(held) = held.filter(|b| !b.is_empty()) {
                        return Poll::Ready(Some(Ok(Frame::data(held))));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Pending => return self.poll_idle(cx),
            }
        }
    }

    fn end_rewrite(&mut self, outcome: super::sse::Outcome) {
        self.rewriter = None;
        if let Some(m) = &self.metrics {
            m.sse_first_events
                .get_or_create(&metrics::Result {
                    result: outcome.as_str(),
                })
                .inc();
        }
    }

    /// Nothing to send: wait, unless the body has been idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(timeout) = self.idle_timeout else {
            return Poll::Pending;
        };
        let idle = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(idle.as_mut().poll(cx));
        if let Some(stream) = &self.stream {
            stream.idle_timeout();
            tracing::debug!(backend = %stream.backend.backend, "event stream idle, closing");
            // An event stream that ends is a normal SSE close: clients reconnect.
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Err(BodyError::IdleTimeout)))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(up) => up.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Upstream(up) => up.rewriter.is_none() && up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(up) if up.rewriter.is_none() => up.body.size_hint(),
            Inner::Upstream(_) => SizeHint::default(),
        }
    }
}

/// Counts an open event stream for as long as it lives.
struct StreamGuard {
    metrics: Arc<Metrics>,
    backend: metrics::BackendLabel,
}

impl StreamGuard {
    fn new(metrics: Arc<Metrics>, backend: &str) -> Self {
        let backend = Metrics::backend(backend);
        metrics.active_streams.get_or_create(&backend).inc();
        StreamGuard { metrics, backend }
    }

    fn idle_timeout(&self) {
        self.metrics
            .stream_idle_timeouts
            .get_or_create(&self.backend)
            .inc();
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics
            .active_streams
            .get_or_create(&self.backend)
            .dec();
        tracing::debug!(backend = %self.backend.backend, "event stream closed");
    }
}
