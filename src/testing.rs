//! Test support for the unit tests of the request path (`conn`, `proxy`):
//! a proxy whose backends are reached over in-memory pipes, checked in as
//! their idle kept-alive connections, and clients served by the connection
//! loop over pipes too. No socket: tokio's paused clock drives the timers.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, DuplexStream};

use crate::config::{Config, Overrides};
use crate::downstream::{BodyBudget, Client, ConnSettings};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::transport::Stream;

/// A client's connection settings as `config` makes them.
pub(crate) fn settings_of(config: &Config) -> Arc<ConnSettings> {
    Arc::new(ConnSettings {
        header_read_timeout: config.timeouts.header_read,
        max_header_bytes: config.limits.max_header_bytes,
        max_request_body: config.limits.max_request_body,
        request_body_timeout: config.timeouts.request_body,
        budget: BodyBudget::new(1 << 20, Default::default(), Default::default()),
        lifecycle: Default::default(),
        proxy_protocol: false,
        tls: None,
        http2: crate::config::Http2Settings::default(),
    })
}

/// A proxy with the configuration file `file` and the backends `urls`
/// (health checks off, so each is active from the start).
pub(crate) fn memory_proxy_with(
    metrics: &Arc<Metrics>,
    file: &str,
    urls: &[&str],
) -> (Arc<Proxy>, Arc<ConnSettings>) {
    let overrides = Overrides {
        backends: urls.iter().map(|u| u.to_string()).collect(),
        ..Overrides::default()
    };
    let file = format!("[health]\ncheck = \"none\"\n{file}");
    let file = crate::config::parse_file(&file, "t").unwrap();
    let config = Config::from_parts(file, overrides, &|_| None).unwrap();
    let proxy = Arc::new(Proxy::new(&config, metrics.clone()));
    (proxy, settings_of(&config))
}

/// The backend's end of a pipe checked in as an idle connection to the
/// `index`th backend, the pipe holding at most `size` bytes in flight.
pub(crate) fn backend_pipe_at(proxy: &Proxy, index: usize, size: usize) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(size);
    let backend = proxy.pools()[0].fleet.pool().backends()[index].clone();
    proxy
        .upstream()
        .checkin(&backend, Stream::Memory(ours), None);
    theirs
}

/// A client over a pipe, served by the connection loop; its end.
pub(crate) fn memory_client(
    proxy: &Arc<Proxy>,
    metrics: &Arc<Metrics>,
    settings: &Arc<ConnSettings>,
) -> DuplexStream {
    let (theirs, ours) = tokio::io::duplex(64 << 10);
    let peer = "192.0.2.1:5000".parse().unwrap();
    let client = Client::new(Stream::Memory(theirs), peer, settings);
    tokio::spawn(crate::conn::serve_stream(
        client,
        proxy.clone(),
        metrics.clone(),
        settings.clone(),
    ));
    ours
}

/// Reads until `needle` has arrived (or the pipe ends).
pub(crate) async fn read_until(pipe: &mut DuplexStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// What a pipe holds now, without waiting for more.
pub(crate) fn pending(pipe: &mut DuplexStream) -> Vec<u8> {
    use tokio::io::AsyncRead as _;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut rb = tokio::io::ReadBuf::new(&mut chunk);
        let read = crate::transport::without_waiting(|cx| {
            std::pin::Pin::new(&mut *pipe).poll_read(cx, &mut rb)
        });
        match read {
            Some(Ok(())) if !rb.filled().is_empty() => got.extend_from_slice(rb.filled()),
            _ => return got,
        }
    }
}
