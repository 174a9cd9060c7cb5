use std::io::{Read as _, Write as _};
use std::time::Duration;

use super::*;

/// A connected pair: ours (tokio, registered with the reactor) and the
/// backend's (plain std, so its actions never let our reactor run).
async fn pair() -> (Stream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (theirs, _) = listener.accept().unwrap();
    (Stream::Tcp(ours), theirs)
}

/// Spins (without yielding to the reactor) until the kernel has something
/// for `stream`: data, a close or an error.
fn until_kernel_has_news(stream: &Stream) {
    let stream = stream.tcp().unwrap();
    let start = std::time::Instant::now();
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    while let Err(e) = socket2::SockRef::from(stream).peek(&mut probe) {
        if e.kind() != std::io::ErrorKind::WouldBlock {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "nothing arrived");
        std::thread::yield_now();
    }
}

#[tokio::test]
async fn the_checkout_probe_sees_bytes_the_reactor_has_not_seen_yet() {
    let (mut ours, mut theirs) = pair().await;
    assert!(ours.still_idle());
    theirs.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
    until_kernel_has_news(&ours);
    // No await since the bytes came: tokio's cached readiness is stale, so a
    // readiness-based probe (what checkout used) would call this idle...
    let mut byte = [0u8; 1];
    assert_eq!(
        ours.tcp().unwrap().try_read(&mut byte).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    // ...while the real read sees them, and the connection is retired.
    assert!(!ours.still_idle());
}

#[tokio::test]
async fn the_checkout_probe_sees_a_close() {
    let (mut ours, theirs) = pair().await;
    drop(theirs);
    until_kernel_has_news(&ours);
    assert!(!ours.still_idle());
}

const REQUEST: &[u8] = b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";

#[tokio::test]
async fn a_reused_connection_the_backend_closed_before_the_request_is_stale() {
    // The backend's idle timer closed the connection; our request crosses
    // its FIN. The backend's kernel resets the request it can no longer
    // deliver: proof it was never read, so it may go on a new connection.
    let (ours, theirs) = pair().await;
    drop(theirs);
    until_kernel_has_news(&ours);
    let result = attempt(ours, true, REQUEST, false).await;
    assert!(
        matches!(result, Err(Attempt::Stale)),
        "{:?}",
        result.err().map(|_| ())
    );
}

#[tokio::test]
async fn a_backend_that_read_the_request_and_closed_is_a_failure_not_a_retry() {
    let (ours, mut theirs) = pair().await;
    let backend = std::thread::spawn(move || {
        let mut got = vec![0u8; REQUEST.len()];
        theirs.read_exact(&mut got).unwrap();
        // Read it all, answered nothing, closed: it may have acted on it.
    });
    let result = attempt(ours, true, REQUEST, false).await;
    backend.join().unwrap();
    match result {
        Err(Attempt::Failed(e)) => assert_eq!(e.failure, UpstreamFailure::Io),
        Err(Attempt::Stale) => panic!("a request the backend read was marked for a replay"),
        Ok(_) => panic!("no response was sent"),
    }
}

#[tokio::test(start_paused = true)]
async fn idle_connections_expire_by_the_backends_announced_timeout() {
    let upstream = Upstream::new(&UpstreamSettings {
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        pool_idle_timeout: Duration::from_secs(4),
        tls: crate::tls::backend::BackendTls::shared_default().load_full(),
    });
    let backend = Backend::new(http::uri::Scheme::HTTP, "127.0.0.1:1".parse().unwrap());
    for (announced, kept) in [
        (None, Duration::from_secs(4)),
        (Some(Duration::from_secs(5)), Duration::from_secs(4)),
        (Some(Duration::from_secs(3)), Duration::from_secs(2)),
        (Some(Duration::from_secs(1)), Duration::from_millis(500)),
    ] {
        let (ours, _theirs) = pair().await;
        upstream.checkin(&backend, ours, announced);
        tokio::time::advance(kept - Duration::from_millis(1)).await;
        let kept_conn = upstream.checkout(&backend);
        assert!(kept_conn.is_some(), "{announced:?}: gone before {kept:?}");
        upstream.checkin(&backend, kept_conn.unwrap(), announced);
        // Checked in again: its clock restarts.
        tokio::time::advance(kept).await;
        assert!(
            upstream.checkout(&backend).is_none(),
            "{announced:?}: kept past {kept:?}"
        );
    }
    let (ours, _theirs) = pair().await;
    upstream.checkin(&backend, ours, Some(Duration::ZERO));
    assert_eq!(upstream.idle_count(&backend), 0, "timeout=0: not kept");
}

#[tokio::test]
async fn a_backend_removed_while_its_request_ran_keeps_no_connection() {
    // Found in review: a connection checked in after its backend left the
    // pool stayed open (nothing sweeps removed backends).
    let upstream = Upstream::new(&UpstreamSettings {
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        pool_idle_timeout: Duration::from_secs(4),
        tls: crate::tls::backend::BackendTls::shared_default().load_full(),
    });
    let backend = Backend::new(http::uri::Scheme::HTTP, "127.0.0.1:1".parse().unwrap());
    let (ours, _theirs) = pair().await;
    upstream.checkin(&backend, ours, None);
    backend.retire();
    assert_eq!(upstream.idle_count(&backend), 0, "closed at removal");
    let (ours, _theirs) = pair().await;
    upstream.checkin(&backend, ours, None);
    assert_eq!(upstream.idle_count(&backend), 0, "not kept after removal");
    backend.revive();
    let (ours, _theirs) = pair().await;
    upstream.checkin(&backend, ours, None);
    assert_eq!(upstream.idle_count(&backend), 1);
}
