use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::{Config, Overrides};
use crate::downstream::BodyBudget;

/// A proxy for a backend nobody reaches, and default connection settings.
fn proxy_and_settings(metrics: &Arc<Metrics>) -> (Arc<Proxy>, Arc<ConnSettings>) {
    let overrides = Overrides {
        backends: vec!["http://127.0.0.1:9".into()],
        ..Overrides::default()
    };
    let config = Config::from_parts(Default::default(), overrides, &|_| None).unwrap();
    let proxy = Arc::new(Proxy::new(&config, metrics.clone()));
    let settings = Arc::new(ConnSettings {
        header_read_timeout: config.timeouts.header_read,
        max_header_bytes: config.limits.max_header_bytes,
        max_request_body: config.limits.max_request_body,
        request_body_timeout: config.timeouts.request_body,
        budget: BodyBudget::new(1 << 20, Default::default(), Default::default()),
        lifecycle: Default::default(),
        proxy_protocol: false,
        tls: None,
        http2: crate::http2::Http2Settings::default(),
    });
    (proxy, settings)
}

/// Serves one accepted connection with `serve`, for a backend nobody reaches.
async fn serve_one_connection(metrics: Arc<Metrics>) -> TcpStream {
    crate::panic::install_hook();
    let (proxy, settings) = proxy_and_settings(&metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        serve(stream, peer, proxy, metrics, settings).await;
    });
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_panic_below_the_connection_is_answered_502_and_counted() {
    let metrics = Arc::new(Metrics::default());
    let mut client = serve_one_connection(metrics.clone()).await;
    client
        .write_all(b"GET /__tether_test_panic HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with(
            r#"{"error":{"code":-32603,"message":"Internal error"},"id":null,"jsonrpc":"2.0"}"#
        ),
        "{answer}"
    );
    assert_eq!(metrics.internal_errors.get(), 1);
}

/// What a held stream keeps for hours is the connection task: its largest
/// phase decides its size (rare and per-request phases are boxed). Was 1,256
/// bytes before the request and the rare relay paths were boxed, 632 before
/// `serve_client` stopped keeping a second copy of the client (an async fn's
/// arguments).
#[tokio::test]
async fn the_connection_task_stays_small() {
    let metrics = Arc::new(Metrics::default());
    let (proxy, settings) = proxy_and_settings(&metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _c = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (s, peer) = listener.accept().await.unwrap();
    let task = serve(s, peer, proxy, metrics, settings);
    let size = std::mem::size_of_val(&task);
    println!("connection task: {size} bytes");
    assert!(size <= 560, "the connection task grew to {size} bytes");
}
