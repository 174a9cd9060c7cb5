use super::*;

#[test]
fn a_simple_request_parses() {
    let buf = b"GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n";
    let head = RequestHead::parse(buf, 1024).unwrap().unwrap();
    assert_eq!(&buf[head.target.clone()], b"/mcp");
    assert_eq!(head.framing, Framing::None);
}
