//! `Mcp-*` header values as the 2026-07-28 revision writes them: plain when
//! they are header-safe, else `=?base64?{standard base64 of UTF-8}?=`. An
//! intermediary that inspects a value must decode it first; one larger than
//! [`MAX_VALUE`] is refused before any decoding (SEP-2243).

use std::borrow::Cow;

use base64::Engine as _;

/// Longest `Mcp-Method` / `Mcp-Name` value looked at, encoded.
pub const MAX_VALUE: usize = 8 << 10;

/// Why a header value cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadValue {
    /// Longer than [`MAX_VALUE`] (answered 431).
    TooLarge,
    /// `=?base64?...?=` that is not base64 of UTF-8 text (answered 400).
    Encoding,
}

/// The value a header carries, decoded.
pub fn decode(value: &[u8]) -> Result<Cow<'_, [u8]>, BadValue> {
    if value.len() > MAX_VALUE {
        return Err(BadValue::TooLarge);
    }
    let Some(inner) = value
        .strip_prefix(b"=?base64?")
        .and_then(|v| v.strip_suffix(b"?="))
    else {
        return Ok(Cow::Borrowed(value));
    };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = engine.decode(inner).map_err(|_| BadValue::Encoding)?;
    match std::str::from_utf8(&decoded) {
        Ok(_) => Ok(Cow::Owned(decoded)),
        Err(_) => Err(BadValue::Encoding),
    }
}

/// A value as a header carries it: as it is when it is visible ASCII with
/// no leading or trailing space and not the encoded form itself, else
/// `=?base64?...?=` (so a backend's odd id cannot break the head).
pub fn encode(value: &str) -> std::borrow::Cow<'_, str> {
    let plain = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_graphic())
        && !value.starts_with("=?base64?");
    match plain {
        true => std::borrow::Cow::Borrowed(value),
        false => std::borrow::Cow::Owned(format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_pass_and_base64_ones_are_decoded() {
        assert_eq!(&*decode(b"tools/call").unwrap(), b"tools/call");
        // "réport" in UTF-8, base64, with and without padding.
        assert_eq!(
            &*decode(b"=?base64?csOpcG9ydA==?=").unwrap(),
            "réport".as_bytes()
        );
        assert_eq!(
            &*decode(b"=?base64?csOpcG9ydA?=").unwrap(),
            "réport".as_bytes()
        );
        // A prefix alone is not the encoded form.
        assert_eq!(&*decode(b"=?base64?").unwrap(), b"=?base64?");
    }

    #[test]
    fn encode_keeps_safe_values_and_encodes_the_rest() {
        assert_eq!(encode("abc-123_X"), "abc-123_X");
        for odd in ["a b", "r\u{e9}port", "x\r\nInjected: 1", "", "=?base64?x?="] {
            let encoded = encode(odd);
            assert!(encoded.starts_with("=?base64?"), "{odd:?}");
            assert_eq!(&*decode(encoded.as_bytes()).unwrap(), odd.as_bytes());
        }
    }

    #[test]
    fn bad_encodings_and_oversized_values_are_refused() {
        assert_eq!(decode(b"=?base64?***?=").unwrap_err(), BadValue::Encoding);
        // Valid base64 of bytes that are not UTF-8 (0xff 0xfe).
        assert_eq!(decode(b"=?base64?//4=?=").unwrap_err(), BadValue::Encoding);
        let big = vec![b'a'; MAX_VALUE + 1];
        assert_eq!(decode(&big).unwrap_err(), BadValue::TooLarge);
        assert!(decode(&big[..MAX_VALUE]).is_ok());
    }
}
