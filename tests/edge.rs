//! The edge: a listener behind an L4 balancer (`proxy_protocol = true`),
//! with hand-made PROXY headers and with a real HAProxy in TCP mode that
//! sends them (`send-proxy-v2`).

mod support;

use mcp_tether_testkit::raw::{echo_target, exchange, RawBackend};
use support::*;
use tokio::io::AsyncWriteExt;

const GET: &[u8] = b"GET /mcp HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";

fn forwarded_for(seen: &str) -> String {
    seen.lines()
        .find_map(|l| l.strip_prefix("x-forwarded-for: "))
        .unwrap_or_default()
        .to_owned()
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&8080u16.to_be_bytes());
    out
}

#[tokio::test]
async fn the_client_address_comes_from_the_proxy_header() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "proxy_protocol = true\n").await;
    let v1 = [&b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n"[..], GET].concat();
    let answer = exchange(t.proxy_addr, &v1).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(forwarded_for(&backend.seen()[0]), "192.0.2.7");
    let v2 = [v2_tcp4([198, 51, 100, 9], 4000), GET.to_vec()].concat();
    exchange(t.proxy_addr, &v2).await;
    assert_eq!(forwarded_for(&backend.seen()[1]), "198.51.100.9");
    // The header split across writes: still read whole.
    let mut s = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(b"PROXY TCP6 2001:db8::1 2001:db8::2 1")
        .await
        .unwrap();
    s.flush().await.unwrap();
    s.write_all(&[&b" 2\r\n"[..], GET].concat()).await.unwrap();
    mcp_tether_testkit::raw::read_to_close(&mut s).await;
    assert_eq!(forwarded_for(&backend.seen()[2]), "2001:db8::1");
    // LOCAL (the balancer's own check): the connection's address.
    let mut local = v2_tcp4([1, 2, 3, 4], 1);
    local[12] = 0x20;
    exchange(t.proxy_addr, &[local, GET.to_vec()].concat()).await;
    assert_eq!(forwarded_for(&backend.seen()[3]), "127.0.0.1");
}

#[tokio::test]
async fn a_connection_without_the_header_is_closed_unanswered() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "proxy_protocol = true\n").await;
    for bytes in [
        GET.to_vec(),
        b"PROXY TCP4 999.0.2.7 10.0.0.1 1 2\r\n".to_vec(),
        b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n".to_vec(),
    ] {
        let answer = exchange(t.proxy_addr, &bytes).await;
        assert_eq!(answer, "", "closed without a word");
    }
    assert!(backend.seen().is_empty());
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            "tether_connection_errors_total{kind=\"proxy_protocol\"}"
        ),
        3.0
    );
}

#[tokio::test]
async fn behind_a_real_haproxy_in_tcp_mode_the_client_address_survives() {
    let backend = RawBackend::start(echo_target).await;
    let t = tether_urls(vec![backend.url()], "proxy_protocol = true\n").await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = std::env::temp_dir().join(format!("tether-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
             backend be\n    server tether {} send-proxy-v2\n",
            t.proxy_addr
        ),
    )
    .unwrap();
    // HAProxy is part of the test set-up (.ci/run installs Debian's).
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _haproxy = Killed(
        std::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .spawn()
            .expect("haproxy (apt-get install haproxy; .ci/run installs it)"),
    );
    let connect = || async {
        // From 127.0.0.2: HAProxy reaches Tether from 127.0.0.1, so only the
        // PROXY header can tell Tether the client's address.
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        s.connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
    };
    let mut s = within("haproxy listening", async {
        loop {
            match connect().await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    s.write_all(GET).await.unwrap();
    let answer = mcp_tether_testkit::raw::read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(forwarded_for(&backend.seen()[0]), "127.0.0.2");
    std::fs::remove_dir_all(&dir).ok();
}
