//! Tether's end of a pipe to a bridge: an in-memory byte stream that can say
//! why it closed. A bridge that gives a request up before any of it reached
//! the backend (a new connection could not be had, the stream could not be
//! opened on one) leaves its reason here; the pipe then reads as a reset
//! carrying that `DialError`, not as a close, so `forward::upstream` treats
//! the request as one that never left (the backend's failure to connect,
//! which the proxy fails over from), never as a 502 of a call that may
//! have run.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use super::DialError;

/// Tether's end.
pub(super) struct Pipe {
    io: DuplexStream,
    unsent: Unsent,
}

/// The bridge's hold on why its pipe closed.
#[derive(Clone, Default)]
pub(super) struct Unsent(Arc<Mutex<Option<DialError>>>);

impl Unsent {
    /// The request in the pipe went nowhere, for `why`: said before the
    /// bridge lets its end go.
    pub(super) fn set(&self, why: DialError) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    fn get(&self) -> Option<DialError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Pipe {
    pub(super) fn new(io: DuplexStream, unsent: Unsent) -> Pipe {
        Pipe { io, unsent }
    }
}

/// The `DialError` a pipe's read failed with, if that is why: the request
/// never reached the backend.
pub fn unsent(e: &io::Error) -> Option<&DialError> {
    e.get_ref()?.downcast_ref::<DialError>()
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            // Closed (nothing read into a buffer with room): said why?
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                match this.unsent.get() {
                    Some(why) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, why)))
                    }
                    None => Poll::Ready(Ok(())),
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamFailure;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn pair() -> (Pipe, DuplexStream, Unsent) {
        let (ours, theirs) = tokio::io::duplex(64);
        let unsent = Unsent::default();
        (Pipe::new(ours, unsent.clone()), theirs, unsent)
    }

    #[tokio::test]
    async fn a_pipe_closed_with_a_reason_reads_as_a_reset_carrying_it_after_its_bytes() {
        let (mut pipe, mut bridge, reason) = pair();
        bridge.write_all(b"ab").await.unwrap();
        reason.set(DialError {
            failure: UpstreamFailure::Refused,
            detail: "connect 127.0.0.1:1: refused".into(),
        });
        drop(bridge);
        let mut got = [0u8; 8];
        assert_eq!(pipe.read(&mut got).await.unwrap(), 2, "bytes first");
        let e = pipe.read(&mut got).await.expect_err("a reset");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let why = unsent(&e).expect("its reason");
        assert_eq!(why.failure, UpstreamFailure::Refused);
        assert_eq!(e.to_string(), "connect 127.0.0.1:1: refused");
    }

    #[tokio::test]
    async fn a_pipe_closed_without_one_reads_as_a_close() {
        let (mut pipe, bridge, _unsent) = pair();
        drop(bridge);
        let mut got = [0u8; 8];
        assert_eq!(pipe.read(&mut got).await.unwrap(), 0);
        let plain = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(
            unsent(&plain).is_none(),
            "a socket's reset carries no reason"
        );
    }
}
