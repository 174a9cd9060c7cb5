//! The relay over in-memory I/O: a backend's end and a client's end of two
//! pipes, driven by the test; timers under `tokio::time::pause()`.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

use super::*;
use crate::downstream::{BodyBudget, ConnSettings};
use crate::http1::head::ResponseHead;
use crate::lifecycle::Lifecycle;
use crate::testing::pending;

const HEAD_OUT: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

fn settings(lifecycle: Arc<Lifecycle>) -> ConnSettings {
    ConnSettings {
        header_read_timeout: Duration::from_secs(10),
        max_header_bytes: 64 << 10,
        max_request_body: 1 << 20,
        request_body_timeout: Duration::from_secs(10),
        budget: BodyBudget::new(1 << 20, Default::default(), Default::default()),
        lifecycle,
        proxy_protocol: false,
        tls: None,
        http2: crate::config::Http2Settings::default(),
    }
}

fn options(downstream: Downstream) -> Options {
    Options {
        downstream,
        idle_timeout: None,
        event_stream: false,
        rewriter: None,
        rewrite: None,
        gate: None,
    }
}

/// What a test drives: the relay, the client it writes to, and the far ends
/// of both pipes (the backend's, the client's).
struct Exchange {
    relay: Relay,
    client: Client,
    backend: DuplexStream,
    peer: DuplexStream,
}

/// A relay of a backend's answer whose first read was `first` (its head and
/// whatever came with it), the client's head being `HEAD_OUT`.
fn exchange(first: &[u8], head_request: bool, options: Options) -> Exchange {
    exchange_in(first, head_request, options, Arc::default())
}

fn exchange_in(
    first: &[u8],
    head_request: bool,
    options: Options,
    lifecycle: Arc<Lifecycle>,
) -> Exchange {
    let head = ResponseHead::parse(first, 64 << 10, head_request)
        .unwrap()
        .expect("a whole head");
    let (ours, backend) = tokio::io::duplex(64 << 10);
    let (theirs, peer) = tokio::io::duplex(64 << 10);
    let response = Response {
        stream: Stream::Memory(ours),
        buf: first.to_vec(),
        head,
        request_complete: true,
    };
    let client = Client::new(
        Stream::Memory(theirs),
        "127.0.0.1:1".parse().unwrap(),
        &settings(lifecycle),
    );
    Exchange {
        relay: Relay::new(response, HEAD_OUT.to_vec(), options),
        client,
        backend,
        peer,
    }
}

/// Reads from the client's end until `n` bytes are in.
async fn read_n(peer: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    peer.read_exact(&mut got).await.unwrap();
    got
}

fn body_of(sent: &[u8]) -> &[u8] {
    sent.strip_prefix(HEAD_OUT).expect("the head first")
}

#[tokio::test]
async fn a_body_split_across_reads_reaches_the_client_whole_and_the_connection_is_kept() {
    let first = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
    let mut x = exchange(first, false, options(Downstream::Length(10)));
    let (end, sent) = tokio::join!(x.relay.run(&mut x.client), async {
        x.backend.write_all(b"world").await.unwrap();
        read_n(&mut x.peer, HEAD_OUT.len() + 10).await
    });
    assert_eq!(body_of(&sent), b"helloworld");
    assert!(matches!(end, End::Complete { reusable: true }), "{end:?}");
}

#[tokio::test]
async fn bytes_after_the_body_are_not_relayed_and_retire_the_connection() {
    let first = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n";
    let mut x = exchange(first, false, options(Downstream::Length(5)));
    let end = x.relay.run(&mut x.client).await;
    assert!(matches!(end, End::Complete { reusable: false }), "{end:?}");
    assert_eq!(body_of(&pending(&mut x.peer)), b"hello");
}

#[tokio::test]
async fn a_head_answer_that_declares_a_body_is_not_kept() {
    // A HEAD answer has no body whatever its length says; a backend that
    // sends one anyway would answer the next request with it.
    let first = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    let mut x = exchange(first, true, options(Downstream::None));
    let end = x.relay.run(&mut x.client).await;
    assert!(matches!(end, End::Complete { reusable: false }), "{end:?}");
    assert_eq!(pending(&mut x.peer), HEAD_OUT);
}

#[tokio::test]
async fn a_chunked_body_is_decoded_and_chunked_again_for_the_client() {
    let first = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n";
    let mut x = exchange(first, false, options(Downstream::Chunked));
    let (end, sent) = tokio::join!(x.relay.run(&mut x.client), async {
        // An extension and a trailer: the backend's, not for the client.
        x.backend
            .write_all(b"2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n")
            .await
            .unwrap();
        let mut sent = Vec::new();
        while !sent.ends_with(chunked::LAST_CHUNK) {
            let mut chunk = [0u8; 256];
            let n = x.peer.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the last chunk: {sent:?}");
            sent.extend_from_slice(&chunk[..n]);
        }
        sent
    });
    assert!(matches!(end, End::Complete { reusable: true }), "{end:?}");
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let framed = body_of(&sent);
    let used = decoder
        .decode(framed, &mut |d| body.extend_from_slice(d))
        .unwrap();
    assert!(decoder.is_done());
    assert_eq!(used, framed.len());
    assert_eq!(body, b"abcde");
    assert!(!sent.windows(3).any(|w| w == b"ext"), "{sent:?}");
    assert!(!sent.windows(9).any(|w| w == b"x-trailer"), "{sent:?}");
}

#[tokio::test]
async fn a_body_until_close_ends_complete_when_the_backend_closes() {
    let first = b"HTTP/1.0 200 OK\r\n\r\npart one, ";
    let mut x = exchange(first, false, options(Downstream::Close));
    let backend = &mut x.backend;
    let (end, ()) = tokio::join!(x.relay.run(&mut x.client), async {
        backend.write_all(b"part two").await.unwrap();
        backend.shutdown().await.unwrap();
    });
    assert!(matches!(end, End::Complete { reusable: false }), "{end:?}");
    assert_eq!(body_of(&pending(&mut x.peer)), b"part one, part two");
}

#[tokio::test]
async fn a_backend_that_closes_mid_body_cuts_it() {
    let first = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
    let mut x = exchange(first, false, options(Downstream::Length(10)));
    drop(x.backend);
    let end = x.relay.run(&mut x.client).await;
    assert!(
        matches!(&end, End::Cut(why) if why.contains("closed")),
        "{end:?}"
    );
    // What came is relayed, the rest never: the client sees a short body.
    assert_eq!(body_of(&pending(&mut x.peer)), b"hello");
}

#[tokio::test]
async fn a_broken_chunked_body_cuts_it() {
    let first = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n";
    let mut x = exchange(first, false, options(Downstream::Chunked));
    let end = x.relay.run(&mut x.client).await;
    assert!(
        matches!(&end, End::Cut(why) if why.contains("chunked")),
        "{end:?}"
    );
    let sent = pending(&mut x.peer);
    assert!(!sent.ends_with(chunked::LAST_CHUNK), "{sent:?}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_event_stream_ends_cleanly_after_the_idle_timeout() {
    let first =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut opts = options(Downstream::Chunked);
    opts.idle_timeout = Some(Duration::from_secs(30));
    opts.event_stream = true;
    let mut x = exchange(first, false, opts);
    let started = Instant::now();
    let (end, ()) = tokio::join!(x.relay.run(&mut x.client), async {
        x.backend
            .write_all(b"b\r\ndata: one\n\n\r\n")
            .await
            .unwrap();
    });
    assert!(matches!(end, End::IdleTimeout { clean: true }), "{end:?}");
    assert!(started.elapsed() >= Duration::from_secs(30));
    // The event, then a clean end of the stream (the last chunk).
    let sent = pending(&mut x.peer);
    assert_eq!(body_of(&sent), b"b\r\ndata: one\n\n\r\n0\r\n\r\n");
}

#[tokio::test(start_paused = true)]
async fn an_idle_body_that_is_not_a_stream_is_cut() {
    let first = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
    let mut opts = options(Downstream::Length(10));
    opts.idle_timeout = Some(Duration::from_secs(30));
    let mut x = exchange(first, false, opts);
    let end = x.relay.run(&mut x.client).await;
    assert!(matches!(end, End::IdleTimeout { clean: false }), "{end:?}");
    assert_eq!(body_of(&pending(&mut x.peer)), b"hello");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_keeps_sending_is_never_idle() {
    // Each event pushes the idle deadline back: 40 s of events 20 s apart
    // under a 30 s timeout end with the backend's end, not a timeout.
    let first =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut opts = options(Downstream::Chunked);
    opts.idle_timeout = Some(Duration::from_secs(30));
    opts.event_stream = true;
    let mut x = exchange(first, false, opts);
    let backend = &mut x.backend;
    let (end, ()) = tokio::join!(x.relay.run(&mut x.client), async {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            backend.write_all(b"9\r\ndata: x\n\n\r\n").await.unwrap();
        }
        backend.write_all(b"0\r\n\r\n").await.unwrap();
    });
    assert!(matches!(end, End::Complete { reusable: true }), "{end:?}");
}

#[tokio::test]
async fn a_client_that_goes_away_ends_the_relay_and_closes_the_backend_connection() {
    let first =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut opts = options(Downstream::Chunked);
    opts.event_stream = true;
    let mut x = exchange(first, false, opts);
    let peer = x.peer;
    let run = async {
        tokio::join!(x.relay.run(&mut x.client), async {
            drop(peer);
        })
    };
    // Bounded: a relay that misses the close would wait for ever.
    let (end, ()) = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the relay saw the client go");
    assert!(matches!(end, End::ClientGone), "{end:?}");
    // Dropping the relay drops the backend's connection: the backend reads
    // its end (that is how a disconnect reaches it).
    drop(x.relay);
    let mut rest = Vec::new();
    assert_eq!(x.backend.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test]
async fn shutdown_ends_a_held_event_stream_cleanly() {
    let lifecycle = Arc::new(Lifecycle::default());
    let first =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut opts = options(Downstream::Chunked);
    opts.event_stream = true;
    let mut x = exchange_in(first, false, opts, lifecycle.clone());
    let (end, ()) = tokio::join!(x.relay.run(&mut x.client), async {
        lifecycle.begin_closing();
        lifecycle.begin_ending();
    });
    assert!(matches!(end, End::Shutdown), "{end:?}");
    assert_eq!(body_of(&pending(&mut x.peer)), chunked::LAST_CHUNK);
}
