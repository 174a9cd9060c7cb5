//! Stage 1: the listeners. Accepts client connections and serves HTTP/1.1 on
//! them with the head limits (size, read timeout) that keep slow or huge
//! heads from holding resources; hands each request to `Proxy::handle`.
//!
//! `start` binds (port 0 works: the bound addresses are returned), spawns the
//! proxy and admin accept loops, and returns a `Running` handle whose
//! `shutdown` stops them. Tests and `tether demo` use it the same way `main` does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::admin;
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::proxy::Proxy;

/// A running Tether: its bound addresses and the means to stop it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub proxy: Arc<Proxy>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Resolves when `signal` does, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Binds the listeners and starts serving.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let listener = TcpListener::bind(config.listen).await?;
    let proxy_addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let proxy = Arc::new(Proxy::new(&config, metrics.clone()));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let admin_addr = match config.admin {
        Some(addr) => {
            let admin_listener = TcpListener::bind(addr).await?;
            let admin_addr = admin_listener.local_addr()?;
            let service = Arc::new(admin::Admin::new(registry));
            tasks.spawn(admin::serve(admin_listener, service, rx.clone()));
            Some(admin_addr)
        }
        None => None,
    };

    let settings = ConnSettings {
        header_read_timeout: config.timeouts.header_read,
        max_header_bytes: config.limits.max_header_bytes,
    };
    tasks.spawn(accept_loop(
        listener,
        proxy.clone(),
        metrics.clone(),
        settings,
        rx,
    ));
    Ok(Running {
        proxy_addr,
        admin_addr,
        metrics,
        proxy,
        shutdown,
        tasks,
    })
}

#[derive(Debug, Clone, Copy)]
struct ConnSettings {
    header_read_timeout: Duration,
    max_header_bytes: usize,
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    settings: ConnSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::debug_span!("conn", %peer);
                    let task = serve_conn(stream, peer, proxy.clone(), metrics.clone(), settings);
                    conns.spawn(task.instrument(span));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    conns.shutdown().await;
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    settings: ConnSettings,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let _open = ConnGuard::new(&metrics);
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        counter.fetch_add(1, Ordering::Relaxed);
        let span =
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
        async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }.instrument(span)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(settings.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        let kind = if e.is_timeout() && served.load(Ordering::Relaxed) > 0 {
            // hyper's head timer also runs while a kept-alive connection
            // waits for its next request: that is an idle close, not an attack.
            tracing::debug!("idle keep-alive connection closed");
            return;
        } else if e.is_timeout() {
            "header_timeout"
        } else if e.is_parse_too_large() {
            "header_too_large"
        } else if e.is_parse() {
            "parse"
        } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
            // The client went away mid-message: expected, not a fault.
            tracing::debug!(error = %e, "client connection closed early");
            return;
        } else {
            "io"
        };
        tracing::info!(kind, error = %e, "client connection error");
        metrics
            .connection_errors
            .get_or_create(&metrics::Kind { kind })
            .inc();
    }
}

/// Counts an open client connection for as long as it lives.
struct ConnGuard(Arc<Metrics>);

impl ConnGuard {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.connections.inc();
        ConnGuard(metrics.clone())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}
