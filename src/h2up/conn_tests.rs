//! The shared connection under load and failure: one unread answer stalls
//! no other stream, a pipe's next request does not wait for a stream's
//! end after its whole length, waiters share a failed dial, long-lived
//! streams at the server's limit hold no call back, and a connection that
//! stopped answering is given up. (Each failed before its fix.)

use std::sync::atomic::AtomicUsize;

use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bytes of the `/big` answer.
const BIG: usize = 4 << 20;

/// An h2c server: `/big` sends `BIG` bytes as fast as the windows allow
/// (counted in the returned counter); `/hold` sends `content-length: 5`,
/// `hello`, and never ends the stream; `/sse` sends a head and one event and
/// never ends; anything else is `hello` with its length. `streams`: the
/// server's `max_concurrent_streams`.
async fn server(streams: Option<u32>) -> (Target, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let sent = counter.clone();
            tokio::spawn(async move {
                let mut builder = h2::server::Builder::new();
                if let Some(n) = streams {
                    builder.max_concurrent_streams(n);
                }
                let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(handle(req, respond, sent.clone()));
                }
            });
        }
    });
    let target = Target {
        scheme: Scheme::HTTP,
        authority: Authority::try_from(addr.to_string()).unwrap(),
        tls: crate::tls::backend::BackendTls::shared_default(),
        connect_timeout: Duration::from_secs(5),
    };
    (target, sent)
}

async fn handle(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    sent: Arc<AtomicUsize>,
) {
    let (parts, mut body) = req.into_parts();
    while let Some(Ok(d)) = body.data().await {
        let _ = body.flow_control().release_capacity(d.len());
    }
    let head = |length: Option<usize>| {
        let mut r = http::Response::builder().status(200);
        if let Some(l) = length {
            r = r.header("content-length", l);
        }
        r.body(()).unwrap()
    };
    match parts.uri.path() {
        "/big" => {
            let mut send = respond.send_response(head(None), false).unwrap();
            let mut left = BIG;
            while left > 0 {
                send.reserve_capacity(left.min(1 << 20));
                let Some(Ok(n)) = std::future::poll_fn(|cx| send.poll_capacity(cx)).await else {
                    return;
                };
                let n = n.min(left);
                if send.send_data(Bytes::from(vec![b' '; n]), false).is_err() {
                    return;
                }
                left -= n;
                sent.fetch_add(n, Ordering::Relaxed);
            }
            let _ = send.send_data(Bytes::new(), true);
        }
        "/hold" | "/sse" => {
            let (length, data) = match parts.uri.path() {
                "/hold" => (Some(5), "hello"),
                _ => (None, "data: first\n\n"),
            };
            let mut send = respond.send_response(head(length), false).unwrap();
            send.send_data(Bytes::from(data), false).unwrap();
            // Held open until the client resets it.
            let _ = std::future::poll_fn(|cx| send.poll_reset(cx)).await;
        }
        _ => {
            let mut send = respond.send_response(head(Some(5)), false).unwrap();
            send.send_data(Bytes::from("hello"), true).unwrap();
        }
    }
}

/// Reads one HTTP/1.1 answer from the pipe: its head, and its body by the
/// framing the head says (for a chunked one, until `until` shows).
async fn answer(pipe: &mut Stream, until: &str) -> String {
    let mut buf = Vec::new();
    loop {
        if let Ok(Some(head)) = crate::http1::head::ResponseHead::parse(&buf, 64 << 10, false) {
            let done = match head.framing {
                crate::http1::head::Framing::Length(n) => buf.len() - head.len >= n as usize,
                _ => String::from_utf8_lossy(&buf).contains(until),
            };
            if done {
                return String::from_utf8(buf).unwrap();
            }
        }
        let n = pipe.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
    }
}

/// Sends `GET path` on the pipe and reads its answer (see `answer`).
async fn get(pipe: &mut Stream, path: &str, until: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
    pipe.write_all(request.as_bytes()).await.unwrap();
    answer(pipe, until).await
}

const BOUND: Duration = Duration::from_secs(5);

/// Waits until `done` holds, checking every millisecond, at most `BOUND`
/// (then the test fails with `what`).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {BOUND:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The connection has had a GOAWAY: its `h2` handle refuses new streams.
fn got_goaway(conn: &Conn) -> bool {
    let mut send = conn.send.clone();
    matches!(
        crate::transport::without_waiting(|cx| send.poll_ready(cx)),
        Some(Err(_))
    )
}

#[tokio::test]
async fn an_unread_answer_does_not_stall_the_other_streams_on_the_connection() {
    let (target, sent) = server(None).await;
    let link = Arc::new(Link::default());
    let mut slow = pipe(&link, &target).await.unwrap();
    slow.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    // Nobody reads `slow`: it takes a whole stream window of the
    // connection's, four times what a connection with the default window
    // (64 KiB) would have had for every stream.
    until("the unread answer to take a whole stream window (a smaller connection window stops it first)", || {
        sent.load(Ordering::Relaxed) >= STREAM_WINDOW as usize
    })
    .await;
    let held = sent.load(Ordering::Relaxed);
    let mut other = pipe(&link, &target).await.unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let a = tokio::time::timeout(BOUND, answer(&mut other, ""))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a small answer on the shared connection is stuck behind an unread one \
                 ({held} bytes of it sent: the connection window is spent)"
            )
        });
    assert!(a.ends_with("hello"), "{a}");
    assert_eq!(link.made.load(Ordering::Relaxed), 1);
    drop(slow);
}

#[tokio::test]
async fn the_next_request_on_a_pipe_does_not_wait_for_an_end_stream_after_the_whole_length() {
    let (target, _) = server(None).await;
    let link = Arc::new(Link::default());
    let mut pipe = pipe(&link, &target).await.unwrap();
    let a = get(&mut pipe, "/hold", "").await;
    assert!(a.ends_with("\r\n\r\nhello"), "{a}");
    // The answer is whole by its length: Tether checks the pipe in and reuses it.
    pipe.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let a = tokio::time::timeout(BOUND, answer(&mut pipe, ""))
        .await
        .expect("the second request waits for the first stream's END_STREAM");
    assert!(a.ends_with("hello"), "{a}");
}

#[tokio::test]
async fn waiters_for_a_dial_that_times_out_fail_with_it_not_one_timeout_each() {
    // A TLS backend that accepts TCP and never answers the ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let timeout = Duration::from_millis(300);
    let target = Target {
        scheme: Scheme::HTTPS,
        authority: Authority::try_from(addr.to_string()).unwrap(),
        tls: crate::tls::backend::BackendTls::shared_default(),
        connect_timeout: timeout,
    };
    let link = Arc::new(Link::default());
    let started = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (link, target) = (link.clone(), target.clone());
        set.spawn(async move {
            let failed = pipe(&link, &target).await.is_err();
            (failed, started.elapsed())
        });
    }
    let results = set.join_all().await;
    assert!(results.iter().all(|r| r.0), "every dial fails");
    let slowest = results.iter().map(|r| r.1).max().unwrap();
    assert!(
        slowest < timeout * 2,
        "the last of 4 waiters failed after {slowest:?} with connect_timeout {timeout:?} \
         (each waiter dials anew, one after another, under the dialing lock)"
    );
}

#[tokio::test]
async fn a_request_is_not_held_behind_long_lived_streams_at_the_servers_stream_limit() {
    // An MCP backend holds a GET event stream per session; at the server's
    // max_concurrent_streams (1 here, 100 is common) every other request
    // to the backend waits for one of them to end.
    let (target, _) = server(Some(1)).await;
    let link = Arc::new(Link::default());
    let mut warm = pipe(&link, &target).await.unwrap();
    assert!(get(&mut warm, "/", "").await.ends_with("hello"));
    let mut sse = pipe(&link, &target).await.unwrap();
    let a = get(&mut sse, "/sse", "first").await;
    assert!(a.contains("first"), "{a}");
    warm.write_all(b"POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let a = tokio::time::timeout(BOUND, answer(&mut warm, ""))
        .await
        .expect("a tool call waits until an event stream ends");
    assert!(a.ends_with("hello"), "{a}");
    drop(sse);
}

#[tokio::test]
async fn a_shared_connection_that_stopped_answering_is_given_up() {
    // The backend's first connection stops being served after one answer
    // (a wedged event loop; a middlebox that lost the flow behaves alike,
    // for the ~15 min until TCP gives up); new connections work, so a
    // health probe, which dials its own, finds the backend healthy.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(tokio::sync::Notify::new());
    let signal = frozen.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((tcp, _)) = listener.accept().await {
            let freeze = std::mem::take(&mut first).then(|| signal.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(handle(req, respond, Arc::default()));
                    if let Some(signal) = &freeze {
                        // Serve long enough to send the answer, then stop.
                        let _ =
                            tokio::time::timeout(Duration::from_millis(300), conn.accept()).await;
                        signal.notify_one();
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
    });
    let target = Target {
        scheme: Scheme::HTTP,
        authority: Authority::try_from(addr.to_string()).unwrap(),
        tls: crate::tls::backend::BackendTls::shared_default(),
        connect_timeout: Duration::from_secs(5),
    };
    let link = Arc::new(Link::default());
    let mut p = pipe(&link, &target).await.unwrap();
    assert!(get(&mut p, "/", "").await.ends_with("hello"));
    frozen.notified().await;
    // A health probe's own connection answers.
    let mut probe = once(&target).await.unwrap();
    assert!(get(&mut probe, "/", "").await.ends_with("hello"));
    // Requests on the shared connection: neither answered nor failed.
    let mut q = pipe(&link, &target).await.unwrap();
    q.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), q.read_buf(&mut got)).await;
    assert!(
        ended.is_ok(),
        "the dead shared connection is kept: no PING, no deadline (made {} connection(s))",
        link.made.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn an_idle_sibling_is_closed_once_the_load_goes_down() {
    // Limit 1: an event stream fills the first connection, a call gets a
    // sibling; both end. mod.rs says "the later ones empty and close".
    let (target, _) = server(Some(1)).await;
    let link = Arc::new(Link::default());
    let mut sse = pipe(&link, &target).await.unwrap();
    assert!(get(&mut sse, "/sse", "first").await.contains("first"));
    let mut call = pipe(&link, &target).await.unwrap();
    assert!(get(&mut call, "/", "").await.ends_with("hello"));
    assert_eq!(link.made.load(Ordering::Relaxed), 2);
    drop(sse);
    drop(call);
    // The PINGs are answered: only being idle closes the sibling.
    until(
        "an idle sibling is closed (an idle sibling is never closed)",
        || link.lock().iter().filter(|c| c.usable()).count() == 1,
    )
    .await;
}

#[tokio::test]
async fn a_request_never_sent_is_not_a_502_when_every_sibling_got_goaway() {
    // A backend restarting gracefully sends GOAWAY on each connection; its
    // event streams keep them open. A new request finds a sibling with
    // room, fails to open there, "retries on a fresh one" -- another
    // GOAWAY'd sibling -- and gives up, though nothing was sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shut, shut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut shut = shut_rx.clone();
            tokio::spawn(async move {
                let mut builder = h2::server::Builder::new();
                builder.max_concurrent_streams(2);
                let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else {
                    return;
                };
                let mut shutting = false;
                loop {
                    tokio::select! {
                        r = conn.accept() => match r {
                            Some(Ok((req, respond))) => {
                                tokio::spawn(handle(req, respond, Arc::default()));
                            }
                            _ => return,
                        },
                        _ = shut.wait_for(|s| *s), if !shutting => {
                            shutting = true;
                            conn.graceful_shutdown();
                        }
                    }
                }
            });
        }
    });
    let target = Target {
        scheme: Scheme::HTTP,
        authority: Authority::try_from(addr.to_string()).unwrap(),
        tls: crate::tls::backend::BackendTls::shared_default(),
        connect_timeout: Duration::from_secs(5),
    };
    let link = Arc::new(Link::default());
    let mut sse = Vec::new();
    for _ in 0..3 {
        // Two on the first connection (full), the third on a sibling.
        let mut p = pipe(&link, &target).await.unwrap();
        assert!(get(&mut p, "/sse", "first").await.contains("first"));
        sse.push(p);
    }
    assert_eq!(link.made.load(Ordering::Relaxed), 2);
    drop(sse.remove(0)); // the first connection has room again
    until("the dropped stream's slot is free", || {
        link.lock()[0].open.load(Ordering::Relaxed) == 1
    })
    .await;
    shut.send_replace(true);
    until("both connections got their GOAWAY", || {
        let conns = link.lock();
        conns.len() == 2 && conns.iter().all(got_goaway)
    })
    .await;
    let mut q = pipe(&link, &target).await.unwrap();
    q.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let n = tokio::time::timeout(BOUND, q.read_buf(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(
        n > 0,
        "a request that went nowhere got no answer (a 502): its retry took another GOAWAY'd \
         sibling (made {} connection(s))",
        link.made.load(Ordering::Relaxed)
    );
    // It went to a new connection: the two it found had both gone away.
    assert_eq!(link.made.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_dial_in_flight_when_the_link_is_forgotten_is_not_kept() {
    // set_protocol(Http1) / retire() call forget() while a request dials.
    let (target, _) = server(None).await;
    let link = Arc::new(Link::default());
    let (l, t) = (link.clone(), target.clone());
    let dial = tokio::spawn(async move { l.conn(&t).await.map(|_| ()) });
    while link.made.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    link.forget();
    dial.await.unwrap().unwrap();
    // Kept, it would be PINGed and answered for good.
    let kept = link.lock().iter().filter(|c| c.usable()).count();
    assert_eq!(
        kept, 0,
        "a connection made after forget() is kept (and PINGed) for good"
    );
}

#[tokio::test]
async fn an_idle_pipe_holds_no_pooled_buffer() {
    // Single-threaded runtime: the bridge shares this thread's pool. A
    // buffer put on top of the pool is still there if the idle bridge
    // took none.
    let (target, _) = server(None).await;
    let link = Arc::new(Link::default());
    // The buffer the next take gets (given straight back).
    let top = || {
        let buf = crate::http1::buf::take();
        let ptr = buf.as_ptr();
        crate::http1::buf::give(buf);
        ptr
    };
    let ptr = top();
    let mut p = pipe(&link, &target).await.unwrap();
    // On a current-thread runtime a yield runs every task already woken
    // (the bridge, spawned) to its next wait before this one resumes.
    tokio::task::yield_now().await;
    assert_eq!(
        top(),
        ptr,
        "the idle bridge took a pooled buffer and holds it"
    );
    // The same wait sees a bridge that does hold one: half a request is
    // kept in a pooled buffer until the rest comes.
    p.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    tokio::task::yield_now().await;
    assert_ne!(
        top(),
        ptr,
        "the bridge did not run within the wait (the check above proves nothing)"
    );
    drop(p);
}

#[tokio::test]
async fn a_connection_that_used_its_stream_ids_is_replaced_not_kept_failing() {
    // Past its last stream id the h2 crate refuses every request on a
    // connection with a user error, which condemns no connection: every
    // request after it would be a 502. Three ids per connection here.
    let (target, _) = server(None).await;
    let link = Arc::new(Link::with_stream_ids(3));
    let mut p = pipe(&link, &target).await.unwrap();
    for i in 0..7 {
        let answer = tokio::time::timeout(BOUND, get(&mut p, "/", "hello"))
            .await
            .unwrap_or_else(|_| panic!("request {i} got no answer"));
        assert!(answer.ends_with("hello"), "request {i}: {answer}");
    }
    // The dial for the pipe counts one: 1 + 7 slots over 3 each.
    assert_eq!(link.made.load(Ordering::Relaxed), 3);
    assert_eq!(link.lock().len(), 1, "the used ones are dropped");
}
