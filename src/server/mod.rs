//! Stage 1: the listeners. Accepts client connections (within
//! `limits.max_connections`) and gives each to `conn::serve`; runs the
//! background work (idle upstream connections closed, the fleet's tick);
//! stops gracefully. Failed accepts are handled by `accept` (shared with the
//! admin listener).
//!
//! `start` binds (port 0 works: the bound addresses are returned), spawns the
//! proxy and admin accept loops, and returns a `Running` handle. Tests and
//! `tether demo` use it the same way `main` does; `main` adds the signals
//! (`Running::serve_signals`).

mod signals;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::accept::{task_ended, AcceptErrors};
use crate::admin;
use crate::config::Config;
use crate::conn;
use crate::control::{Control, ReloadSource};
use crate::downstream::{BodyBudget, ConnSettings};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::Proxy;

/// How the accept loops are told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// Close the listeners, let requests finish, end streams after the grace.
    Graceful,
    /// Close everything now.
    Now,
}

/// Longest wait, once held streams were told to end, for them to write their end.
const ENDING_WAIT: Duration = Duration::from_secs(2);

/// A running Tether: its bound addresses and the means to stop it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub proxy: Arc<Proxy>,
    pub control: Arc<Control>,
    stop: watch::Sender<Stop>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting and closes every connection at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(Stop::Now);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Resolves when `signal` does, then shuts down at once.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Begins a graceful shutdown: readiness fails, the listeners close,
    /// requests in flight finish, held streams end after `shutdown_grace`.
    pub fn begin_shutdown(&self) {
        self.control.lifecycle.begin_closing();
        self.metrics.shutting_down.set(1);
        let _ = self.stop.send(Stop::Graceful);
    }

    /// Ends a graceful shutdown early: every connection closes now.
    pub fn shutdown_now(&self) {
        let _ = self.stop.send(Stop::Now);
    }

    /// Waits until every listener and connection is done.
    pub async fn finished(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds the listeners and starts serving (no reload source: `POST /reload`
/// answers that there is no file).
pub async fn start(config: Config) -> std::io::Result<Running> {
    start_with(config, None).await
}

/// Binds the listeners and starts serving; reloads read `source`.
pub async fn start_with(config: Config, source: Option<ReloadSource>) -> std::io::Result<Running> {
    crate::panic::install_hook();
    if config.backend_tls.settings().insecure_skip_verify {
        tracing::warn!("tls.insecure_skip_verify: https:// backends are not verified; anyone on the path can impersonate them");
    }
    let listener = TcpListener::bind(config.listen).await?;
    let proxy_addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let proxy = Arc::new(Proxy::new(&config, metrics.clone()));
    let lifecycle = Arc::new(Lifecycle::default());
    let (stop, rx) = watch::channel(Stop::Running);
    let mut tasks = JoinSet::new();
    let budget = BodyBudget::new(
        config.limits.max_held_body_bytes,
        metrics.held_body_bytes.clone(),
        metrics.body_budget_waits.clone(),
    );
    let settings = ConnSettings {
        header_read_timeout: config.timeouts.header_read,
        max_header_bytes: config.limits.max_header_bytes,
        max_request_body: config.limits.max_request_body,
        request_body_timeout: config.timeouts.request_body,
        budget,
        lifecycle: lifecycle.clone(),
        proxy_protocol: config.proxy_protocol,
        tls: config.tls.clone(),
        http2: config.http2.clone(),
    };
    let admin = config.admin;
    let limits = admin::Limits {
        max_header_bytes: config.limits.max_header_bytes,
        header_read_timeout: config.timeouts.header_read,
    };
    let control = Control::new(
        config,
        proxy.clone(),
        metrics.clone(),
        lifecycle,
        settings,
        source,
    );

    // The admin listener stays up during a graceful shutdown (`/readyz`
    // answers 503), and closes once the proxy listener's connections are done.
    let (admin_stop, admin_rx) = watch::channel(false);
    let admin_addr = match admin {
        Some(addr) => {
            let admin_listener = TcpListener::bind(addr).await?;
            let admin_addr = admin_listener.local_addr()?;
            let service = Arc::new(admin::Admin::new(registry, control.clone()));
            let accept = AcceptErrors::new(metrics.clone(), "admin");
            tasks.spawn(admin::serve(
                admin_listener,
                service,
                limits,
                accept,
                metrics.clone(),
                admin_rx,
            ));
            Some(admin_addr)
        }
        None => None,
    };
    let proxy_loop = accept_loop(listener, control.clone(), rx.clone());
    tasks.spawn(async move {
        proxy_loop.await;
        let _ = admin_stop.send(true);
    });
    let mut running = rx.clone();
    tasks.spawn(crate::memory::give_back(async move {
        let _ = running.wait_for(|s| *s != Stop::Running).await;
    }));
    tasks.spawn(background(control.clone(), rx));
    Ok(Running {
        proxy_addr,
        admin_addr,
        metrics,
        proxy,
        control,
        stop,
        tasks,
    })
}

/// Once a second: the fleet's tick (draining backends removed when done);
/// every `tls.watch_interval`, the certificate files checked for a change.
async fn background(control: Arc<Control>, mut stop: watch::Receiver<Stop>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut certs_checked = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                for named in control.proxy.all_pools() {
                    named.fleet.tick(now);
                }
                let settings = control.conn_settings.load();
                let watch = settings.tls.as_ref().and_then(|t| Some((t, t.settings().watch_interval?)));
                if let Some((tls, every)) = watch {
                    if now.duration_since(certs_checked) >= every {
                        certs_checked = now;
                        watch_certificates(tls, &control.metrics);
                    }
                }
            }
            _ = stop.wait_for(|s| *s != Stop::Running) => return,
        }
    }
}

/// Loads the certificates again if their files changed: new connections
/// get them, open ones keep theirs.
fn watch_certificates(tls: &crate::tls::Terminator, metrics: &crate::metrics::Metrics) {
    let outcome = match tls.refresh_if_changed() {
        None => return,
        Some(Ok(())) => {
            tracing::info!("TLS certificate files changed: loaded for new connections");
            "ok"
        }
        Some(Err(e)) => {
            tracing::error!(key = e.key, problem = %e.problem, "TLS certificate files changed but do not load; the ones in force stay");
            "rejected"
        }
    };
    metrics
        .tls_certificate_reloads
        .get_or_create(&crate::metrics::Outcome { outcome })
        .inc();
}

async fn accept_loop(
    listener: TcpListener,
    control: Arc<Control>,
    mut stop: watch::Receiver<Stop>,
) {
    let proxy = control.proxy.clone();
    let metrics = control.metrics.clone();
    let mut conns = JoinSet::new();
    let mut sweep = tokio::time::interval(proxy.upstream().sweep_interval());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut errors = AcceptErrors::new(metrics.clone(), "proxy");
    let limit = control.conn_limit.clone();
    let mut slot = None;
    loop {
        if slot.is_none() {
            slot = limit.try_take();
            if slot.is_none() {
                metrics.connection_limit_waits.inc();
                tracing::debug!(
                    open = limit.open(),
                    "connection limit reached: accepting waits"
                );
            }
        }
        tokio::select! {
            () = limit.changed(), if slot.is_none() => {}
            accepted = listener.accept(), if slot.is_some() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::debug_span!("conn", %peer);
                    let settings = control.conn_settings.load_full();
                    let task = conn::serve(stream, peer, proxy.clone(), metrics.clone(), settings);
                    let held = slot.take();
                    conns.spawn(async move {
                        task.await;
                        drop(held);
                    }.instrument(span));
                }
                Err(e) => errors.failed(&e).await,
            },
            Some(joined) = conns.join_next(), if !conns.is_empty() => task_ended(joined, &metrics),
            _ = sweep.tick() => {
                for named in proxy.all_pools() {
                    proxy.upstream().sweep(named.fleet.pool().backends());
                }
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if *stop.borrow() == Stop::Graceful {
        let grace = control.config().shutdown_grace;
        tracing::info!(
            connections = conns.len(),
            ?grace,
            "shutting down: listener closed, requests finishing"
        );
        let mut deadline = Instant::now() + grace;
        let mut ending = false;
        loop {
            tokio::select! {
                joined = conns.join_next() => match joined {
                    Some(joined) => task_ended(joined, &metrics),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if ending {
                        break;
                    }
                    tracing::info!(connections = conns.len(), "shutdown grace over: held streams end");
                    control.lifecycle.begin_ending();
                    ending = true;
                    deadline = Instant::now() + ENDING_WAIT;
                }
                _ = stop.wait_for(|s| *s == Stop::Now) => break,
            }
        }
    }
    if !conns.is_empty() {
        tracing::info!(connections = conns.len(), "closing the connections left");
    }
    conns.shutdown().await;
}
