use super::*;
use crate::classify::session_ref;
use crate::pool::Balance;
use http::uri::Scheme;

fn pool(ports: &[u16]) -> Pool {
    let backends = ports
        .iter()
        .map(|p| {
            Arc::new(Backend::new(
                Scheme::HTTP,
                format!("127.0.0.1:{p}").parse().unwrap(),
            ))
        })
        .collect();
    Pool::new(backends, Balance::RoundRobin)
}

fn request(uri: &str, session: Option<&str>) -> Parts {
    let mut b = http::Request::builder().method("POST").uri(uri);
    if let Some(s) = session {
        b = b.header("mcp-session-id", s);
    }
    b.body(()).unwrap().into_parts().0
}

fn affinity() -> Affinity {
    Affinity::new(&SessionKey::generate())
}

#[test]
fn header_session_goes_to_its_owner_with_the_server_id_restored() {
    let a = affinity();
    let p = pool(&[9001, 9002]);
    let token = a
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9002", "srv-id")
        .unwrap();
    let mut parts = request("/mcp", Some(&token));
    let session = session_ref(&parts).unwrap();
    let owned = a.resolve(&session, &p).unwrap();
    assert_eq!(owned.backend.id, "127.0.0.1:9002");
    a.restore(&mut parts, &session, &owned).unwrap();
    assert_eq!(parts.headers["mcp-session-id"], "srv-id");
}

#[test]
fn legacy_query_session_is_restored_in_place() {
    let a = affinity();
    let p = pool(&[9001]);
    let token = a
        .sealer()
        .seal(TokenKind::Legacy, "127.0.0.1:9001", "abc-123")
        .unwrap();
    let mut parts = request(&format!("/messages/?x=1&session_id={token}&y=2"), None);
    let session = session_ref(&parts).unwrap();
    let owned = a.resolve(&session, &p).unwrap();
    a.restore(&mut parts, &session, &owned).unwrap();
    assert_eq!(
        parts.uri.to_string(),
        "/messages/?x=1&session_id=abc-123&y=2"
    );
}

#[test]
fn unroutable_references_say_why() {
    let a = affinity();
    let p = pool(&[9001]);
    let streamable = a
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9001", "s")
        .unwrap();
    let legacy_session =
        session_ref(&request(&format!("/m?sessionId={streamable}"), None)).unwrap();
    assert_eq!(
        a.resolve(&legacy_session, &p).unwrap_err(),
        Unroutable::WrongTransport
    );
    let gone = a
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9999", "s")
        .unwrap();
    let err = a
        .resolve(&session_ref(&request("/mcp", Some(&gone))).unwrap(), &p)
        .unwrap_err();
    assert_eq!(err, Unroutable::OwnerGone("127.0.0.1:9999".into()));
    assert_eq!(err.invalid_reason(), None);
    let foreign = affinity()
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9001", "s")
        .unwrap();
    let err = a
        .resolve(&session_ref(&request("/mcp", Some(&foreign))).unwrap(), &p)
        .unwrap_err();
    assert_eq!(err.invalid_reason(), Some("forged"));
    let raw = session_ref(&request("/mcp", Some("0123456789abcdef"))).unwrap();
    assert_eq!(
        a.resolve(&raw, &p).unwrap_err().invalid_reason(),
        Some("format")
    );
}

#[test]
fn response_ids_are_sealed_once_and_kept_for_the_session() {
    let a = affinity();
    let p = pool(&[9001]);
    let backend = p.backends()[0].clone();
    let mut headers = HeaderMap::new();
    headers.insert("mcp-session-id", HeaderValue::from_static("srv-1"));
    assert!(a.seal_response(&mut headers, &backend, None));
    let token = headers["mcp-session-id"].to_str().unwrap().to_owned();
    assert!(token.starts_with(token::PREFIX));

    // A later response in the same session echoes the server id: the client
    // must get its own token back, byte for byte.
    let session = session_ref(&request("/mcp", Some(&token))).unwrap();
    let owned = a.resolve(&session, &p).unwrap();
    let mut later = HeaderMap::new();
    later.insert("mcp-session-id", HeaderValue::from_static("srv-1"));
    assert!(!a.seal_response(&mut later, &backend, Some(&owned)));
    assert_eq!(later["mcp-session-id"], token.as_str());

    // A server that changes the id mid-way gets a new token for the new id.
    let mut changed = HeaderMap::new();
    changed.insert("mcp-session-id", HeaderValue::from_static("srv-2"));
    assert!(a.seal_response(&mut changed, &backend, Some(&owned)));
    let new = changed["mcp-session-id"].to_str().unwrap();
    assert_eq!(a.sealer().open(new).unwrap().upstream_id, "srv-2");

    let mut none = HeaderMap::new();
    assert!(!a.seal_response(&mut none, &backend, None));
}
