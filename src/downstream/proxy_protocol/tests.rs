use super::*;

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | cmd);
    out.push(fam);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn addr(s: &str) -> Header {
    Header::Proxied(s.parse().unwrap())
}

#[test]
fn v1_lines() {
    for (line, header) in [
        (
            "PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n",
            addr("192.0.2.7:56324"),
        ),
        (
            "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
            addr("[2001:db8::1]:1"),
        ),
        ("PROXY UNKNOWN\r\n", Header::Local),
        ("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", Header::Local),
        ("PROXY UNKNOWN \u{ff}\u{fe} anything\r\n", Header::Local),
    ] {
        let mut buf = line.as_bytes().to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&buf), Ok(Some((header, line.len()))), "{line:?}");
    }
}

#[test]
fn v1_refusals() {
    for line in [
        "PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\n",
        "PROXY TCP4 192.0.2.7 10.0.0.1 056324 443\r\n",
        "PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
        "PROXY TCP4 192.0.2.7 10.0.0.1 -1 443\r\n",
        "PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
        "PROXY TCP4 192.0.2.7 2001:db8::1 1 2\r\n",
        "PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n",
        "PROXY TCP4 192.0.2.7 10.0.0.1 1 2 3\r\n",
        "PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",
        "PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
        "GET / HTTP/1.1\r\n",
        "proxy TCP4 192.0.2.7 10.0.0.1 1 2\r\n",
        "PROXY TCP4 192.000.2.7 10.0.0.1 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
    ] {
        assert!(parse(line.as_bytes()).is_err(), "{line:?}");
    }
    let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
    assert!(parse(long.as_bytes()).is_err());
    assert_eq!(parse(&long.as_bytes()[..50]), Ok(None), "still may end");
}

#[test]
fn v2_headers() {
    let mut v4 = vec![192, 0, 2, 7, 10, 0, 0, 1];
    v4.extend_from_slice(&56324u16.to_be_bytes());
    v4.extend_from_slice(&443u16.to_be_bytes());
    let mut with_tlv = v4.clone();
    with_tlv.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']);
    let mut v6 = vec![0u8; 36];
    v6[15] = 1;
    v6[32..34].copy_from_slice(&8080u16.to_be_bytes());
    for (bytes, header) in [
        (v2(1, 0x11, &v4), addr("192.0.2.7:56324")),
        (v2(1, 0x11, &with_tlv), addr("192.0.2.7:56324")),
        (v2(1, 0x21, &v6), addr("[::1]:8080")),
        (v2(0, 0x11, &v4), Header::Local),
        (v2(1, 0x00, &[]), Header::Local),
        (v2(1, 0x12, &v4), Header::Local),
        (v2(1, 0x31, &[0u8; 216]), Header::Local),
    ] {
        let mut buf = bytes.clone();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&buf), Ok(Some((header, bytes.len()))));
    }
    for bad in [v2(1, 0x11, &v4[..8]), v2(2, 0x11, &v4), {
        let mut b = v2(1, 0x11, &v4);
        b[12] = 0x11;
        b
    }] {
        assert!(parse(&bad).is_err(), "{bad:?}");
    }
    for family in [0x13, 0x41, 0x0f, 0xff] {
        assert!(parse(&v2(1, family, &v4)).is_err(), "{family:#x}");
    }
    let mut huge = v2(1, 0x11, &v4);
    huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
    assert!(parse(&huge).is_err());
}

#[test]
fn every_prefix_waits_and_every_split_gives_the_same_answer() {
    let mut v4 = vec![192, 0, 2, 7, 10, 0, 0, 1];
    v4.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
    for header in [
        b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n".to_vec(),
        v2(1, 0x11, &v4),
    ] {
        let whole = parse(&header).unwrap().unwrap();
        for n in 0..header.len() {
            assert_eq!(parse(&header[..n]), Ok(None), "{n} bytes");
        }
        assert_eq!(whole.1, header.len());
    }
}

proptest::proptest! {
    #[test]
    fn no_input_panics_and_a_length_never_exceeds_the_input(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        if let Ok(Some((_, n))) = parse(&bytes) {
            proptest::prop_assert!(n <= bytes.len());
        }
    }

    #[test]
    fn v2_after_the_signature_never_panics(rest in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&rest);
        if let Ok(Some((_, n))) = parse(&bytes) {
            proptest::prop_assert!(n <= bytes.len());
        }
    }
}
