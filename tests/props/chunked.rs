//! `http1::chunked`: the incremental chunked decoder against a reference
//! decoder written from RFC 9112 §7.1, fed in random pieces.
//!
//! The reference reads the whole input at once:
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ BWS ";" ext ] CRLF chunk-data CRLF
//! last-chunk   = 1*("0") [ BWS ";" ext ] CRLF
//! chunk-size   = 1*HEXDIG            ; fits in 64 bits
//! ext          = *( any byte but CR and LF )
//! trailer-section = *( field-line CRLF )
//! field-line   = token ":" *( VCHAR / obs-text / SP / HTAB )
//! ```
//!
//! with CRLF everywhere (no bare LF or CR), and the decoder's documented
//! limits: a size line of at most 4096 bytes before its CRLF, at most 16 KiB
//! of trailer field lines (CRLFs included) and at most 128 trailer fields.

use mcp_tether::http1::chunked::{encode_chunk, ChunkedDecoder, ChunkedError, LAST_CHUNK};
use proptest::prelude::*;
use proptest::sample::select;

use crate::{config, mutations, pieces, show, Raw, LINE_END_EDITS};

const MAX_SIZE_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_TRAILER_FIELDS: usize = 128;

/// What the reference makes of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    /// A whole body of `consumed` bytes (what follows is not the body's).
    Complete { consumed: usize, payload: Raw },
    /// Valid so far; the payload of the chunks seen so far.
    Incomplete { payload: Raw },
    /// No continuation can make this a valid body.
    Invalid(&'static str),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_field_vchar(b: u8) -> bool {
    b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// The reference decoder.
fn reference(input: &[u8]) -> Reference {
    let mut payload = Vec::new();
    let mut p = 0;
    // `need!()`: the input ended where more was due.
    macro_rules! need {
        () => {
            return Reference::Incomplete {
                payload: Raw(payload),
            }
        };
    }
    macro_rules! invalid {
        ($why:expr) => {
            return Reference::Invalid($why)
        };
    }
    // `crlf!(at)`: a CRLF at `at`, or the input ends inside it.
    macro_rules! crlf {
        ($at:expr) => {{
            let at = $at;
            match (input.get(at), input.get(at + 1)) {
                (None, _) => need!(),
                (Some(b'\r'), None) => need!(),
                (Some(b'\r'), Some(b'\n')) => at + 2,
                _ => invalid!("not CRLF"),
            }
        }};
    }
    loop {
        // The chunk-size line, up to its CR (or the end of the input).
        let start = p;
        let line_end = input[start..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map_or(input.len(), |i| start + i);
        let line = &input[start..line_end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let mut size: u64 = 0;
        for &d in &line[..digits] {
            let v = (d as char).to_digit(16).unwrap() as u64;
            match size.checked_mul(16).and_then(|s| s.checked_add(v)) {
                Some(s) => size = s,
                None => invalid!("chunk size overflows"),
            }
        }
        if line.len() > MAX_SIZE_LINE {
            invalid!("size line too long");
        }
        if digits == 0 && !line.is_empty() {
            invalid!("no digits");
        }
        let rest = &line[digits..];
        let ws = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let after_ws = &rest[ws..];
        match after_ws.first() {
            Some(b';') => {}
            Some(_) => invalid!("not a chunk size"),
            None if line_end == input.len() => need!(), // more digits, BWS or `;` may come
            None if ws > 0 => invalid!("whitespace without an extension"),
            None => {}
        }
        if digits == 0 {
            invalid!("no digits");
        }
        p = crlf!(line_end);
        if size == 0 {
            break;
        }
        let data_end = p.saturating_add(size as usize);
        if data_end > input.len() || data_end < p {
            payload.extend_from_slice(&input[p..]);
            need!();
        }
        payload.extend_from_slice(&input[p..data_end]);
        p = crlf!(data_end);
    }
    // The trailer section, then the final CRLF.
    let mut used = 0;
    let mut fields = 0;
    loop {
        match input.get(p) {
            None => need!(),
            Some(b'\r') => {
                let end = crlf!(p);
                return Reference::Complete {
                    consumed: end,
                    payload: Raw(payload),
                };
            }
            Some(_) => {}
        }
        if fields == MAX_TRAILER_FIELDS {
            invalid!("too many trailer fields");
        }
        fields += 1;
        let line_end = input[p..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map_or(input.len(), |i| p + i);
        let line = &input[p..line_end];
        let name = line.iter().take_while(|&&b| is_tchar(b)).count();
        if used + line.len() > MAX_TRAILERS {
            invalid!("trailers too large");
        }
        match line.get(name) {
            _ if name == 0 && !line.is_empty() => invalid!("empty field name"),
            None if line_end == input.len() => need!(),
            None => invalid!("field line without a colon"),
            Some(b':') => {}
            Some(_) => invalid!("not a field name"),
        }
        if !line[name + 1..].iter().all(|&b| is_field_vchar(b)) {
            invalid!("bad byte in a field value");
        }
        // The CRLF counts too, byte by byte.
        match (input.get(line_end), input.get(line_end + 1)) {
            (None, _) => need!(),
            (Some(b'\r'), _) if used + line.len() + 1 > MAX_TRAILERS => {
                invalid!("trailers too large")
            }
            (Some(b'\r'), None) => need!(),
            (Some(b'\r'), Some(b'\n')) if used + line.len() + 2 > MAX_TRAILERS => {
                invalid!("trailers too large")
            }
            (Some(b'\r'), Some(b'\n')) => {}
            _ => invalid!("not CRLF"),
        }
        used += line.len() + 2;
        p = line_end + 2;
    }
}

/// What the decoder made of `input` fed as `pieces`, checking on the way
/// that it consumes whole pieces until it is done, then nothing.
fn decode(input: &[u8], pattern: &[usize]) -> Result<Reference, TestCaseError> {
    let mut decoder = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let mut consumed = 0;
    for piece in pieces(input, pattern) {
        let was_done = decoder.is_done();
        let n = match decoder.decode(piece, &mut |d: &[u8]| {
            assert!(!d.is_empty(), "empty payload slice");
            payload.extend_from_slice(d);
        }) {
            Ok(n) => n,
            Err(e) => return Ok(Reference::Invalid(error_name(e))),
        };
        if was_done {
            prop_assert_eq!(n, 0, "consumed after done");
        }
        prop_assert!(n <= piece.len());
        prop_assert!(
            n == piece.len() || decoder.is_done(),
            "stopped early without finishing"
        );
        consumed += n;
    }
    Ok(if decoder.is_done() {
        Reference::Complete {
            consumed,
            payload: Raw(payload),
        }
    } else {
        prop_assert_eq!(consumed, input.len());
        Reference::Incomplete {
            payload: Raw(payload),
        }
    })
}

fn error_name(e: ChunkedError) -> &'static str {
    match e {
        ChunkedError::BadSize => "BadSize",
        ChunkedError::BadFraming => "BadFraming",
        ChunkedError::TrailersTooLarge => "TrailersTooLarge",
        ChunkedError::BadTrailer => "BadTrailer",
    }
}

/// The decoder and the reference agree: the same payload and length for a
/// complete body, the same payload so far for an incomplete one, an error
/// exactly where the reference finds the input invalid.
fn agree(input: &[u8], pattern: &[usize]) -> Result<(), TestCaseError> {
    let want = reference(input);
    let got = decode(input, pattern)?;
    match (&want, &got) {
        (Reference::Invalid(_), Reference::Invalid(_)) => Ok(()),
        _ => {
            prop_assert_eq!(&got, &want, "decoder vs reference for {}", show(input));
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// Generated bodies
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Chunk {
    data: Raw,
    zeros: usize,
    upper: bool,
    ext: String,
}

#[derive(Debug, Clone)]
struct Body {
    chunks: Vec<Chunk>,
    last_zeros: usize,
    last_ext: String,
    trailers: Vec<(String, String, Raw)>,
    next: Raw,
}

impl Body {
    /// The body's bytes, then what follows it; and the body's length and payload.
    fn bytes(&self) -> (Raw, usize, Raw) {
        let mut out = Vec::new();
        for c in &self.chunks {
            let size = if c.upper {
                format!("{:X}", c.data.len())
            } else {
                format!("{:x}", c.data.len())
            };
            out.extend_from_slice("0".repeat(c.zeros).as_bytes());
            out.extend_from_slice(size.as_bytes());
            out.extend_from_slice(c.ext.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&c.data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice("0".repeat(self.last_zeros + 1).as_bytes());
        out.extend_from_slice(self.last_ext.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, ows, value) in &self.trailers {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(ows.as_bytes());
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let len = out.len();
        out.extend_from_slice(&self.next);
        let payload = self
            .chunks
            .iter()
            .flat_map(|c| c.data.iter().copied())
            .collect();
        (Raw(out), len, Raw(payload))
    }
}

const MARKS: &[&[u8]] = &[b"\r\n", b"0\r\n\r\n", b"\n", b"\r", b";"];

/// Chunk data: random bytes, with framing look-alikes mixed in.
fn data(max: usize) -> impl Strategy<Value = Raw> {
    (
        prop_oneof![4 => 1..32usize, 2 => 1..=max, 1 => Just(max)],
        any::<u64>(),
        proptest::collection::vec((any::<prop::sample::Index>(), select(MARKS)), 0..3),
    )
        .prop_map(|(len, mut seed, marks)| {
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            for (at, mark) in marks {
                let at = at.index(v.len());
                let end = (at + mark.len()).min(v.len());
                v[at..end].copy_from_slice(&mark[..end - at]);
            }
            Raw(v)
        })
}

fn ext() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(String::new()),
        2 => "(;[a-z]{1,5}(=[a-z0-9]{1,5})?){1,3}",
        1 => "[ \t]{1,3};[a-z]{1,5}[ \t]*=[ \t]*\"[ a-z]{0,6}\"",
        1 => ";[\\x21-\\x7e \t]{0,20}",
        1 => Just(";".to_owned()),
    ]
}

fn trailer() -> impl Strategy<Value = (String, String, Raw)> {
    (
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
        select(&["", " ", "\t", "  "][..]).prop_map(str::to_owned),
        proptest::collection::vec(
            prop_oneof![8 => 0x21..=0x7eu8, 1 => Just(b' '), 1 => Just(b'\t'), 1 => 0x80..=0xffu8],
            0..24,
        )
        .prop_map(Raw),
    )
}

fn next_message() -> impl Strategy<Value = Raw> {
    prop_oneof![
        3 => Just(Raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())),
        2 => Just(Raw::default()),
        1 => Just(Raw(b"0\r\n\r\n".to_vec())),
        2 => proptest::collection::vec(any::<u8>(), 1..16).prop_map(Raw),
    ]
}

prop_compose! {
    fn body(max_chunks: usize, max_data: usize)(
        chunks in proptest::collection::vec(
            (data(max_data), prop_oneof![6 => Just(0usize), 1 => 1..4usize], any::<bool>(), ext())
                .prop_map(|(data, zeros, upper, ext)| Chunk { data, zeros, upper, ext }),
            0..=max_chunks,
        ),
        last_zeros in prop_oneof![6 => Just(0usize), 1 => 1..4usize],
        last_ext in ext(),
        trailers in prop_oneof![3 => Just(vec![]), 2 => proptest::collection::vec(trailer(), 1..6)],
        next in next_message(),
    ) -> Body {
        Body { chunks, last_zeros, last_ext, trailers, next }
    }
}

/// How an input is cut: lengths cycled through, many of them single bytes.
fn cut_pattern() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![
            4 => Just(1usize),
            3 => 1..8usize,
            2 => 1..600usize,
            1 => 1..10_000usize,
        ],
        1..24,
    )
}

proptest! {
    #![proptest_config(config(1))]

    /// Valid bodies, cut anywhere: exactly the payload, exactly the body's
    /// bytes consumed (not the pipelined message after it), done; the
    /// reference says the same, and so does feeding one byte at a time.
    #[test]
    fn valid_bodies_decode_in_any_split(body in body(6, 4096), pattern in cut_pattern()) {
        let (input, len, payload) = body.bytes();
        let complete = Reference::Complete { consumed: len, payload };
        prop_assert_eq!(&reference(&input), &complete, "reference on {}", show(&input));
        prop_assert_eq!(&decode(&input, &pattern)?, &complete);
        prop_assert_eq!(&decode(&input, &[1])?, &complete);
        prop_assert_eq!(&decode(&input, &[input.len()])?, &complete);
    }

    /// Any prefix of a valid body: the decoder waits, with the payload so far.
    #[test]
    fn prefixes_wait(body in body(4, 600), cut in any::<prop::sample::Index>(), pattern in cut_pattern()) {
        let (input, len, _) = body.bytes();
        let input = &input[..cut.index(len)];
        let is_incomplete = matches!(reference(input), Reference::Incomplete { .. });
        prop_assert!(is_incomplete, "reference on a prefix: {}", show(input));
        agree(input, &pattern)?;
    }

    /// Mutated bodies: the decoder finishes exactly when the reference does
    /// (same length, same payload), fails exactly when it finds the input
    /// invalid, and otherwise waits with the same payload so far.
    #[test]
    fn mutated_bodies_match_the_reference(
        body in body(4, 300),
        muts in mutations(
            b"\r\n \t;:=\"0123456789abcdefABCDEFgG\x00\x7f\x80\xff",
            &[b"\r\n", b"\n", b"\r", b"0\r\n\r\n", b"0\r\n", b"\r\n\r\n", b"X: y\r\n", b" ;", b"ffffffffffffffff", b"10000000000000000"],
            LINE_END_EDITS,
            4,
        ),
        pattern in cut_pattern(),
    ) {
        let (mut input, _, _) = body.bytes();
        for m in &muts {
            m.apply(&mut input);
        }
        agree(&input, &pattern)?;
    }

    /// One byte of a small body (size digits, BWS, extension, CRLFs,
    /// trailer names and values) set to a byte whose class matters.
    #[test]
    fn one_byte_changed_matches_the_reference(
        body in body(2, 8),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![3 => select(&b"\r\n \t;:=\"\x00\x01\x7f\x80\xff0fFgG(@"[..]), 1 => any::<u8>()],
        pattern in cut_pattern(),
    ) {
        let (mut input, len, _) = body.bytes();
        input[at.index(len)] = byte;
        agree(&input, &pattern)?;
    }

    /// Arbitrary bytes, and bytes from chunked syntax.
    #[test]
    fn arbitrary_input_matches_the_reference(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Raw),
            proptest::collection::vec(select(&b"\r\n\r\n0123456789abcdefABCDEF;:= \tX"[..]), 0..64).prop_map(Raw),
        ],
        pattern in cut_pattern(),
    ) {
        agree(&input, &pattern)?;
    }

    /// The limits, at and around their edges: a size line of 4096 bytes,
    /// 16 KiB of trailer lines, 128 trailer fields.
    #[test]
    fn limits_match_the_reference(
        line in (MAX_SIZE_LINE - 6)..(MAX_SIZE_LINE + 6),
        trailer_bytes in (MAX_TRAILERS - 6)..(MAX_TRAILERS + 6),
        split in 0..3usize,
        fields in (MAX_TRAILER_FIELDS - 3)..(MAX_TRAILER_FIELDS + 3),
        which in 0..4usize,
        pattern in cut_pattern(),
    ) {
        let input = match which {
            // `3;xxxx...` of `line` bytes, or zeros.
            0 => [b"3;".as_slice(), &vec![b'x'; line - 2], b"\r\nabc\r\n0\r\n\r\n"].concat(),
            1 => [&vec![b'0'; line][..], b"\r\n\r\n"].concat(),
            // Trailer field lines of `trailer_bytes` in all (CRLFs included),
            // in `split + 1` fields.
            2 => {
                let mut t = Vec::new();
                let each = trailer_bytes / (split + 1);
                for i in 0..=split {
                    let n = if i == split { trailer_bytes - each * split } else { each };
                    t.extend_from_slice(b"X:");
                    t.extend(std::iter::repeat(b'a').take(n - 4));
                    t.extend_from_slice(b"\r\n");
                }
                [b"0\r\n".as_slice(), &t, b"\r\n"].concat()
            }
            _ => [b"0\r\n".as_slice(), &b"A:\r\n".repeat(fields), b"\r\n"].concat(),
        };
        agree(&input, &pattern)?;
        agree(&input, &[input.len()])?;
    }

    /// `encode_chunk` output, any data, decodes back to the data.
    #[test]
    fn encoded_chunks_decode_back(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6), pattern in cut_pattern()) {
        let mut body = Vec::new();
        for c in &chunks {
            encode_chunk(c, &mut body);
        }
        body.extend_from_slice(LAST_CHUNK);
        let complete = Reference::Complete { consumed: body.len(), payload: Raw(chunks.concat()) };
        prop_assert_eq!(&reference(&body), &complete);
        prop_assert_eq!(&decode(&body, &pattern)?, &complete);
    }
}
