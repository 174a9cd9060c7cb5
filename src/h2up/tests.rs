//! The bridge against a real h2 server on a socket: framing both ways,
//! keep-alive on one pipe, `Connection: close`.

use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An h2c server that answers each request by its path: `/len` with the
/// body's length, `/empty` with a 204, anything else `hello` (5 bytes,
/// length declared) or, for `/chunks`, two DATA frames without a length.
async fn server() -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let (parts, mut body) = req.into_parts();
                        let mut n = 0;
                        while let Some(Ok(d)) = body.data().await {
                            n += d.len();
                            let _ = body.flow_control().release_capacity(d.len());
                        }
                        let path = parts.uri.path().to_owned();
                        let (status, length, data): (u16, Option<usize>, Vec<Bytes>) = match path
                            .as_str()
                        {
                            "/len" => {
                                let b = Bytes::from(n.to_string());
                                (200, Some(b.len()), vec![b])
                            }
                            "/empty" => (204, None, vec![]),
                            "/chunks" => (200, None, vec![Bytes::from("ab"), Bytes::from("cde")]),
                            _ => (200, Some(5), vec![Bytes::from("hello")]),
                        };
                        let mut r = http::Response::builder().status(status);
                        if let Some(l) = length {
                            r = r.header("content-length", l);
                        }
                        let end = data.is_empty() || parts.method == http::Method::HEAD;
                        let mut send = respond.send_response(r.body(()).unwrap(), end).unwrap();
                        if !end {
                            for d in data {
                                send.send_data(d, false).unwrap();
                            }
                            send.send_data(Bytes::new(), true).unwrap();
                        }
                    });
                }
            });
        }
    });
    Target {
        scheme: Scheme::HTTP,
        authority: Authority::try_from(addr.to_string()).unwrap(),
        tls: crate::tls::backend::BackendTls::shared_default(),
        connect_timeout: Duration::from_secs(5),
    }
}

/// Reads one HTTP/1.1 answer from the pipe (its head, and its body by the
/// framing the head says) as text.
async fn answer(pipe: &mut Stream, head_request: bool) -> String {
    let mut buf = Vec::new();
    loop {
        if let Ok(Some(head)) =
            crate::http1::head::ResponseHead::parse(&buf, 64 << 10, head_request)
        {
            let done = |b: &[u8]| match head.framing {
                crate::http1::head::Framing::Length(n) => b.len() - head.len >= n as usize,
                crate::http1::head::Framing::Chunked => b.ends_with(b"0\r\n\r\n"),
                _ => true,
            };
            if done(&buf) {
                return String::from_utf8(buf).unwrap();
            }
        }
        let n = pipe.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
    }
}

#[tokio::test]
async fn requests_go_one_after_another_on_a_pipe_framed_as_they_must_be() {
    let target = server().await;
    let link = Arc::new(Link::default());
    let mut pipe = pipe(&link, &target).await.unwrap();
    // A chunked request body arrives whole, with its length.
    pipe.write_all(
        b"POST /len HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let a = answer(&mut pipe, false).await;
    assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
    assert!(
        a.contains("content-length: 1\r\n") && a.ends_with("\r\n\r\n7"),
        "{a}"
    );
    // No length from the server: chunked on the pipe.
    pipe.write_all(b"GET /chunks HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut pipe, false).await;
    assert!(a.contains("transfer-encoding: chunked\r\n"), "{a}");
    assert!(
        a.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
        "{a}"
    );
    // HEAD keeps the length, sends no body; 204 has neither.
    pipe.write_all(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut pipe, true).await;
    assert!(
        a.contains("content-length: 5\r\n") && a.ends_with("\r\n\r\n"),
        "{a}"
    );
    pipe.write_all(b"DELETE /empty HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut pipe, false).await;
    assert!(a.starts_with("HTTP/1.1 204 No Content\r\n"), "{a}");
    assert!(
        !a.contains("transfer-encoding") && !a.contains("content-length"),
        "{a}"
    );
    // Connection: close: the answer, then the pipe ends.
    pipe.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut pipe, false).await;
    assert!(
        a.contains("connection: close\r\n") && a.ends_with("hello"),
        "{a}"
    );
    let mut rest = Vec::new();
    assert_eq!(pipe.read_to_end(&mut rest).await.unwrap(), 0);
    // One connection carried all of them; a second pipe shares it.
    let mut second = super::pipe(&link, &target).await.unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    assert!(answer(&mut second, false).await.ends_with("hello"));
    assert_eq!(link.made.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn nothing_listening_is_a_refused_connection_and_no_pipe() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let target = Target {
        scheme: Scheme::HTTP,
        authority: Authority::try_from(addr.to_string()).unwrap(),
        tls: crate::tls::backend::BackendTls::shared_default(),
        connect_timeout: Duration::from_secs(5),
    };
    let err = once(&target).await.unwrap_err();
    assert_eq!(err.failure, UpstreamFailure::Refused, "{}", err.detail);
}

#[tokio::test]
async fn a_request_the_h2_crate_refuses_condemns_no_connection() {
    // A connection-specific field is a user error in h2 (Tether strips them
    // before; this is the guard if one slipped through): that request
    // fails, the connection stays for the others.
    let target = server().await;
    let link = Arc::new(Link::default());
    let conn = link.conn(&target).await.unwrap().conn;
    let bad = http::Request::get(format!("http://{}/", target.authority))
        .header("connection", "keep-alive")
        .body(())
        .unwrap();
    let e = match bridge::open(&conn, bad, true).await {
        Err(e) => e,
        Ok(_) => panic!("h2 opened a stream with a connection-specific field"),
    };
    assert!(!bridge::connection_level(&e), "{e}");
    assert!(conn.usable());
    let mut pipe = pipe(&link, &target).await.unwrap();
    pipe.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    assert!(answer(&mut pipe, false).await.starts_with("HTTP/1.1 200"));
    assert_eq!(link.made.load(Ordering::Relaxed), 1);
}
