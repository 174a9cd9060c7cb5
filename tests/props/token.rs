//! `affinity::token`: sealed session tokens.
//!
//! - `open` never panics, and never accepts a string that `seal` did not
//!   produce under the same key;
//! - seal/open round-trips any kind, backend id (<= 255 bytes) and upstream
//!   id (<= 512 bytes), and longer ids are not sealed;
//! - any one-character change to a sealed token (including the base64
//!   padding bits of its last character), a deletion or an insertion makes
//!   it fail to open.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mcp_tether::affinity::token::{MAX_BACKEND_ID, MAX_UPSTREAM_ID, PREFIX};
use mcp_tether::affinity::{Sealer, SessionKey, TokenKind};
use proptest::prelude::*;

use crate::config;

fn sealer(key: [u8; 32]) -> Sealer {
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    Sealer::new(&SessionKey::from_base64(&text).unwrap())
}

fn kind() -> impl Strategy<Value = TokenKind> {
    prop_oneof![Just(TokenKind::Streamable), Just(TokenKind::Legacy)]
}

/// A string of at most `max` bytes (cut at a character boundary), any
/// characters, often ASCII.
fn id(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap(),
        1 => any::<String>(),
        1 => Just("x".repeat(max)),
    ]
    .prop_map(move |mut s| {
        while s.len() > max {
            s.pop();
        }
        s
    })
}

/// Strings that look more or less like tokens.
fn candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        3 => "[A-Za-z0-9_-]{0,1200}".prop_map(|b| format!("{PREFIX}{b}")),
        2 => proptest::collection::vec(any::<u8>(), 0..900).prop_map(|raw| format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))),
        1 => "t1\\.[ -~]{0,80}",
    ]
}

proptest! {
    #![proptest_config(config(1))]

    /// Nothing but `seal` under the same key makes a token that opens.
    #[test]
    fn only_sealed_tokens_open(key in any::<[u8; 32]>(), s in candidate()) {
        prop_assert!(sealer(key).open(&s).is_err(), "opened {:?}", s);
    }

    /// A token sealed under another key does not open.
    #[test]
    fn other_keys_do_not_open(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), kind in kind(), backend in id(MAX_BACKEND_ID), upstream in id(MAX_UPSTREAM_ID)) {
        prop_assume!(a != b);
        let token = sealer(a).seal(kind, &backend, &upstream, None).unwrap();
        prop_assert!(sealer(b).open(&token).is_err());
    }

    /// What is sealed opens to the same kind, backend and upstream id, and
    /// the token is visible ASCII from the URL-safe alphabet.
    #[test]
    fn seal_then_open_round_trips(key in any::<[u8; 32]>(), kind in kind(), backend in id(MAX_BACKEND_ID), upstream in id(MAX_UPSTREAM_ID), bound in any::<Option<[u8; 16]>>()) {
        let s = sealer(key);
        let token = s.seal(kind, &backend, &upstream, bound.as_ref()).unwrap();
        prop_assert!(token.starts_with(PREFIX));
        prop_assert!(token[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let opened = s.open(&token).unwrap();
        prop_assert_eq!(opened.kind, kind);
        prop_assert_eq!(opened.backend(), backend);
        prop_assert_eq!(opened.upstream_id(), upstream);
        prop_assert_eq!(opened.principal(), bound.as_ref().map(|b| &b[..]));
    }

    /// Plaintexts around every length where the representation may change
    /// (kept inline up to 126 bytes, on the heap past it) and at the limits,
    /// bound to a principal or not.
    #[test]
    fn round_trips_at_length_edges(
        key in any::<[u8; 32]>(),
        kind in kind(),
        backend_len in prop_oneof![0..=40usize, Just(MAX_BACKEND_ID)],
        plain_len in prop_oneof![118..=134usize, 250..=260usize, Just(19 + MAX_BACKEND_ID + MAX_UPSTREAM_ID)],
        c in "[a-z0-9]",
        bound in any::<bool>(),
    ) {
        let head = if bound { 19 } else { 3 };
        let upstream_len = plain_len.saturating_sub(head + backend_len).min(MAX_UPSTREAM_ID);
        let (backend, upstream) = (c.repeat(backend_len), c.repeat(upstream_len));
        let s = sealer(key);
        let tag = bound.then_some([7u8; 16]);
        let opened = s.open(&s.seal(kind, &backend, &upstream, tag.as_ref()).unwrap()).unwrap();
        prop_assert_eq!((opened.kind, opened.backend(), opened.upstream_id()), (kind, backend.as_str(), upstream.as_str()));
    }

    /// Ids over the limits are not sealed.
    #[test]
    fn oversized_ids_are_not_sealed(key in any::<[u8; 32]>(), extra in 1..64usize, which in any::<bool>()) {
        let s = sealer(key);
        let (backend, upstream) = if which {
            ("b".repeat(MAX_BACKEND_ID + extra), String::new())
        } else {
            (String::new(), "u".repeat(MAX_UPSTREAM_ID + extra))
        };
        prop_assert!(s.seal(TokenKind::Streamable, &backend, &upstream, None).is_none());
    }

    /// Every other alphabet character in the last place (whose low bits
    /// are padding in base64) and in the first: no longer opens.
    #[test]
    fn every_last_character_variant_fails(key in any::<[u8; 32]>(), kind in kind(), backend in id(64), upstream in id(64)) {
        let s = sealer(key);
        let token = s.seal(kind, &backend, &upstream, None).unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for at in [PREFIX.len(), token.len() - 1] {
            for &c in alphabet {
                let mut edited = token.clone().into_bytes();
                if edited[at] == c {
                    continue;
                }
                edited[at] = c;
                let edited = String::from_utf8(edited).unwrap();
                prop_assert!(s.open(&edited).is_err(), "{:?} opened", edited);
            }
        }
    }

    /// One character changed, removed or added anywhere: no longer opens.
    #[test]
    fn any_edit_breaks_a_token(
        key in any::<[u8; 32]>(),
        kind in kind(),
        backend in id(64),
        upstream in id(64),
        at in any::<prop::sample::Index>(),
        with in prop_oneof![4 => "[A-Za-z0-9_-]", 1 => any::<char>().prop_map(String::from)],
        edit in 0..3u8,
    ) {
        let s = sealer(key);
        let token = s.seal(kind, &backend, &upstream, None).unwrap();
        let mut chars: Vec<char> = token.chars().collect();
        let with = with.chars().next().unwrap();
        match edit {
            0 => {
                let i = at.index(chars.len());
                prop_assume!(chars[i] != with);
                chars[i] = with;
            }
            1 => {
                chars.remove(at.index(chars.len()));
            }
            _ => chars.insert(at.index(chars.len() + 1), with),
        }
        let edited: String = chars.into_iter().collect();
        prop_assert!(s.open(&edited).is_err(), "{:?} opened", edited);
    }
}
