//! Property-based and differential tests of Tether's hand-written parsers:
//! request and response heads (`http1::head`, against `httparse`, hyper and
//! a small RFC 9112 model), the chunked decoder (`http1::chunked`, against a
//! reference decoder), the SSE first-event scanner (`forward::sse`, against
//! the WHATWG algorithm), sealed tokens (`affinity::token`) and the legacy
//! session parameter (`classify::query`, against the query parsers of the
//! servers behind Tether).
//!
//! Case counts follow proptest's own configuration: `PROPTEST_CASES` (256
//! per property when unset), `PROPTEST_RNG_SEED` for a fixed seed.
//! `scripts/fuzz` runs this file for minutes with many more cases.
//! Failures are not persisted to files (the seed reproduces a run).

mod props {
    pub mod chunked;
    pub mod head;
    pub mod query;
    pub mod sse;
    pub mod token;
}

use proptest::test_runner::Config;

/// The configuration of every property here: proptest's defaults and
/// environment (`PROPTEST_CASES`, `PROPTEST_RNG_SEED`, ...), with the case
/// count divided by `divisor` for the expensive properties, no regression
/// files, and shrinking bounded so that a failure is reported quickly.
pub fn config(divisor: u32) -> Config {
    let base = Config::default();
    let max_shrink_iters = if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_some() {
        base.max_shrink_iters
    } else {
        base.max_shrink_iters.min(4096)
    };
    Config {
        cases: (base.cases / divisor).max(1),
        failure_persistence: None,
        max_shrink_iters,
        ..base
    }
}

/// A readable form of bytes for failure messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Bytes that show as an escaped string in a failing case's report.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Raw(pub Vec<u8>);

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", show(&self.0))
    }
}

impl std::ops::Deref for Raw {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Raw {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Cuts `input` into pieces whose lengths cycle through `pattern` (each at
/// least 1); the last piece may be shorter.
pub fn pieces<'a>(input: &'a [u8], pattern: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < input.len() {
        let n = pattern[i % pattern.len()].max(1).min(input.len() - at);
        out.push(&input[at..at + n]);
        at += n;
        i += 1;
    }
    out
}

/// Edits applied to a generated valid input, to reach the parsers' corners.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR one byte with a non-zero mask.
    Flip(proptest::sample::Index, u8),
    /// Overwrite one byte with an interesting one.
    Set(proptest::sample::Index, u8),
    /// Insert bytes.
    Insert(proptest::sample::Index, Vec<u8>),
    /// Remove up to `n` bytes.
    Delete(proptest::sample::Index, usize),
    /// Cut the input short.
    Truncate(proptest::sample::Index),
    /// Repeat the line (up to and including its `\n`) that holds a byte.
    DupLine(proptest::sample::Index),
    /// Replace one occurrence (if any) of the first bytes by the second.
    Replace(proptest::sample::Index, &'static [u8], &'static [u8]),
}

impl Mutation {
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let at = |i: &proptest::sample::Index, len: usize| i.index(len + 1);
        match self {
            Mutation::Flip(i, mask) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= *mask;
            }
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            Mutation::Insert(i, new) => {
                let i = at(i, bytes.len());
                bytes.splice(i..i, new.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(i, bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Truncate(i) => {
                let i = at(i, bytes.len());
                bytes.truncate(i);
            }
            Mutation::DupLine(i) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                let start = bytes[..i]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
                let line = bytes[start..end].to_vec();
                bytes.splice(end..end, line);
            }
            Mutation::Replace(i, from, to) => {
                let found: Vec<usize> = bytes
                    .windows(from.len())
                    .enumerate()
                    .filter(|(_, w)| w == from)
                    .map(|(at, _)| at)
                    .collect();
                if !found.is_empty() {
                    let at = found[i.index(found.len())];
                    bytes.splice(at..at + from.len(), to.iter().copied());
                }
            }
            _ => {}
        }
    }
}

/// Line ends broken in the ways that matter for smuggling.
pub const LINE_END_EDITS: &[(&[u8], &[u8])] = &[
    (b"\r\n", b"\n"),
    (b"\r\n", b"\r"),
    (b"\r\n", b"\r\r\n"),
    (b"\r\n", b"\n\r"),
    (b"\r\n", b"\r\n "),
    (b"\r\n", b""),
];

/// Mutations whose inserted and overwritten bytes come from `interesting`
/// (single bytes) and `fragments` (whole pieces of syntax), and which
/// replace one occurrence of a `replacements` pattern.
pub fn mutations(
    interesting: &'static [u8],
    fragments: &'static [&'static [u8]],
    replacements: &'static [(&'static [u8], &'static [u8])],
    max: usize,
) -> impl proptest::strategy::Strategy<Value = Vec<Mutation>> {
    use proptest::prelude::*;
    let byte = prop_oneof![
        3 => proptest::sample::select(interesting),
        1 => any::<u8>(),
    ];
    let insert = prop_oneof![
        proptest::collection::vec(byte.clone(), 1..4),
        proptest::sample::select(fragments).prop_map(<[u8]>::to_vec),
    ];
    let one = prop_oneof![
        2 => (any::<proptest::sample::Index>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        3 => (any::<proptest::sample::Index>(), byte).prop_map(|(i, b)| Mutation::Set(i, b)),
        3 => (any::<proptest::sample::Index>(), insert).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<proptest::sample::Index>(), 1..8usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<proptest::sample::Index>().prop_map(Mutation::Truncate),
        1 => any::<proptest::sample::Index>().prop_map(Mutation::DupLine),
        3 => (any::<proptest::sample::Index>(), proptest::sample::select(replacements))
            .prop_map(|(i, (from, to))| Mutation::Replace(i, from, to)),
    ];
    proptest::collection::vec(one, 1..=max)
}
