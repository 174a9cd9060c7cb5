use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A client whose buffer holds `len` bytes of a request, with a peer socket.
async fn client_with_buffer(len: usize) -> (Client, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_side = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (s, peer) = listener.accept().await.unwrap();
    let mut buf = Vec::with_capacity(len);
    buf.resize(len, b' ');
    let client = Client {
        stream: crate::transport::Stream::Tcp(s),
        peer,
        peer_ip: "".into(),
        buf,
        watch_limit: 64 * 1024,
        held: len,
        overflowed: false,
        half_closed: false,
        answering: false,
        secure: false,
        read_timer: timer::LazyTimer::new(),
        response_timer: timer::LazyTimer::new(),
        write_timeout: std::time::Duration::from_secs(1),
        probe_at: None,
        lifecycle: Default::default(),
        access: None,
        written: None,
    };
    (client, peer_side)
}

#[tokio::test]
async fn a_buffer_grown_for_a_large_body_is_given_back_when_consumed() {
    // Found in review: the drained buffer kept its 4 MiB for the rest of the
    // exchange (a held stream, perhaps), after the budget was given back.
    let (mut client, _peer) = client_with_buffer(4 << 20).await;
    client.buf.extend_from_slice(b"GET /next");
    client.consume(4 << 20);
    assert_eq!(client.buf, b"GET /next");
    assert!(
        client.buf.capacity() <= 2 * buf::SIZE,
        "{}",
        client.buf.capacity()
    );
}

#[tokio::test]
async fn watching_a_client_does_not_double_a_full_buffer() {
    // Found in review: one pipelined byte made a full 4 MiB buffer 8 MiB.
    let (mut client, mut peer) = client_with_buffer(4 << 20).await;
    peer.write_all(b"G").await.unwrap();
    std::future::poll_fn(|cx| {
        while client.buf.len() == 4 << 20 {
            if client.poll_watch(cx).is_ready() {
                break;
            }
            if client.buf.len() == 4 << 20 {
                return std::task::Poll::Pending;
            }
        }
        std::task::Poll::Ready(())
    })
    .await;
    assert_eq!(client.buf.len(), (4 << 20) + 1);
    assert!(
        client.buf.capacity() <= (4 << 20) + 8192,
        "{}",
        client.buf.capacity()
    );
}

#[test]
fn an_address_is_written_once_as_a_client_would_read_it() {
    let text = |s: &str| super::ip_text(s.parse().unwrap()).to_string();
    assert_eq!(text("192.0.2.7"), "192.0.2.7");
    assert_eq!(text("2001:db8::1"), "2001:db8::1");
    // An IPv4 client of a dual-stack listener.
    assert_eq!(text("::ffff:192.0.2.7"), "192.0.2.7");
    let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe";
    assert_eq!(text(longest), longest);
}
