//! The PROXY protocol (HAProxy's, versions 1 and 2), for a listener behind
//! an L4 balancer (AWS NLB, HAProxy in TCP mode, a cloud LB): the client's
//! real address comes first on the connection, before any HTTP.
//!
//! Spec: `doc/proxy-protocol.txt` of HAProxy. v1 is one text line of at most
//! 107 bytes (`PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, or
//! `PROXY UNKNOWN ...\r\n`); v2 is a 16-byte binary header (a 12-byte
//! signature, version and command, family, length) and the addresses. A
//! `LOCAL` v2 command or `UNKNOWN` v1 family (the balancer's own health
//! check) keeps the connection's address. TLVs after the v2 addresses are
//! skipped. Anything else is an error: the connection is closed, as
//! HAProxy's `accept-proxy` does, since a listener that expects the header
//! must not take a client's first bytes for one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;
/// The most a v2 header may declare after its 16 bytes (addresses and
/// TLVs); a balancer's TLVs are a few hundred bytes.
const V2_MAX_BODY: usize = 4096;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client's address, as the balancer saw it.
    Proxied(SocketAddr),
    /// The balancer speaking for itself: keep the connection's address.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid PROXY protocol header: {0}")]
pub struct Invalid(pub &'static str);

/// Parses the header at the start of `buf`: `Ok(None)` while it may still
/// be incomplete, else the header and its length in bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Invalid> {
    if buf.is_empty() {
        return Ok(None);
    }
    let sig = &V2_SIGNATURE[..buf.len().min(V2_SIGNATURE.len())];
    if buf.starts_with(sig) {
        return parse_v2(buf);
    }
    let v1 = b"PROXY ";
    if buf.starts_with(&v1[..buf.len().min(v1.len())]) {
        return parse_v1(buf);
    }
    Err(Invalid("no PROXY header where the listener expects one"))
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Invalid> {
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return match buf.len() >= V1_MAX {
            true => Err(Invalid("v1 line longer than 107 bytes")),
            false => Ok(None),
        };
    };
    let line = buf[..end]
        .strip_suffix(b"\r")
        .ok_or(Invalid("v1 line not ended by CRLF"))?;
    // After UNKNOWN the receiver ignores whatever comes before the CRLF.
    if line == b"PROXY UNKNOWN" || line.starts_with(b"PROXY UNKNOWN ") {
        return Ok(Some((Header::Local, end + 1)));
    }
    let line = std::str::from_utf8(line).map_err(|_| Invalid("v1 line not ASCII"))?;
    let mut parts = line.split(' ');
    let (Some("PROXY"), Some(family)) = (parts.next(), parts.next()) else {
        return Err(Invalid("v1 line malformed"));
    };
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(Invalid("v1 line needs four fields after the family"));
    };
    let ip: IpAddr = match family {
        "TCP4" => IpAddr::V4(src.parse().map_err(|_| Invalid("v1 source not IPv4"))?),
        "TCP6" => IpAddr::V6(src.parse().map_err(|_| Invalid("v1 source not IPv6"))?),
        _ => return Err(Invalid("v1 family not TCP4, TCP6 or UNKNOWN")),
    };
    let source_port = port(sport)?;
    port(dport)?;
    if dst
        .parse::<IpAddr>()
        .map(|d| d.is_ipv4() != ip.is_ipv4())
        .unwrap_or(true)
    {
        return Err(Invalid("v1 destination not of the source's family"));
    }
    Ok(Some((
        Header::Proxied(SocketAddr::new(ip, source_port)),
        end + 1,
    )))
}

/// A v1 port: decimal, no sign or leading zero, 0-65535.
fn port(text: &str) -> Result<u16, Invalid> {
    let bad = Invalid("v1 port not 0-65535");
    if text.is_empty() || text.len() > 5 || (text.len() > 1 && text.starts_with('0')) {
        return Err(bad);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    text.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Invalid> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Invalid("v2 version not 2"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BODY {
        return Err(Invalid("v2 header longer than 4096 bytes"));
    }
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    match ver_cmd & 0x0f {
        0 => return Ok(Some((Header::Local, total))),
        1 => {}
        _ => return Err(Invalid("v2 command not LOCAL or PROXY")),
    }
    let addr = match buf[13] {
        // TCP over IPv4.
        0x11 => {
            let a = body
                .get(..12)
                .ok_or(Invalid("v2 IPv4 addresses cut short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([a[8], a[9]]))
        }
        // TCP over IPv6.
        0x21 => {
            let a = body
                .get(..36)
                .ok_or(Invalid("v2 IPv6 addresses cut short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                u16::from_be_bytes([a[32], a[33]]),
            )
        }
        // UNSPEC, UDP (Tether is TCP only) or a UNIX socket: no client
        // address to use.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => return Ok(Some((Header::Local, total))),
        // The spec: other values must be rejected.
        _ => return Err(Invalid("v2 family and protocol byte not a defined one")),
    };
    Ok(Some((Header::Proxied(addr), total)))
}

#[cfg(test)]
mod tests;
