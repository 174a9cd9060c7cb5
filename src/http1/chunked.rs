//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally and
//! encoded.
//!
//! Hand-written because it sits on the proxy's hot path and must be
//! byte-exact and strict: a body whose end two parsers disagree on is how
//! requests are smuggled, so every line must end in CRLF, chunk data must be
//! followed by CRLF, and sizes and trailers are bounded. The decoder counts
//! and never stores input, so its state is a few integers and payload is
//! handed out as slices of the bytes that arrived.

use std::fmt;

use super::head::is_tchar;

/// Longest chunk-size line (digits, whitespace and extensions, without CRLF).
const MAX_SIZE_LINE: u16 = 4096;
/// Most bytes of trailer fields (with their CRLFs) after the last chunk.
const MAX_TRAILERS: u32 = 16 * 1024;
/// Most trailer fields, as for a head (`http1::head::MAX_FIELDS`).
const MAX_TRAILER_FIELDS: u8 = 128;

/// The last chunk and the empty trailer section: `0\r\n\r\n`.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk-size line that is not hex digits (optionally followed by `;extensions`), or overflows u64, or is too long.
    BadSize,
    /// Chunk data not followed by CRLF, or a line ended by bare LF / bare CR.
    BadFraming,
    /// The trailer section is larger than the limit.
    TrailersTooLarge,
    /// A trailer line that is not a header field (`name: value`).
    BadTrailer,
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkedError::BadSize => "bad chunk size",
            ChunkedError::BadFraming => "bad chunk framing",
            ChunkedError::TrailersTooLarge => "chunked trailers too large",
            ChunkedError::BadTrailer => "malformed chunked trailer field",
        })
    }
}

impl std::error::Error for ChunkedError {}

/// Where the decoder is in the body. `len` counts the bytes of the current
/// chunk-size line so far; `used` counts trailer bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the hex digits of a chunk-size line (`len == 0`: none yet).
    Digits { size: u64, len: u16 },
    /// In whitespace after the digits: only more whitespace or `;` may follow.
    Space { size: u64, len: u16 },
    /// In chunk extensions, skipped up to the CR.
    Ext { size: u64, len: u16 },
    /// Saw the CR ending a chunk-size line.
    SizeLf { size: u64 },
    /// In chunk data; never 0.
    Data { remaining: u64 },
    /// After chunk data, expecting its CR.
    DataCr,
    /// Saw the CR after chunk data.
    DataLf,
    /// At the start of a trailer field line or of the final empty line;
    /// `fields` trailer fields so far.
    LineStart { used: u32, fields: u8 },
    /// In a trailer field's name.
    TrailerName { used: u32, fields: u8 },
    /// In a trailer field's value, after its colon.
    TrailerValue { used: u32, fields: u8 },
    /// Saw the CR ending a trailer field line.
    TrailerLf { used: u32, fields: u8 },
    /// Saw the CR of the final empty line.
    EndLf,
    /// Past the final CRLF.
    Done,
}

impl Default for State {
    /// The start of a body: the first chunk-size line.
    fn default() -> Self {
        State::Digits { size: 0, len: 0 }
    }
}

/// Incremental decoder: feed bytes as they arrive, in any split.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes as much of `input` as possible. Calls `data` with each run of
    /// payload bytes (slices of `input`, never copied, never empty) in order.
    /// Returns how many bytes of `input` were consumed. Stops right after the
    /// last CRLF of the message (the empty line after the last chunk / trailers),
    /// so bytes after the message (a pipelined next message) are left unconsumed;
    /// after that `is_done()` is true and further calls consume 0 bytes.
    /// If it returns Ok(n) with n == input.len() and !is_done(), more input is needed.
    ///
    /// After an error the body cannot be framed and the connection must not
    /// be reused; the decoder's state is then meaningless.
    pub fn decode(
        &mut self,
        input: &[u8],
        data: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Data { remaining } => {
                    let rest = &input[pos..];
                    let n = remaining.min(rest.len() as u64) as usize;
                    data(&rest[..n]);
                    pos += n;
                    self.state = match remaining - n as u64 {
                        0 => State::DataCr,
                        remaining => State::Data { remaining },
                    };
                }
                state => {
                    self.state = step(state, input[pos])?;
                    pos += 1;
                }
            }
        }
        Ok(pos)
    }

    /// True once the whole message (last chunk, trailers, final CRLF) was consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// The state after byte `b` in `state` (any state but `Data` and `Done`).
fn step(state: State, b: u8) -> Result<State, ChunkedError> {
    use ChunkedError::*;
    use State::*;
    Ok(match (state, b) {
        // The LF of a CRLF, or anything else where one was due.
        (SizeLf { size: 0 }, b'\n') => LineStart { used: 0, fields: 0 },
        (SizeLf { size }, b'\n') => Data { remaining: size },
        (DataLf, b'\n') => Digits { size: 0, len: 0 },
        (TrailerLf { used, fields }, b'\n') => LineStart {
            used: trailer_byte(used)?,
            fields,
        },
        (EndLf, b'\n') => Done,
        (SizeLf { .. } | DataLf | TrailerLf { .. } | EndLf, _) => return Err(BadFraming),
        (_, b'\n') => return Err(BadFraming),

        // The chunk-size line.
        (Digits { len: 0, .. } | Space { .. }, b'\r') => return Err(BadSize),
        (Digits { size, .. } | Ext { size, .. }, b'\r') => SizeLf { size },
        (Digits { len, .. } | Space { len, .. } | Ext { len, .. }, _) if len >= MAX_SIZE_LINE => {
            return Err(BadSize)
        }
        (Digits { size, len }, _) if b.is_ascii_hexdigit() => Digits {
            size: push_hex_digit(size, b)?,
            len: len + 1,
        },
        // Whitespace (BWS) and `;` only after at least one digit.
        (Digits { size, len } | Space { size, len }, b' ' | b'\t') if len > 0 => {
            Space { size, len: len + 1 }
        }
        (Digits { size, len } | Space { size, len }, b';') if len > 0 => Ext { size, len: len + 1 },
        (Digits { .. } | Space { .. }, _) => return Err(BadSize),
        (Ext { size, len }, _) => Ext { size, len: len + 1 },

        // The CR after chunk data.
        (DataCr, b'\r') => DataLf,
        (DataCr, _) => return Err(BadFraming),

        // Trailer fields (RFC 9112 §7.1.2), checked as header field lines
        // (`token ":" value`, no folding, no space before the colon) and
        // then dropped; an empty line ends the message. A request line that
        // follows the last chunk is not a trailer.
        (LineStart { .. }, b'\r') => EndLf,
        (LineStart { fields, .. }, _) if fields >= MAX_TRAILER_FIELDS => {
            return Err(TrailersTooLarge)
        }
        (LineStart { used, fields }, _) if is_tchar(b) => TrailerName {
            used: trailer_byte(used)?,
            fields: fields + 1,
        },
        (TrailerName { used, fields }, _) if is_tchar(b) => TrailerName {
            used: trailer_byte(used)?,
            fields,
        },
        (TrailerName { used, fields }, b':') => TrailerValue {
            used: trailer_byte(used)?,
            fields,
        },
        (TrailerValue { used, fields }, b'\r') => TrailerLf {
            used: trailer_byte(used)?,
            fields,
        },
        (TrailerValue { used, fields }, _) if b == b' ' || b == b'\t' || b >= 0x21 && b != 0x7f => {
            TrailerValue {
                used: trailer_byte(used)?,
                fields,
            }
        }
        (LineStart { .. } | TrailerName { .. } | TrailerValue { .. }, _) => return Err(BadTrailer),

        // `decode` never asks: data is consumed in bulk and nothing follows Done.
        (Data { .. } | Done, _) => return Err(BadFraming),
    })
}

/// `size * 16 + digit`, or `BadSize` on overflow.
fn push_hex_digit(size: u64, b: u8) -> Result<u64, ChunkedError> {
    let digit = match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    };
    size.checked_mul(16)
        .and_then(|s| s.checked_add(u64::from(digit)))
        .ok_or(ChunkedError::BadSize)
}

/// Counts one more trailer byte against the limit.
fn trailer_byte(used: u32) -> Result<u32, ChunkedError> {
    if used >= MAX_TRAILERS {
        return Err(ChunkedError::TrailersTooLarge);
    }
    Ok(used + 1)
}

/// Appends one chunk carrying `data` (`{len:x}\r\n{data}\r\n`) to `out`. Does nothing when `data` is empty (an empty chunk would end the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut start = digits.len();
    let mut len = data.len();
    while len > 0 {
        start -= 1;
        digits[start] = b"0123456789abcdef"[len & 0xf];
        len >>= 4;
    }
    let size = &digits[start..];
    out.reserve(size.len() + data.len() + 4);
    out.extend_from_slice(size);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEXT: &[u8] = b"GET / HTTP/1.1\r\n";

    /// What feeding the pieces of `input` cut at `cuts` gave: the payload,
    /// the bytes consumed in all, and whether the decoder finished.
    fn feed(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut payload = Vec::new();
        let mut consumed = 0;
        let mut start = 0;
        for &end in cuts.iter().chain([&input.len()]) {
            let piece = &input[start..end];
            let n = decoder.decode(piece, &mut |d: &[u8]| {
                assert!(!d.is_empty(), "empty payload slice");
                payload.extend_from_slice(d);
            })?;
            assert!(n <= piece.len());
            assert!(
                n == piece.len() || decoder.is_done(),
                "stopped early without finishing"
            );
            consumed += n;
            start = end;
        }
        Ok((payload, consumed, decoder.is_done()))
    }

    fn bytewise(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let cuts: Vec<usize> = (1..input.len()).collect();
        feed(input, &cuts)
    }

    const VALID: &[(&[u8], &[u8])] = &[
        (b"0\r\n\r\n", b""),
        (b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
        (
            b"3\r\nabc\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n",
            b"abchello!",
        ),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (
            b"1f\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
            b"0123456789abcdef0123456789abcde",
        ),
        (
            b"1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
            b"0123456789abcdef0123456789abcde",
        ),
        (b"0003\r\nabc\r\n000\r\n\r\n", b"abc"),
        (b"00000000000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
        (b"3;foo\r\nabc\r\n0;bar=baz\r\n\r\n", b"abc"),
        (b"3;a=1;b;c=\"x y\"\r\nabc\r\n0;last\r\n\r\n", b"abc"),
        (b"3 ;foo=bar\r\nabc\r\n0\t \t;x\r\n\r\n", b"abc"),
        (b"3;\r\nabc\r\n0\r\n\r\n", b"abc"),
        (
            b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nOther: two\r\n\r\n",
            b"abc",
        ),
        (b"0;e=1\r\nOnly: trailer\r\n\r\n", b""),
        (b"0\r\nA:\r\nB:\tx y \r\nC: caf\xc3\xa9\r\n\r\n", b""),
        // Payload that looks like framing is still payload.
        (b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n"),
        (b"5\r\n0\r\n\r\n\r\n0\r\n\r\n", b"0\r\n\r\n"),
        (b"2\r\n\n\r\r\n0\r\n\r\n", b"\n\r"),
    ];

    fn check_valid(body: &[u8], expected: &[u8], got: (Vec<u8>, usize, bool), how: &str) {
        let (payload, consumed, done) = got;
        let show = String::from_utf8_lossy(body);
        assert_eq!(payload, expected, "payload of {show:?} {how}");
        assert_eq!(consumed, body.len(), "consumed of {show:?} {how}");
        assert!(done, "{show:?} not done {how}");
    }

    fn with_next(body: &[u8]) -> Vec<u8> {
        [body, NEXT].concat()
    }

    #[test]
    fn valid_whole() {
        for &(body, expected) in VALID {
            check_valid(body, expected, feed(body, &[]).unwrap(), "alone");
            let input = with_next(body);
            check_valid(body, expected, feed(&input, &[]).unwrap(), "whole");
        }
    }

    #[test]
    fn valid_split_in_two() {
        for &(body, expected) in VALID {
            let input = with_next(body);
            for i in 0..=input.len() {
                let got = feed(&input, &[i]).unwrap();
                check_valid(body, expected, got, &format!("cut at {i}"));
            }
        }
    }

    #[test]
    fn valid_split_in_three() {
        for &(body, expected) in VALID {
            let input = with_next(body);
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let got = feed(&input, &[i, j]).unwrap();
                    check_valid(body, expected, got, &format!("cut at {i} and {j}"));
                }
            }
        }
    }

    #[test]
    fn valid_byte_by_byte() {
        for &(body, expected) in VALID {
            let input = with_next(body);
            check_valid(body, expected, bytewise(&input).unwrap(), "byte by byte");
        }
    }

    #[test]
    fn payload_slices_are_runs_of_the_input() {
        let input = b"3\r\nabc\r\n5\r\nhello\r\n0\r\n\r\n";
        let mut runs = Vec::new();
        let mut decoder = ChunkedDecoder::new();
        decoder
            .decode(input, &mut |d: &[u8]| runs.push(d.to_vec()))
            .unwrap();
        assert_eq!(runs, [b"abc".to_vec(), b"hello".to_vec()]);
    }

    #[test]
    fn incomplete_input_is_consumed_and_waits() {
        let body = b"3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n";
        for end in 0..body.len() {
            let (_, consumed, done) = feed(&body[..end], &[]).unwrap();
            assert_eq!(consumed, end);
            assert!(!done, "done after {end} bytes");
        }
    }

    #[test]
    fn done_decoder_consumes_nothing() {
        let mut decoder = ChunkedDecoder::new();
        let mut called = false;
        assert_eq!(
            decoder.decode(LAST_CHUNK, &mut |_: &[u8]| called = true),
            Ok(5)
        );
        assert!(decoder.is_done());
        assert_eq!(
            decoder.decode(b"3\r\nabc\r\n", &mut |_: &[u8]| called = true),
            Ok(0)
        );
        assert_eq!(decoder.decode(b"", &mut |_: &[u8]| called = true), Ok(0));
        assert!(!called);
        assert!(decoder.is_done());
    }

    #[test]
    fn size_line_at_the_limit_is_accepted() {
        let line = [b"3;".as_slice(), &[b'x'; MAX_SIZE_LINE as usize - 2]].concat();
        let body = [&line, b"\r\nabc\r\n0\r\n\r\n".as_slice()].concat();
        check_valid(&body, b"abc", feed(&body, &[]).unwrap(), "whole");
        check_valid(&body, b"abc", bytewise(&body).unwrap(), "byte by byte");

        let zeros = [&[b'0'; MAX_SIZE_LINE as usize][..], b"\r\n\r\n"].concat();
        check_valid(&zeros, b"", feed(&zeros, &[]).unwrap(), "zeros");
    }

    #[test]
    fn trailers_at_the_limit_are_accepted() {
        // One field line of exactly MAX_TRAILERS bytes with its CRLF.
        let field = [
            b"X: ".as_slice(),
            &[b'a'; MAX_TRAILERS as usize - 5],
            b"\r\n",
        ]
        .concat();
        assert_eq!(field.len(), MAX_TRAILERS as usize);
        let body = [b"0\r\n".as_slice(), &field, b"\r\n"].concat();
        check_valid(&body, b"", feed(&body, &[]).unwrap(), "whole");
        check_valid(&body, b"", bytewise(&body).unwrap(), "byte by byte");
    }

    #[test]
    fn large_chunk_over_many_calls() {
        let mut decoder = ChunkedDecoder::new();
        let mut total = 0u64;
        let mut count = |d: &[u8]| total += d.len() as u64;
        assert_eq!(decoder.decode(b"ffffffff\r\n", &mut count), Ok(10));
        let block = vec![7u8; 1 << 20];
        let mut left = 0xffff_ffffu64;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            assert_eq!(decoder.decode(&block[..n], &mut count), Ok(n));
            left -= n as u64;
        }
        assert!(!decoder.is_done());
        let end = with_next(b"\r\n0\r\n\r\n");
        assert_eq!(decoder.decode(&end, &mut count), Ok(7));
        assert!(decoder.is_done());
        assert_eq!(total, 0xffff_ffff);
    }

    #[test]
    fn largest_size_is_accepted() {
        let mut decoder = ChunkedDecoder::new();
        let mut total = 0;
        let input = b"ffffffffffffffff\r\nabcdef";
        let n = decoder
            .decode(input, &mut |d: &[u8]| total += d.len())
            .unwrap();
        assert_eq!((n, total), (input.len(), 6));
        assert!(!decoder.is_done());
    }

    fn invalid() -> Vec<(Vec<u8>, ChunkedError)> {
        use ChunkedError::*;
        let long_ext = [
            b"1;".as_slice(),
            &[b'a'; MAX_SIZE_LINE as usize - 1],
            b"\r\nx\r\n0\r\n\r\n",
        ]
        .concat();
        let long_zeros = [&[b'0'; MAX_SIZE_LINE as usize + 1][..], b"\r\n\r\n"].concat();
        let long_space = [b"1".as_slice(), &[b' '; MAX_SIZE_LINE as usize], b";\r\n"].concat();
        let big_trailer = [
            b"0\r\nX: ".as_slice(),
            &[b'a'; MAX_TRAILERS as usize],
            b"\r\n\r\n",
        ]
        .concat();
        let many_trailers = [b"0\r\n".as_slice(), &b"A: b\r\n".repeat(3000), b"\r\n"].concat();
        let too_many_fields = [b"0\r\n".as_slice(), &b"A:\r\n".repeat(129), b"\r\n"].concat();
        let cases: Vec<(&[u8], ChunkedError)> = vec![
            // Line endings.
            (b"3\nabc\r\n0\r\n\r\n", BadFraming),
            (b"3\rabc\r\n0\r\n\r\n", BadFraming),
            (b"3\r\r\nabc\r\n0\r\n\r\n", BadFraming),
            (b"3;ext\nabc\r\n0\r\n\r\n", BadFraming),
            (b"3;ext\rabc\r\n0\r\n\r\n", BadFraming),
            (b"3 \nabc\r\n0\r\n\r\n", BadFraming),
            (b"\n", BadFraming),
            // After chunk data.
            (b"3\r\nabcX\r\n0\r\n\r\n", BadFraming),
            (b"3\r\nabcd\r\n0\r\n\r\n", BadFraming),
            (b"3\r\nabc\n0\r\n\r\n", BadFraming),
            (b"3\r\nabc\r0\r\n\r\n", BadFraming),
            (b"3\r\nabc0\r\n\r\n", BadFraming),
            // Trailers and the final line.
            (b"0\r\nX: y\nZ: w\r\n\r\n", BadFraming),
            (b"0\r\nX: y\rZ: w\r\n\r\n", BadFraming),
            (b"0\r\n\n", BadFraming),
            (b"0\r\n\rX", BadFraming),
            (b"0\r\nX: y\r\n\n", BadFraming),
            (&big_trailer, TrailersTooLarge),
            (&many_trailers, TrailersTooLarge),
            (&too_many_fields, TrailersTooLarge),
            // Trailers are header fields, not anything up to a CRLF.
            (b"0\r\nGET /smuggled HTTP/1.1\r\n\r\n", BadTrailer),
            (b"0\r\nNo colon here\r\n\r\n", BadTrailer),
            (b"0\r\nX-A : 1\r\n\r\n", BadTrailer),
            (b"0\r\n: empty name\r\n\r\n", BadTrailer),
            (b"0\r\nX-A: 1\r\n folded\r\n\r\n", BadTrailer),
            (b"0\r\nX-A: a\x00b\r\n\r\n", BadTrailer),
            (b"0\r\nX-A: a\x7fb\r\n\r\n", BadTrailer),
            (b"0\r\nX(A): 1\r\n\r\n", BadTrailer),
            // Sizes.
            (b"g\r\nabc\r\n", BadSize),
            (b"0x3\r\nabc\r\n", BadSize),
            (b"+3\r\nabc\r\n", BadSize),
            (b"\r\n", BadSize),
            (b"-1\r\n", BadSize),
            (b"1ffffffffffffffff\r\n", BadSize),
            (b"10000000000000000\r\n", BadSize),
            (&long_ext, BadSize),
            (&long_zeros, BadSize),
            (&long_space, BadSize),
            (b"1 2\r\nab\r\n", BadSize),
            (b" 1\r\na\r\n", BadSize),
            (b"1 \r\na\r\n", BadSize),
            (b"1\t\r\na\r\n", BadSize),
            (b";x\r\n", BadSize),
            (b" ;x\r\n", BadSize),
            (b"1 x\r\n", BadSize),
            // The size line of the next chunk is checked like the first.
            (b"1\r\na\r\nz\r\n", BadSize),
            (b"1\r\na\r\n\r\n", BadSize),
        ];
        cases
            .into_iter()
            .map(|(input, e)| (input.to_vec(), e))
            .collect()
    }

    #[test]
    fn invalid_whole_and_byte_by_byte() {
        for (input, expected) in invalid() {
            let show = String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned();
            assert_eq!(feed(&input, &[]), Err(expected), "{show:?} whole");
            assert_eq!(bytewise(&input), Err(expected), "{show:?} byte by byte");
        }
    }

    #[test]
    fn invalid_split_in_two() {
        for (input, expected) in invalid() {
            if input.len() > 64 {
                continue;
            }
            for i in 0..=input.len() {
                let show = String::from_utf8_lossy(&input);
                assert_eq!(feed(&input, &[i]), Err(expected), "{show:?} cut at {i}");
            }
        }
    }

    #[test]
    fn encode_known() {
        let mut out = Vec::new();
        encode_chunk(b"hello", &mut out);
        assert_eq!(out, b"5\r\nhello\r\n");
        out.clear();
        encode_chunk(&[b'x'; 4096], &mut out);
        assert!(out.starts_with(b"1000\r\nxx"));
        assert!(out.ends_with(b"xx\r\n"));
        assert_eq!(out.len(), 4 + 2 + 4096 + 2);
        out.clear();
        encode_chunk(&[0; 0x1af], &mut out);
        assert!(out.starts_with(b"1af\r\n"));
    }

    #[test]
    fn encode_empty_appends_nothing() {
        let mut out = b"before".to_vec();
        encode_chunk(b"", &mut out);
        assert_eq!(out, b"before");
    }

    #[test]
    fn encode_round_trips() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut lengths = vec![0, 1, 2, 15, 16, 17, 255, 256, 4095, 4096, 4097, 70_000];
        lengths.extend((0..40).map(|_| (next() % 5000) as usize));
        let chunks: Vec<Vec<u8>> = lengths
            .iter()
            .map(|&n| (0..n).map(|_| next() as u8).collect())
            .collect();

        let mut body = Vec::new();
        for chunk in &chunks {
            encode_chunk(chunk, &mut body);
        }
        body.extend_from_slice(LAST_CHUNK);
        let expected = chunks.concat();
        let input = with_next(&body);

        check_valid(&body, &expected, feed(&input, &[]).unwrap(), "whole");
        check_valid(&body, &expected, bytewise(&input).unwrap(), "byte by byte");
        let cuts: Vec<usize> = (1..input.len()).step_by(997).collect();
        check_valid(&body, &expected, feed(&input, &cuts).unwrap(), "in pieces");

        for chunk in &chunks {
            let mut one = Vec::new();
            encode_chunk(chunk, &mut one);
            one.extend_from_slice(LAST_CHUNK);
            check_valid(&one, chunk, feed(&one, &[]).unwrap(), "one chunk");
        }
    }

    #[test]
    fn decoder_is_small() {
        assert!(std::mem::size_of::<ChunkedDecoder>() <= 32);
    }

    #[test]
    fn default_is_fresh() {
        let mut decoder = ChunkedDecoder::default();
        assert!(!decoder.is_done());
        assert_eq!(decoder.decode(LAST_CHUNK, &mut |_: &[u8]| {}), Ok(5));
        assert!(decoder.is_done());
    }

    #[test]
    fn errors_display() {
        for e in [
            ChunkedError::BadSize,
            ChunkedError::BadFraming,
            ChunkedError::TrailersTooLarge,
        ] {
            let s = e.to_string();
            assert!(!s.is_empty());
            assert_eq!(s, s.to_lowercase());
        }
    }
}
