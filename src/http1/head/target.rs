//! The request line's target and `Host` (RFC 9112 §3.2, RFC 3986 §3.2.2):
//! which form a target has, and whether the head names its host once and
//! validly. Part of parsing a head (`super`).

use std::ops::Range;

use super::{FieldKind, Fields, HeadError, TargetForm};

/// Which form the request target has; refuses a fragment, an absolute form
/// with another scheme or with userinfo, and any other form.
pub(super) fn target_form(
    buf: &[u8],
    target: Range<usize>,
    method: &[u8],
) -> Result<TargetForm, HeadError> {
    let t = &buf[target.clone()];
    if t.contains(&b'#') {
        return Err(HeadError::Malformed("fragment in request target"));
    }
    match t {
        [b'/', ..] => return Ok(TargetForm::Origin),
        b"*" if method == b"OPTIONS" => return Ok(TargetForm::Asterisk),
        _ => {}
    }
    let Some(colon) = t.iter().position(|&b| b == b':') else {
        return Err(HeadError::Malformed("unsupported request target"));
    };
    let (scheme, rest) = t.split_at(colon);
    let is_http = scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
    let Some(after) = rest.strip_prefix(b"://").filter(|_| is_http) else {
        return Err(HeadError::Malformed("unsupported request target"));
    };
    let start = target.start + colon + 3;
    let end = start
        + after
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(after.len());
    let authority = &buf[start..end];
    if authority.is_empty() || authority.contains(&b'@') || !valid_host(authority) {
        return Err(HeadError::Malformed("invalid authority in request target"));
    }
    Ok(TargetForm::Absolute {
        authority: start..end,
        path: end..target.end,
    })
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`, any request
/// at most one, and its value must be a valid `uri-host [":" port]`.
pub(super) fn check_host(
    buf: &[u8],
    fields: &Fields,
    minor: u8,
    form: &TargetForm,
) -> Result<(), HeadError> {
    let mut hosts = fields.all(buf, FieldKind::Host);
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(HeadError::Malformed("more than one host field")),
        (None, None) if minor >= 1 => Err(HeadError::Malformed("missing host field")),
        (None, None) => Ok(()),
        // An absolute-form target's authority replaces Host, whatever it says.
        (Some(_), None) if matches!(form, TargetForm::Absolute { .. }) => Ok(()),
        (Some(value), None) if valid_host(value) => Ok(()),
        (Some(_), None) => Err(HeadError::Malformed("invalid host field")),
    }
}

/// The bytes of a reg-name: unreserved, `%` (of pct-encoded), sub-delims.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// `uri-host [":" port]` (RFC 3986 §3.2.2): an IP literal in brackets, or a
/// reg-name (unreserved, percent-encoded, sub-delims), then digits. Empty is
/// allowed (a target without an authority).
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value {
        [b'[', ..] => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &value[1..end];
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !ok {
                    return false;
                }
                (&[][..], &value[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let reg_name = |b: &u8| REG_NAME[usize::from(*b)];
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host.iter().all(reg_name) && port_ok
}
