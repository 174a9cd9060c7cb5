use super::*;
use crate::classify::session_ref;
use crate::pool::{Balance, Pool};
use http::uri::Scheme;
use prometheus_client::metrics::counter::Counter;

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

/// A request's session reference, with the head it points into.
struct Request {
    head: Vec<u8>,
    session: crate::classify::SessionRef,
}

impl Request {
    fn resolve(&self, a: &Affinity, pool: &Pool) -> Result<Owned, Unroutable> {
        a.resolve(
            self.session.token_bytes(&self.head),
            &self.session,
            Principal::Unchecked,
            |id| pool.get(id).cloned(),
        )
    }
}

fn request(uri: &str, session: Option<&str>) -> Option<Request> {
    let field = session.map_or(String::new(), |s| format!("Mcp-Session-Id: {s}\r\n"));
    let head = format!("POST {uri} HTTP/1.1\r\nHost: x\r\n{field}\r\n").into_bytes();
    let parsed = crate::http1::head::RequestHead::parse(&head, 1 << 16)
        .unwrap()
        .unwrap();
    let session = session_ref(&parsed.fields, uri).unwrap()?;
    Some(Request { head, session })
}

fn affinity() -> Affinity {
    Affinity::new(&[SessionKey::generate()])
}

#[test]
fn header_session_goes_to_its_owner_with_the_server_id_restored() {
    let a = affinity();
    let p = pool(&[9001, 9002]);
    let token = a
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9002", "srv-id", None)
        .unwrap();
    let session = request("/mcp", Some(&token)).unwrap();
    let owned = session.resolve(&a, &p).unwrap();
    assert_eq!(&*owned.backend.id, "127.0.0.1:9002");
    assert_eq!(
        a.restore("/mcp", &session.session, &owned),
        Ok(Restored::Header)
    );
    assert_eq!(owned.upstream_id(), "srv-id");
}

#[test]
fn legacy_query_session_is_restored_in_place() {
    let a = affinity();
    let p = pool(&[9001]);
    let token = a
        .sealer()
        .seal(TokenKind::Legacy, "127.0.0.1:9001", "abc-123", None)
        .unwrap();
    let target = format!("/messages/?x=1&session_id={token}&y=2");
    let session = request(&target, None).unwrap();
    let owned = session.resolve(&a, &p).unwrap();
    assert_eq!(
        a.restore(&target, &session.session, &owned),
        Ok(Restored::Target(
            "/messages/?x=1&session_id=abc-123&y=2".into()
        ))
    );
}

#[test]
fn unroutable_references_say_why() {
    let a = affinity();
    let p = pool(&[9001]);
    let streamable = a
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9001", "s", None)
        .unwrap();
    let legacy_session = request(&format!("/m?sessionId={streamable}"), None).unwrap();
    assert_eq!(
        legacy_session.resolve(&a, &p).unwrap_err(),
        Unroutable::WrongTransport
    );
    let gone = a
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9999", "s", None)
        .unwrap();
    let err = request("/mcp", Some(&gone))
        .unwrap()
        .resolve(&a, &p)
        .unwrap_err();
    assert_eq!(err, Unroutable::OwnerGone("127.0.0.1:9999".into()));
    assert_eq!(err.invalid_reason(), None);
    let foreign = affinity()
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9001", "s", None)
        .unwrap();
    let err = request("/mcp", Some(&foreign))
        .unwrap()
        .resolve(&a, &p)
        .unwrap_err();
    assert_eq!(err.invalid_reason(), Some("unknown_key"));
    let raw = request("/mcp", Some("0123456789abcdef")).unwrap();
    assert_eq!(
        raw.resolve(&a, &p).unwrap_err().invalid_reason(),
        Some("format")
    );
}

#[test]
fn response_ids_are_sealed_once_and_kept_for_the_session() {
    let a = affinity();
    let p = pool(&[9001]);
    let backend = p.backends()[0].clone();
    let ResponseId::New(token) = a.seal_response(b"srv-1", &backend, None, (None, None)) else {
        panic!("a new id is sealed")
    };
    assert!(token.starts_with(token::PREFIX));

    // A later response in the same session echoes the server id: the client
    // must get its own token back, byte for byte.
    let session = request("/mcp", Some(&token)).unwrap();
    let owned = session.resolve(&a, &p).unwrap();
    assert_eq!(
        a.seal_response(b"srv-1", &backend, Some(&owned), (None, None)),
        ResponseId::Same
    );

    // A server that changes the id mid-way gets a new token for the new id.
    let ResponseId::New(new) = a.seal_response(b"srv-2", &backend, Some(&owned), (None, None))
    else {
        panic!("a changed id is sealed")
    };
    assert_eq!(a.sealer().open(&new).unwrap().upstream_id(), "srv-2");

    // Ids that are not session ids (empty, not visible ASCII) pass as
    // they are, unsealed; so do ids too long to seal.
    for invalid in [&b""[..], b"\xff", b"a b", b"tab\tid", b"\x7f"] {
        assert_eq!(
            a.seal_response(invalid, &backend, None, (None, None)),
            ResponseId::Invalid,
            "{invalid:?}"
        );
    }
    let long = "x".repeat(100_000);
    assert_eq!(
        a.seal_response(long.as_bytes(), &backend, None, (None, None)),
        ResponseId::Unsealed
    );
}

#[test]
fn restore_refuses_ids_that_cannot_travel() {
    let a = affinity();
    let p = pool(&[9001]);
    for (kind, target, id) in [
        (TokenKind::Streamable, "/mcp", "bad\r\nid"),
        (TokenKind::Legacy, "/m?sessionId=", "a&b"),
        (TokenKind::Legacy, "/m?sessionId=", "a b"),
    ] {
        let token = a.sealer().seal(kind, "127.0.0.1:9001", id, None).unwrap();
        let (target, header) = match kind {
            TokenKind::Legacy => (format!("{target}{token}"), None),
            _ => (target.to_owned(), Some(token.as_str())),
        };
        let session = request(&target, header).unwrap();
        let owned = session.resolve(&a, &p).unwrap();
        assert_eq!(
            a.restore(&target, &session.session, &owned),
            Err(Unroutable::Invalid(TokenError::Malformed)),
            "{id:?}"
        );
    }
}

#[test]
fn opened_tokens_are_remembered_only_for_their_own_sealer() {
    let a = affinity();
    let b = affinity();
    let token = a
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9001", "srv", None)
        .unwrap();
    assert_eq!(a.open(token.as_bytes()).unwrap().upstream_id(), "srv");
    // Remembered now; still only for `a`: another key never opens it.
    assert_eq!(
        a.open(token.as_bytes()).unwrap(),
        a.sealer().open(&token).unwrap()
    );
    assert_eq!(b.open(token.as_bytes()), Err(TokenError::UnknownKey));
    assert_eq!(b.open(token.as_bytes()), Err(TokenError::UnknownKey));
    // A token differing in one byte is opened afresh (and fails).
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(a.open(forged.as_bytes()).is_err());
    // And the original still opens, from memory or not.
    assert_eq!(
        a.open(token.as_bytes()).unwrap().backend(),
        "127.0.0.1:9001"
    );
}

#[test]
fn the_first_key_seals_and_every_key_opens() {
    let (k1, k2) = (SessionKey::generate(), SessionKey::generate());
    let old = Affinity::new(std::slice::from_ref(&k1));
    let t1 = old
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9001", "a", None)
        .unwrap();
    let v1 = crate::affinity::token::tests::seal_v1(
        old.sealer(),
        TokenKind::Streamable,
        "127.0.0.1:9001",
        "v1",
    );
    // Step 1: the new key second; step 2: first. The old tokens open in both.
    for keys in [vec![k1.clone(), k2.clone()], vec![k2.clone(), k1.clone()]] {
        let a = Affinity::new(&keys);
        assert_eq!(a.open(t1.as_bytes()).unwrap().upstream_id(), "a");
        assert_eq!(a.open(v1.as_bytes()).unwrap().upstream_id(), "v1");
        assert_eq!(a.sealer().key_id(), keys[0].id());
    }
    let new = Affinity::new(&[k2.clone(), k1.clone()]);
    let t2 = new
        .sealer()
        .seal(TokenKind::Streamable, "127.0.0.1:9001", "b", None)
        .unwrap();
    // Instances still on step 1 open what the new key sealed.
    let step1 = Affinity::new(&[k1.clone(), k2.clone()]);
    assert_eq!(step1.open(t2.as_bytes()).unwrap().upstream_id(), "b");
    // Step 3: the old key dropped; its tokens are retired.
    let done = Affinity::new(&[k2]);
    assert_eq!(done.open(t1.as_bytes()), Err(TokenError::UnknownKey));
    assert_eq!(done.open(v1.as_bytes()), Err(TokenError::Forged));
    assert_eq!(done.open(t2.as_bytes()).unwrap().upstream_id(), "b");
}

#[test]
fn opens_are_counted_by_the_key_that_opened() {
    let (k1, k2) = (SessionKey::generate(), SessionKey::generate());
    let counters: Vec<(String, Counter)> = [&k1, &k2]
        .iter()
        .map(|k| (k.id_hex(), Counter::default()))
        .collect();
    let a = Affinity::counted(&[k2.clone(), k1.clone()], |k| {
        counters
            .iter()
            .find(|(id, _)| *id == k.id_hex())
            .unwrap()
            .1
            .clone()
    });
    let old = Affinity::new(&[k1])
        .sealer()
        .seal(TokenKind::Streamable, "b:1", "x", None)
        .unwrap();
    for _ in 0..3 {
        a.open(old.as_bytes()).unwrap();
    }
    let new = a
        .sealer()
        .seal(TokenKind::Streamable, "b:1", "y", None)
        .unwrap();
    a.open(new.as_bytes()).unwrap();
    assert_eq!(counters[0].1.get(), 3, "k1: every open, remembered or not");
    assert_eq!(counters[1].1.get(), 1, "k2");
}

#[test]
fn a_bound_session_is_its_callers_only() {
    let (k1, k2) = (SessionKey::generate(), SessionKey::generate());
    let a = Affinity::new(std::slice::from_ref(&k1));
    let p = pool(&[9001]);
    let alice: &[u8] = b"jwt:sub\0\"alice\"\0";
    let ResponseId::New(token) =
        a.seal_response(b"srv", &p.backends()[0], None, (Some(alice), None))
    else {
        panic!("not sealed");
    };
    let r = request("/mcp", Some(&token)).unwrap();
    let resolve = |a: &Affinity, principal: Principal<'_>| {
        a.resolve(
            r.session.token_bytes(&r.head),
            &r.session,
            principal,
            |id| p.get(id).cloned(),
        )
    };
    assert!(resolve(&a, Principal::Given(alice)).is_ok());
    // With binding off, nothing is checked.
    assert!(resolve(&a, Principal::Unchecked).is_ok());
    assert_eq!(
        resolve(&a, Principal::Given(b"jwt:sub\0\"bob\"\0")).unwrap_err(),
        Unroutable::NotTheCaller(Binding::Mismatch)
    );
    assert_eq!(
        resolve(&a, Principal::Absent).unwrap_err(),
        Unroutable::NotTheCaller(Binding::Missing)
    );
    assert_eq!(
        Unroutable::NotTheCaller(Binding::Missing).invalid_reason(),
        None
    );
    // After a rollout the tag is checked under the key that sealed it.
    let rolled = Affinity::new(&[k2, k1]);
    assert!(resolve(&rolled, Principal::Given(alice)).is_ok());
    assert!(resolve(&rolled, Principal::Given(b"x")).is_err());
    // An unbound session takes any caller (begun before binding, or by none).
    let ResponseId::New(open) = a.seal_response(b"srv", &p.backends()[0], None, (None, None))
    else {
        panic!("not sealed");
    };
    let r = request("/mcp", Some(&open)).unwrap();
    let resolved = a.resolve(
        r.session.token_bytes(&r.head),
        &r.session,
        Principal::Given(alice),
        |id| p.get(id).cloned(),
    );
    assert!(resolved.is_ok());
}
