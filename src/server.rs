//! Stage 1: the listeners. Accepts client connections and gives each to
//! `conn::serve`; also closes idle upstream connections past their timeout.
//! Failed accepts are handled by `accept` (shared with the admin listener).
//!
//! `start` binds (port 0 works: the bound addresses are returned), spawns the
//! proxy and admin accept loops, and returns a `Running` handle whose
//! `shutdown` stops them. Tests and `tether demo` use it the same way `main` does.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::accept::{task_ended, AcceptErrors};
use crate::admin;
use crate::config::Config;
use crate::conn::{self, BodyBudget, ConnSettings};
use crate::metrics::Metrics;
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
    crate::panic::install_hook();
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
            let limits = admin::Limits {
                max_header_bytes: config.limits.max_header_bytes,
                header_read_timeout: config.timeouts.header_read,
            };
            let accept = AcceptErrors::new(metrics.clone(), "admin");
            tasks.spawn(admin::serve(
                admin_listener,
                service,
                limits,
                accept,
                metrics.clone(),
                rx.clone(),
            ));
            Some(admin_addr)
        }
        None => None,
    };

    let budget = BodyBudget::new(
        config.limits.max_held_body_bytes,
        metrics.held_body_bytes.clone(),
        metrics.body_budget_waits.clone(),
    );
    let settings = Arc::new(ConnSettings {
        header_read_timeout: config.timeouts.header_read,
        max_header_bytes: config.limits.max_header_bytes,
        max_request_body: config.limits.max_request_body,
        request_body_timeout: config.timeouts.request_body,
        budget,
    });
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

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    settings: Arc<ConnSettings>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut sweep = tokio::time::interval(proxy.upstream().sweep_interval());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut errors = AcceptErrors::new(metrics.clone(), "proxy");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::debug_span!("conn", %peer);
                    let task = conn::serve(stream, peer, proxy.clone(), metrics.clone(), settings.clone());
                    conns.spawn(task.instrument(span));
                }
                Err(e) => errors.failed(&e).await,
            },
            Some(joined) = conns.join_next(), if !conns.is_empty() => task_ended(joined, &metrics),
            _ = sweep.tick() => proxy.upstream().sweep(proxy.pool().backends()),
            _ = shutdown.changed() => break,
        }
    }
    conns.shutdown().await;
}
