//! `classify::query`: the legacy session parameter, against models of how
//! the servers behind Tether read a query string.
//!
//! Servers (each looks for `sessionId` and for `session_id`):
//! - Python, Starlette: `urllib.parse.parse_qsl(q, keep_blank_values=True)`,
//!   split on `&`, each part at its first `=`, `+` is a space, then
//!   percent-decoding that leaves an invalid escape as it is; the last
//!   occurrence of a name wins;
//! - Python before 3.9.2: the same, also split on `;`;
//! - Node `querystring.parse`: split on `&`, `+` and percent-decoding as
//!   above; a repeated name becomes an array (not a string);
//! - Express's extended parser, `qs` (6.17, checked against the package):
//!   `%5B`/`%5D` become brackets first; a part is split at `]=` if it has
//!   one, else at its first `=`; key and value are decoded by
//!   `decodeURIComponent` after `+` -> space, or left as they are when that
//!   throws; `name[]`, `name[0]` make arrays, `name[x]` objects, and
//!   `[name]` is `name`; repeated keys combine into arrays. A one-element
//!   array, used as a JavaScript property key, is its element.
//!
//! Invariant: when `legacy_param` finds one parameter, every server that
//! sees a session id sees exactly its form-decoded value (and the name
//! there decodes to a session name); when it finds none, no server sees
//! one. `Err(Ambiguous)` is always allowed.

use std::ops::Range;

use mcp_tether::classify::query::{legacy_param, Ambiguous};
use mcp_tether::classify::{form_decode, LEGACY_PARAMS};
use proptest::prelude::*;
use proptest::sample::select;

use crate::{config, Raw};

const NAMES: [&str; 2] = ["sessionId", "session_id"];

/// What a server reads for one parameter name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum View {
    Absent,
    Str(String),
    /// An array or object: not one string, yet still something a server
    /// may act on.
    Other(String),
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `+` is a space, `%XX` a byte, any other `%` stays: urllib's `unquote`
/// after `replace('+', ' ')`, and Node's `unescapeBuffer`.
fn lenient_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// JavaScript's `decodeURIComponent`: `None` where it throws (a `%` without
/// two hex digits, or escapes that are not UTF-8).
fn decode_uri_component(s: &str) -> Option<String> {
    let raw = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let h = raw.get(i + 1).copied().and_then(hex)?;
            let l = raw.get(i + 2).copied().and_then(hex)?;
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `parse_qsl(q, keep_blank_values=True)` then the last value of `name`.
fn python(q: &str, name: &str, also_semicolon: bool) -> View {
    let mut found = View::Absent;
    let parts = q.split(|c| c == '&' || (also_semicolon && c == ';'));
    for part in parts.filter(|p| !p.is_empty()) {
        let (n, v) = part.split_once('=').unwrap_or((part, ""));
        if lossy(&lenient_decode(n.as_bytes())) == name {
            found = View::Str(lossy(&lenient_decode(v.as_bytes())));
        }
    }
    found
}

/// Node's `querystring.parse(q)[name]`.
fn node(q: &str, name: &str) -> View {
    let values: Vec<String> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|part| {
            let (n, v) = part.split_once('=').unwrap_or((part, ""));
            (lossy(&lenient_decode(n.as_bytes())) == name)
                .then(|| lossy(&lenient_decode(v.as_bytes())))
        })
        .collect();
    match &values[..] {
        [] => View::Absent,
        [one] => View::Str(one.clone()),
        many => View::Other(format!("{many:?}")),
    }
}

/// `qs`'s decoder.
fn qs_decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    decode_uri_component(&plus).unwrap_or(plus)
}

/// A JavaScript value as `qs` builds them.
#[derive(Debug, Clone, PartialEq)]
enum Js {
    Str(String),
    True,
    /// Sparse: `None` is a hole.
    Array(Vec<Option<Js>>),
    Object(Vec<(String, Js)>),
}

impl Js {
    fn is_object(&self) -> bool {
        matches!(self, Js::Array(_) | Js::Object(_))
    }

    fn elements(&self) -> Vec<(String, Js)> {
        match self {
            Js::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.clone().map(|v| (i.to_string(), v)))
                .collect(),
            Js::Object(fields) => fields.clone(),
            _ => vec![],
        }
    }

    fn set(fields: &mut Vec<(String, Js)>, key: String, value: Js) {
        match fields.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => fields.push((key, value)),
        }
    }

    /// `[].concat(self)`: an array's elements, or the value itself.
    fn concat_items(self) -> Vec<Option<Js>> {
        match self {
            Js::Array(items) => items,
            other => vec![Some(other)],
        }
    }
}

/// `utils.merge(target, source)` (arrays stay under `arrayLimit` here).
fn qs_merge(target: Js, source: Js) -> Js {
    match (target, source) {
        (target, Js::Str(s)) if s.is_empty() => target,
        (Js::Array(mut items), Js::Str(s)) => {
            items.push(Some(Js::Str(s)));
            Js::Array(items)
        }
        (Js::Object(mut fields), Js::Str(s)) => {
            Js::set(&mut fields, s, Js::True);
            Js::Object(fields)
        }
        (target @ (Js::Str(_) | Js::True), source @ (Js::Str(_) | Js::True)) => {
            Js::Array(vec![Some(target), Some(source)])
        }
        (target @ (Js::Str(_) | Js::True), source) => {
            let mut items = vec![Some(target)];
            items.extend(source.concat_items());
            Js::Array(items)
        }
        (Js::Array(mut items), Js::Array(source)) => {
            for (i, item) in source.into_iter().enumerate() {
                let Some(item) = item else { continue };
                match items.get(i).cloned().flatten() {
                    Some(t) if t.is_object() && item.is_object() => {
                        items[i] = Some(qs_merge(t, item))
                    }
                    Some(_) => items.push(Some(item)),
                    None => {
                        if items.len() <= i {
                            items.resize(i + 1, None);
                        }
                        items[i] = Some(item);
                    }
                }
            }
            Js::Array(items)
        }
        (target, source) => {
            let mut fields = target.elements();
            for (key, value) in source.elements() {
                match fields.iter().position(|(k, _)| *k == key) {
                    Some(i) => fields[i].1 = qs_merge(fields[i].1.clone(), value),
                    None => fields.push((key, value)),
                }
            }
            Js::Object(fields)
        }
    }
}

/// A key's segments as `qs` 6.17 splits them (`splitKeyIntoSegments`, depth 5).
fn qs_segments(key: &str) -> Vec<String> {
    let Some(first) = key.find('[') else {
        return vec![key.to_owned()];
    };
    let mut segments = Vec::new();
    if first > 0 {
        segments.push(key[..first].to_owned());
    }
    let mut open = Some(first);
    let mut collected = 0;
    while let Some(o) = open {
        if collected == 5 {
            break;
        }
        let mut level = 0;
        let mut close = None;
        for (i, c) in key[o..].char_indices() {
            match c {
                '[' => level += 1,
                ']' => {
                    level -= 1;
                    if level == 0 {
                        close = Some(o + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else {
            segments.push(format!("[{}]", &key[o..]));
            return segments;
        };
        segments.push(key[o..=close].to_owned());
        collected += 1;
        open = key[close + 1..].find('[').map(|i| close + 1 + i);
    }
    if let Some(o) = open {
        segments.push(format!("[{}]", &key[o..]));
    }
    segments
}

fn strip_brackets(root: &str) -> &str {
    root.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(root)
}

/// `parseObject(chain, leaf)`.
fn qs_object(chain: &[String], leaf: Js) -> Js {
    let mut leaf = leaf;
    for root in chain.iter().rev() {
        leaf = if root == "[]" {
            Js::Array(leaf.concat_items())
        } else {
            let clean = strip_brackets(root);
            let index = clean
                .parse::<usize>()
                .ok()
                .filter(|i| root != clean && i.to_string() == clean);
            match index {
                Some(i) if i < 20 => {
                    let mut items = vec![None; i];
                    items.push(Some(leaf));
                    Js::Array(items)
                }
                _ if clean == "__proto__" => Js::Object(vec![]),
                _ => Js::Object(vec![(clean.to_owned(), leaf)]),
            }
        };
    }
    leaf
}

/// What a JavaScript server uses as a property key for `value`, where that
/// is one string: a string, or an array of one element that is one.
fn js_key(value: &Js) -> Option<String> {
    match value {
        Js::Str(s) => Some(s.clone()),
        Js::Array(items) => match &items.iter().flatten().collect::<Vec<_>>()[..] {
            [one] => js_key(one),
            _ => None,
        },
        _ => None,
    }
}

/// `qs.parse(q)[name]` as Express's extended parser has it.
fn qs(q: &str, name: &str) -> View {
    let clean = q
        .replace("%5B", "[")
        .replace("%5b", "[")
        .replace("%5D", "]")
        .replace("%5d", "]");
    // `parseValues`: keys in order, repeated ones combined into arrays.
    let mut temp: Vec<(String, Js)> = Vec::new();
    for part in clean.split('&') {
        let pos = match part.find("]=") {
            Some(i) => Some(i + 1),
            None => part.find('='),
        };
        let (key, value) = match pos {
            None => (qs_decode(part), String::new()),
            Some(p) => (qs_decode(&part[..p]), qs_decode(&part[p + 1..])),
        };
        match temp.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                let mut items = std::mem::replace(v, Js::True).concat_items();
                items.push(Some(Js::Str(value)));
                *v = Js::Array(items);
            }
            None => temp.push((key, Js::Str(value))),
        }
    }
    // `parseKeys` then `merge`, for the keys whose top level is `name`.
    let mut found: Option<Js> = None;
    for (key, value) in temp {
        if key.is_empty() {
            continue;
        }
        let segments = qs_segments(&key);
        let top = qs_object(&segments[..1], Js::True);
        let Js::Object(fields) = top else { continue };
        if fields.first().map(|(k, _)| k.as_str()) != Some(name) {
            continue;
        }
        let below = qs_object(&segments[1..], value);
        found = Some(match found {
            None => below,
            Some(target) => qs_merge(target, below),
        });
    }
    match found {
        None => View::Absent,
        Some(v) => match js_key(&v) {
            Some(s) => View::Str(s),
            None => View::Other(format!("{v:?}")),
        },
    }
}

/// Every modelled server's view of every session name.
fn servers(q: &str) -> Vec<(&'static str, &'static str, View)> {
    let mut out = Vec::new();
    for name in NAMES {
        out.push(("python", name, python(q, name, false)));
        out.push(("old python", name, python(q, name, true)));
        out.push(("node querystring", name, node(q, name)));
        out.push(("express qs", name, qs(q, name)));
    }
    out
}

/// A token's alphabet: a value outside it can never open as one.
fn token_alphabet(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn check(q: &str) -> Result<(), TestCaseError> {
    let found: Result<Option<Range<usize>>, Ambiguous> = legacy_param(q);
    let views = servers(q);
    match found {
        Err(Ambiguous) => {}
        Ok(None) => {
            for (server, name, view) in &views {
                prop_assert_eq!(
                    view,
                    &View::Absent,
                    "{} reads {} from {:?}, Tether sees none",
                    server,
                    name,
                    q
                );
            }
        }
        Ok(Some(range)) => {
            prop_assert!(
                range.start >= 1
                    && range.end <= q.len()
                    && q.is_char_boundary(range.start)
                    && q.is_char_boundary(range.end)
            );
            prop_assert_eq!(&q[range.start - 1..range.start], "=");
            prop_assert!(
                range.end == q.len() || q[range.end..].starts_with('&'),
                "value {:?} does not end its pair in {:?}",
                range,
                q
            );
            let pair_start = q[..range.start].rfind('&').map_or(0, |i| i + 1);
            let name = &q[pair_start..range.start - 1];
            prop_assert!(!name.contains('='));
            let decoded = form_decode(name.as_bytes());
            prop_assert!(
                LEGACY_PARAMS.contains(&&decoded[..]),
                "name {:?} in {:?}",
                name,
                q
            );
            let raw = &q[range.clone()];
            let value = lossy(&lenient_decode(raw.as_bytes()));
            for (server, n, view) in &views {
                match view {
                    View::Absent => {}
                    View::Str(v) if *v == value => {}
                    // qs leaves a value undecoded when decodeURIComponent
                    // throws; the form-decoded value then holds a `%` or a
                    // byte >= 0x80, so it can never open as a token and
                    // Tether refuses the request: no raw id gets through.
                    View::Str(v)
                        if *server == "express qs"
                            && *v == raw.replace('+', " ")
                            && !token_alphabet(&value) => {}
                    _ => prop_assert!(
                        false,
                        "{} reads {} = {:?} from {:?}, Tether the value {:?}",
                        server,
                        n,
                        view,
                        q,
                        value
                    ),
                }
            }
            // The server that uses this name finds it.
            let reader = if decoded == b"session_id" {
                python(q, "session_id", false)
            } else {
                node(q, "sessionId")
            };
            prop_assert_eq!(reader, View::Str(value));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generated queries
// ---------------------------------------------------------------------------

/// A parameter name: a base, each character maybe percent-encoded, maybe
/// wrapped in brackets, maybe with a suffix.
fn name() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            6 => select(&NAMES[..]),
            2 => select(&["sessionid", "SessionId", "session", "sessionId_", "xsessionId", "SESSION_ID", "session id"][..]),
            2 => select(&["a", "x", "foo", "", "redirect_uri"][..]),
        ],
        proptest::collection::vec((prop::bool::weighted(0.15), any::<bool>()), 12),
        prop_oneof![12 => Just(None), 1 => Just(Some(("[", "]"))), 1 => Just(Some(("%5B", "%5D"))), 1 => Just(Some(("%5b", "]")))],
        prop_oneof![
            10 => Just(""),
            4 => select(&["[]", "[0]", "[1]", "[25]", "[x]", "[", "]", "%5B%5D", "%5B0%5D", "[]]", "[a=b]", ".x", "%00", "+", "%20", "[][]", "[[0]"][..]),
        ],
    )
        .prop_map(|(base, encode, wrap, suffix)| {
            let mut out = String::new();
            if let Some((open, _)) = wrap {
                out.push_str(open);
            }
            for (c, (enc, upper)) in base.chars().zip(encode.iter().cycle()) {
                if *enc {
                    out.push_str(&if *upper { format!("%{:02X}", c as u32) } else { format!("%{:02x}", c as u32) });
                } else {
                    out.push(c);
                }
            }
            if let Some((_, close)) = wrap {
                out.push_str(close);
            }
            out.push_str(suffix);
            out
        })
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(&[
            "", "t1.AbC-_9", "3f2a-uuid", "RAW", "a+b", "%41", "%zz", "%E9", "%C3%A9", "%", "x=y", "]=z",
            "a;b", "a;sessionId=RAW", "a;session_id=RAW", "[x]", "t1%2Eabc", "%2B", "%26sessionId%3DRAW",
        ][..]).prop_map(str::to_owned),
        2 => "[A-Za-z0-9._~%+=;\\[\\]-]{0,12}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            name(),
            proptest::option::weighted(0.9, value()),
            prop_oneof![12 => Just("&"), 3 => Just(";"), 1 => Just("&&")],
        ),
        1..6,
    )
    .prop_map(|pairs| {
        let mut q = String::new();
        for (i, (name, value, sep)) in pairs.into_iter().enumerate() {
            if i > 0 {
                q.push_str(sep);
            }
            q.push_str(&name);
            if let Some(v) = value {
                q.push('=');
                q.push_str(&v);
            }
        }
        q
    })
}

proptest! {
    #![proptest_config(config(1))]

    /// Tether's reading of the session parameter is every server's.
    #[test]
    fn session_param_is_what_servers_read(q in query()) {
        check(&q)?;
    }

    /// The same for arbitrary strings over the characters that matter.
    #[test]
    fn session_param_of_arbitrary_queries(q in "[sessionId_%5BDF37+=&;\\[\\]0-9a-f]{0,40}") {
        check(&q)?;
    }

    /// `form_decode` is the servers' lenient decoding.
    #[test]
    fn form_decode_is_the_reference_decoding(raw in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Raw),
        "[%+0-9a-fA-Fgz]{0,40}".prop_map(|s| Raw(s.into_bytes())),
        query().prop_map(|s| Raw(s.into_bytes())),
    ]) {
        prop_assert_eq!(Raw(form_decode(&raw)), Raw(lenient_decode(&raw)));
    }
}

/// The models against the servers' documented behaviour (checked by hand
/// with Python 3.11 and qs 6.17.1 on Node 20).
#[test]
fn models_match_known_readings() {
    let s = |v: &str| View::Str(v.to_owned());
    assert_eq!(
        python("a=1&session_id=x&session_id=y", "session_id", false),
        s("y")
    );
    assert_eq!(python("session_id", "session_id", false), s(""));
    assert_eq!(
        python("x=1;session_id=RAW", "session_id", false),
        View::Absent
    );
    assert_eq!(python("x=1;session_id=RAW", "session_id", true), s("RAW"));
    assert_eq!(
        python("session%5Fid=a+b%zz%41", "session_id", false),
        s("a b%zzA")
    );
    assert_eq!(node("sessionI%64=t1.x", "sessionId"), s("t1.x"));
    assert!(matches!(
        node("sessionId=a&sessionId=b", "sessionId"),
        View::Other(_)
    ));
    assert_eq!(node("sessionId[]=x", "sessionId"), View::Absent);
    assert_eq!(qs("[sessionId]=RAW", "sessionId"), s("RAW"));
    assert_eq!(qs("%5BsessionId%5D=RAW", "sessionId"), s("RAW"));
    assert_eq!(qs("sessionId[]=x", "sessionId"), s("x"));
    assert_eq!(qs("sessionId[0]=x", "sessionId"), s("x"));
    assert!(matches!(qs("sessionId[25]=x", "sessionId"), View::Other(_)));
    assert!(matches!(
        qs("sessionId=a&sessionId=b", "sessionId"),
        View::Other(_)
    ));
    assert_eq!(qs("sessionId=x]=y", "sessionId"), View::Absent);
    assert!(matches!(qs("sessionId[=]=x", "sessionId"), View::Other(_)));
    assert_eq!(qs("sessionId=a%zz%41", "sessionId"), s("a%zz%41"));
    assert_eq!(qs("[sessionId][]=x", "sessionId"), s("x"));
    assert_eq!(qs("sessionId", "sessionId"), s(""));
    assert_eq!(qs("a[sessionId]=1", "sessionId"), View::Absent);
    assert!(matches!(qs("sessionId%5B=1", "sessionId"), View::Other(_)));
}
