use super::*;

fn parse(raw: &[u8]) -> RequestHead {
    RequestHead::parse(raw, 64 << 10).unwrap().unwrap()
}

fn translated(raw: &[u8], body: &'static [u8]) -> Request {
    let head = parse(raw);
    let authority = Authority::from_static("backend:8443");
    request(
        raw,
        &head,
        Bytes::from_static(body),
        &Scheme::HTTPS,
        &authority,
    )
    .unwrap()
}

fn written(response: http::Response<()>, head_request: bool) -> (String, Body) {
    let (parts, ()) = response.into_parts();
    let mut out = Vec::new();
    let body = response_head(&parts, head_request, false, &mut out);
    (String::from_utf8(out).unwrap(), body)
}

#[test]
fn hop_by_hop_fields_go_and_host_becomes_the_authority() {
    let raw = b"POST /mcp?x=1 HTTP/1.1\r\nHost: lb.example\r\nConnection: keep-alive, X-Hop\r\n\
        X-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: websocket\r\n\
        TE: gzip, trailers\r\nExpect: 100-continue\r\nMcp-Session-Id: abc\r\n\
        Content-Length: 2\r\n\r\n{}";
    let r = translated(raw, b"{}");
    let uri = r.head.uri();
    assert_eq!(uri.scheme_str(), Some("https"));
    assert_eq!(uri.authority().map(|a| a.as_str()), Some("lb.example"));
    assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some("/mcp?x=1"));
    let h = r.head.headers();
    for gone in [
        "host",
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "expect",
        "transfer-encoding",
    ] {
        assert!(!h.contains_key(gone), "{gone} must not cross");
    }
    assert_eq!(h.get("te").unwrap(), "trailers");
    assert_eq!(h.get("mcp-session-id").unwrap(), "abc");
    assert_eq!(h.get("content-length").unwrap(), "2");
    assert!(!r.close && !r.head_request);
}

#[test]
fn te_without_trailers_goes_and_close_is_noted() {
    let raw = b"GET /mcp HTTP/1.1\r\nHost: h\r\nTE: gzip\r\nConnection: close\r\n\r\n";
    let r = translated(raw, b"");
    assert!(!r.head.headers().contains_key("te"));
    assert!(!r.head.headers().contains_key("content-length"));
    assert!(r.close);
}

#[test]
fn a_chunked_body_is_sent_with_its_length_and_no_host_takes_the_backend() {
    let raw = b"POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\n";
    let r = translated(raw, b"hello");
    assert_eq!(r.head.uri().authority().unwrap().as_str(), "backend:8443");
    assert_eq!(r.head.headers().get("content-length").unwrap(), "5");
    // HTTP/1.0 without keep-alive: the pipe ends after the answer.
    assert!(r.close);
    let raw = b"POST /m HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let r = translated(raw, b"abc");
    assert_eq!(r.head.headers().get("content-length").unwrap(), "3");
    assert!(!r.head.headers().contains_key("transfer-encoding"));
}

#[test]
fn connect_is_refused() {
    let raw = b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n";
    let Ok(Some(head)) = RequestHead::parse(raw, 1 << 16) else {
        return; // the parser refuses it first: as good
    };
    let a = Authority::from_static("b:1");
    assert!(request(raw, &head, Bytes::new(), &Scheme::HTTP, &a).is_err());
}

#[test]
fn a_length_from_the_server_frames_the_body_else_chunks() {
    let r = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", "7")
        .body(())
        .unwrap();
    let (text, body) = written(r, false);
    assert_eq!(body, Body::Length(7));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-length: 7\r\n"));
    assert!(!text.contains("transfer-encoding"));
    assert!(text.ends_with("\r\n\r\n"));

    let r = http::Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(())
        .unwrap();
    let (text, body) = written(r, false);
    assert_eq!(body, Body::Chunked);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");

    // Two different lengths: not a framing to trust; chunks instead.
    let r = http::Response::builder()
        .status(200)
        .header("content-length", "7")
        .header("content-length", "8")
        .body(())
        .unwrap();
    let (text, body) = written(r, false);
    assert_eq!(body, Body::Chunked);
    assert!(!text.contains("content-length"), "{text}");
}

#[test]
fn head_204_and_304_answers_have_no_body() {
    let with_length = |status: u16| {
        http::Response::builder()
            .status(status)
            .header("content-length", "42")
            .body(())
            .unwrap()
    };
    let (text, body) = written(with_length(200), true);
    assert_eq!(body, Body::None);
    assert!(
        text.contains("content-length: 42\r\n"),
        "HEAD keeps it: {text}"
    );
    let (text, body) = written(with_length(204), false);
    assert_eq!(body, Body::None);
    assert!(!text.contains("content-length"), "{text}");
    assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
    let (text, body) = written(with_length(304), false);
    assert_eq!(body, Body::None);
    assert!(!text.contains("transfer-encoding"), "{text}");
    let bare = http::Response::builder().status(204).body(()).unwrap();
    let (text, _) = written(bare, false);
    assert!(!text.contains("transfer-encoding"), "{text}");
}

#[test]
fn connection_specific_answer_fields_go_and_close_is_said() {
    let mut r = http::Response::builder()
        .status(200)
        .header("content-length", "0")
        .body(())
        .unwrap();
    // h2 refuses these on the wire; a bridge still must not pass them.
    for name in ["connection", "keep-alive", "upgrade", "transfer-encoding"] {
        r.headers_mut()
            .insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
    }
    let (parts, ()) = r.into_parts();
    let mut out = Vec::new();
    let body = response_head(&parts, false, true, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(body, Body::Length(0));
    assert!(!text.contains(": x\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
}
