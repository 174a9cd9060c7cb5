//! Reads from a socket into a buffer, through tokio's `poll_read`.
//!
//! Why not `try_read`: after a read that does not fill the buffer, tokio's
//! `poll_read` knows the socket is drained (epoll is edge-triggered) and
//! forgets its readiness, so the next read waits for epoll; `try_read` keeps
//! the stale readiness, and the next read is a syscall that returns `EAGAIN`:
//! one wasted `recvfrom` per request on a kept-alive connection.

use std::future::Future as _;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// Reads what `stream` has into `buf`'s spare capacity; `Pending` (with the
/// waker registered) if nothing is there. `Ready(Ok(0))`: closed.
pub fn poll_read_vec(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
) -> Poll<std::io::Result<usize>> {
    let read = stream.read_buf(buf);
    std::pin::pin!(read).poll(cx)
}

/// Reads what `stream` has now, without waiting: `None` if nothing.
pub fn read_now(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    NOOP.with(|waker| {
        let mut cx = Context::from_waker(waker);
        match poll_read_vec(stream, &mut cx, buf) {
            Poll::Ready(result) => result.map(Some),
            Poll::Pending => Ok(None),
        }
    })
}

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

thread_local! {
    /// For a read that will not wait; whoever waits next registers its own waker.
    static NOOP: Waker = Waker::from(Arc::new(Noop));
}
