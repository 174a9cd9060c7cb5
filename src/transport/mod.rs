//! The byte streams the HTTP/1 code reads and writes, on either side: a TCP
//! socket, TLS over one (a client Tether terminates, or a backend it calls
//! over `https://`), an in-memory pipe (unit tests of the connection, proxy
//! and relay code, with tokio's paused clock), or a boxed one (an HTTP/2
//! stream, read and written as HTTP/1.1: `http2::io`).
//!
//! One enum, not a type parameter: the request path stays one copy of the
//! code, and a match on a variant that never changes within a connection is
//! a predictable branch. A plain TCP socket keeps its direct calls (a write
//! that does not wait is one `sendto`; readiness comes from tokio's reactor);
//! the others go through `AsyncRead`/`AsyncWrite`.
//!
//! The rules every caller keeps, whatever the variant:
//! - a read that returns `Pending` has registered the waker, and means no
//!   byte is buffered anywhere (TLS holds no decrypted plaintext then);
//! - `poll_read_ready` is a hint: `Ready` means "try a read" (always so for
//!   TLS and memory, which have no readiness of their own);
//! - bytes written are only on their way once `try_flush` (or `write_all`)
//!   says so: TLS keeps records it could not send yet;
//! - a TLS peer that closes without `close_notify` reads as a close (`Ok(0)`),
//!   as most HTTP clients treat it: framing (a length, chunks) still tells a
//!   cut body from a whole one;
//! - closing never waits (`close_write`): a TLS `close_notify` goes out if the
//!   socket takes it, and a peer that stopped reading cannot hold the task.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

/// TLS over TCP, either side of it.
pub type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// A connection's byte stream.
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: the TLS state is large, and most connections are plain.
    Tls(Box<TlsStream>),
    /// An in-memory pipe: an HTTP/2 client stream bridged to the HTTP/1.1
    /// path (`http2`), a pipe to an `h2` backend (`h2up`), and tests.
    Memory(tokio::io::DuplexStream),
    /// Bytes that are not a byte stream underneath: an HTTP/2 stream read
    /// and written as HTTP/1.1 by an in-memory client (`http2::io`).
    Boxed(Box<dyn Duplex>),
}

/// What a boxed stream is.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Duplex for T {}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl Stream {
    /// The TCP socket beneath, if there is one.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            Stream::Memory(_) | Stream::Boxed(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Ready when a read is worth trying (see the module's rules).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx).map(|_| ()),
            Stream::Tls(_) | Stream::Memory(_) | Stream::Boxed(_) => Poll::Ready(()),
        }
    }

    /// Reads what is there into `buf`'s spare capacity; `Pending` (with the
    /// waker registered) if nothing is. `Ready(Ok(0))`: closed.
    ///
    /// Through `poll_read`, not `try_read`: after a read that does not fill
    /// the buffer, tokio's `poll_read` knows the socket is drained (epoll is
    /// edge-triggered) and forgets its readiness, so the next read waits for
    /// epoll; `try_read` keeps the stale readiness, and the next read is a
    /// syscall that returns `EAGAIN`: one wasted `recvfrom` per request.
    pub fn poll_read_vec(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        use std::future::Future as _;
        let read = self.read_buf(buf);
        std::pin::pin!(read).poll(cx)
    }

    /// Reads into `into`; as `poll_read_vec`.
    pub fn poll_read_slice(
        &mut self,
        cx: &mut Context<'_>,
        into: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(into);
        match Pin::new(self).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes as much of `bytes` as goes without waiting (`WouldBlock` if
    /// nothing does). For TLS, what it accepted may still wait in its
    /// buffer: see `try_flush`.
    pub fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(bytes),
            _ => match without_waiting(|cx| Pin::new(&mut *self).poll_write(cx, bytes)) {
                Some(result) => result,
                None => Err(io::ErrorKind::WouldBlock.into()),
            },
        }
    }

    /// Whether everything written so far is on its way (true at once for
    /// TCP; TLS sends the records it still holds, if the socket takes them).
    pub fn try_flush(&mut self) -> bool {
        match self {
            Stream::Tcp(_) => true,
            _ => matches!(
                without_waiting(|cx| Pin::new(&mut *self).poll_flush(cx)),
                Some(Ok(()))
            ),
        }
    }

    /// Writes all of `bytes` and flushes, waiting as long as it takes.
    pub async fn send_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        self.flush().await
    }

    /// Ends our sending side without waiting: TLS queues its `close_notify`
    /// and sends what the socket takes now; then the socket's FIN.
    pub fn close_write(&mut self) {
        match self {
            Stream::Tcp(s) => {
                let _ = socket2::SockRef::from(&*s).shutdown(std::net::Shutdown::Write);
            }
            Stream::Tls(s) => {
                match &mut **s {
                    tokio_rustls::TlsStream::Server(t) => t.get_mut().1.send_close_notify(),
                    tokio_rustls::TlsStream::Client(t) => t.get_mut().1.send_close_notify(),
                }
                // Ours to flush: the record is queued in rustls, not written.
                let _ = without_waiting(|cx| Pin::new(&mut **s).poll_flush(cx));
                let tcp = s.get_ref().0;
                let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
            }
            Stream::Memory(s) => {
                let _ = without_waiting(|cx| Pin::new(s).poll_shutdown(cx));
            }
            Stream::Boxed(s) => {
                let _ = without_waiting(|cx| Pin::new(&mut **s).poll_shutdown(cx));
            }
        }
    }

    /// A failure the socket noted (`SO_ERROR`): a reset, most often.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self.tcp() {
            Some(s) => s.take_error(),
            None => Ok(None),
        }
    }

    /// Whether an idle connection is still quiet: no byte arrived on it and
    /// it was not closed. A real non-blocking read (a peek), not tokio's
    /// cached readiness: under load the reactor may not have seen bytes that
    /// are already in the socket. TLS also must hold no decrypted byte; a
    /// record that arrived (even one carrying no data) makes it doubtful.
    pub fn still_idle(&mut self) -> bool {
        let quiet = |s: &TcpStream| {
            let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            match socket2::SockRef::from(s).peek(&mut probe) {
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                Ok(_) => false,
            }
        };
        match self {
            Stream::Tcp(s) => quiet(s),
            Stream::Tls(s) => {
                if !quiet(s.get_ref().0) {
                    return false;
                }
                let mut one = [0u8; 1];
                without_waiting(|cx| self.poll_read_slice(cx, &mut one)).is_none()
            }
            Stream::Memory(_) | Stream::Boxed(_) => {
                let mut one = [0u8; 1];
                without_waiting(|cx| self.poll_read_slice(cx, &mut one)).is_none()
            }
        }
    }
}

/// Polls once with a waker that does nothing: `None` if it would wait.
/// Whoever waits next registers its own waker.
pub(crate) fn without_waiting<T>(poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Option<T> {
    NOOP.with(|waker| {
        let mut cx = Context::from_waker(waker);
        match poll(&mut cx) {
            Poll::Ready(t) => Some(t),
            Poll::Pending => None,
        }
    })
}

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

thread_local! {
    static NOOP: Waker = Waker::from(Arc::new(Noop));
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => match Pin::new(&mut **s).poll_read(cx, buf) {
                // Closed without close_notify: a close (see the module's rules).
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(()))
                }
                other => other,
            },
            Stream::Memory(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Boxed(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Memory(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Boxed(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Memory(s) => Pin::new(s).poll_flush(cx),
            Stream::Boxed(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Memory(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Boxed(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Stream::Tls(_) => f.write_str("Tls"),
            Stream::Memory(_) => f.write_str("Memory"),
            Stream::Boxed(_) => f.write_str("Boxed"),
        }
    }
}

/// A stream whose first bytes were already read (an HTTP/2 preface sniffed
/// on a plain listener, bytes after a PROXY header): they are read again
/// first, then the stream.
pub struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: Stream,
}

impl Prefixed {
    pub fn new(prefix: Vec<u8>, inner: Stream) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
