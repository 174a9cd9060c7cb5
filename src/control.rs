//! Operations on a running Tether: reload, drain, what the admin API shows,
//! readiness. Shared by the signal handlers (`server`) and the admin API, so
//! neither imports the other.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde_json::json;
use tokio::task::AbortHandle;

use crate::accept::limit::ConnLimit;
use crate::config::{Config, ConfigError, Overrides};
use crate::downstream::ConnSettings;
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, Metrics};
use crate::pool::{discovery, State};
use crate::proxy::Proxy;

/// How the environment is read (injected, so tests need not set it).
pub type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where a reload reads the config from: the same file and flags as at start.
pub struct ReloadSource {
    pub path: PathBuf,
    pub overrides: Overrides,
    pub env: Env,
}

pub struct Control {
    pub proxy: Arc<Proxy>,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Arc<Lifecycle>,
    config: ArcSwap<Config>,
    source: Option<ReloadSource>,
    /// What each new client connection is held to.
    pub conn_settings: ArcSwap<ConnSettings>,
    /// Client connections open and allowed (`limits.max_connections`).
    pub conn_limit: Arc<ConnLimit>,
    discovery: Mutex<Vec<AbortHandle>>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

impl Control {
    pub fn new(
        config: Config,
        proxy: Arc<Proxy>,
        metrics: Arc<Metrics>,
        lifecycle: Arc<Lifecycle>,
        conn_settings: ConnSettings,
        source: Option<ReloadSource>,
    ) -> Arc<Control> {
        metrics
            .connections_limit
            .set(config.limits.max_connections as i64);
        let conn_limit = ConnLimit::new(config.limits.max_connections);
        let control = Arc::new(Control {
            proxy,
            metrics,
            lifecycle,
            config: ArcSwap::from_pointee(config),
            source,
            conn_settings: ArcSwap::from_pointee(conn_settings),
            conn_limit,
            discovery: Mutex::new(Vec::new()),
            reloading: Mutex::new(()),
        });
        control.start_discovery(&control.config());
        control
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    fn start_discovery(&self, config: &Config) {
        let pools = self.proxy.pools();
        let mut tasks = Vec::new();
        for pool in &config.pools {
            let Some(named) = pools.iter().find(|n| *n.name == *pool.name) else {
                continue;
            };
            tasks.extend(discovery::spawn(
                &pool.sources,
                &config.discovery,
                named.fleet.clone(),
                self.metrics.clone(),
            ));
        }
        let old = std::mem::replace(&mut *lock(&self.discovery), tasks);
        for task in old {
            task.abort();
        }
    }

    /// Reads the config file again and applies it; on any error the config
    /// in force stays, and the error (one line, naming the key) is returned.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let _one = lock(&self.reloading);
        let Some(source) = &self.source else {
            return Err(ConfigError {
                key: "reload".into(),
                problem: "Tether was started without --config: there is no file to read again"
                    .into(),
            });
        };
        let outcome = |o| metrics::Outcome { outcome: o };
        let mut new = match Config::load(Some(&source.path), source.overrides.clone(), &*source.env)
        {
            Ok(new) => new,
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&outcome("rejected"))
                    .inc();
                tracing::error!(error = %e, "reload rejected; the config in force stays");
                return Err(e);
            }
        };
        let old = self.config();
        if new.key_origin == crate::config::KeyOrigin::Generated {
            // No key configured: the random one made at start stays (a new
            // random one would orphan every session).
            new.keys = old.keys.clone();
        }
        for (key, changed) in [
            ("listen", new.listen != old.listen),
            ("admin", new.admin != old.admin),
            ("threads", new.threads != old.threads),
            (
                "limits.max_held_body_bytes",
                new.limits.max_held_body_bytes != old.limits.max_held_body_bytes,
            ),
        ] {
            if changed {
                tracing::warn!(key, "changed in the file; it takes a restart to apply");
            }
        }
        self.proxy.reconfigure(&new);
        let old_settings = self.conn_settings.load_full();
        self.conn_settings.store(Arc::new(ConnSettings {
            header_read_timeout: new.timeouts.header_read,
            max_header_bytes: new.limits.max_header_bytes,
            max_request_body: new.limits.max_request_body,
            request_body_timeout: new.timeouts.request_body,
            budget: old_settings.budget.clone(),
            lifecycle: self.lifecycle.clone(),
            proxy_protocol: new.proxy_protocol,
            tls: new.tls.clone(),
            http2: new.http2.clone(),
        }));
        self.conn_limit.set(new.limits.max_connections);
        self.metrics
            .connections_limit
            .set(new.limits.max_connections as i64);
        let sources = |c: &Config| -> Vec<(String, Vec<discovery::Source>)> {
            c.pools
                .iter()
                .map(|p| (p.name.clone(), p.sources.clone()))
                .collect()
        };
        if sources(&new) != sources(&old) || new.discovery != old.discovery {
            self.start_discovery(&new);
        }
        self.config.store(Arc::new(new));
        self.metrics.reloads.get_or_create(&outcome("ok")).inc();
        tracing::info!("config reloaded");
        Ok(())
    }

    /// Ready: not shutting down, and some backend takes new sessions: an
    /// active one, or (no backend active) an unhealthy one that panic mode
    /// gives sessions to. Failing readiness when every backend is merely
    /// unhealthy would take every Tether replica out of its Service at once,
    /// the very black hole panic mode exists to avoid.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.lifecycle.closing() {
            return Err("shutting down");
        }
        let takes_new = self.proxy.pools().iter().any(|named| {
            let pool = named.fleet.pool();
            let backends = pool.backends();
            backends.iter().any(|b| b.state() == State::Active)
                || backends.iter().any(|b| b.takes_new_in_panic())
        });
        match takes_new {
            true => Ok(()),
            false => Err("no backend takes new sessions"),
        }
    }

    /// Drains (or undrains) the backend `id` in every pool it is in; its
    /// state in the first, `None` if no pool has it.
    pub fn drain(&self, id: &str, on: bool) -> Option<serde_json::Value> {
        let mut shown = None;
        for named in self.proxy.pools() {
            if named.fleet.set_admin_drain(id, on) && shown.is_none() {
                let pool = named.fleet.pool();
                shown = pool
                    .get(id.as_bytes())
                    .map(|b| backend_json(b, &named.name));
            }
        }
        shown
    }

    /// `GET /backends`: every backend of every pool.
    pub fn backends(&self) -> serde_json::Value {
        let mut list = Vec::new();
        for named in self.proxy.pools() {
            let pool = named.fleet.pool();
            list.extend(pool.backends().iter().map(|b| backend_json(b, &named.name)));
        }
        json!({ "backends": list })
    }

    /// `GET /pools`: each pool, its balance, health check and backends by state.
    pub fn pools(&self) -> serde_json::Value {
        let config = self.config();
        let list: Vec<_> = self
            .shown_pools()
            .iter()
            .map(|named| {
                let pool = named.fleet.pool();
                let mut states = serde_json::Map::new();
                for s in State::ALL {
                    let n = pool.backends().iter().filter(|b| b.state() == s).count();
                    states.insert(s.as_str().into(), n.into());
                }
                let configured = config.pool(&named.name);
                json!({
                    "name": &*named.name,
                    "configured": configured.is_some(),
                    "balance": configured.map(|p| p.balance),
                    "failover": configured.map(|p| p.failover),
                    "health": configured.map(|p| p.health.check),
                    "sources": configured.map(|p| p.listed()).unwrap_or_default(),
                    "backends": pool.backends().iter().map(|b| &*b.id).collect::<Vec<_>>(),
                    "states": states,
                })
            })
            .collect();
        json!({ "pools": list })
    }

    /// The pools the admin API shows: those configured, and a removed one
    /// until its last backend has left.
    pub(crate) fn shown_pools(&self) -> Vec<Arc<crate::pool::Named>> {
        let config = self.config();
        let mut pools = self.proxy.pools();
        pools.retain(|named| {
            config.pool(&named.name).is_some() || !named.fleet.pool().backends().is_empty()
        });
        pools
    }

    /// `GET /routes`: the routes in force, in order.
    pub fn routes(&self) -> serde_json::Value {
        json!({ "routes": crate::route::describe(&self.config().routes) })
    }

    /// `GET /config`: the config in force, secrets redacted.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(self.config().view())
            .unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }

    /// The admin token in force, if any.
    pub fn admin_token(&self) -> Option<String> {
        self.config().admin_token.clone()
    }
}

/// One backend as `GET /backends` (and `GET /status`) shows it.
pub(crate) fn backend_json(b: &crate::pool::Backend, pool: &str) -> serde_json::Value {
    json!({
        "address": &*b.id,
        "pool": pool,
        "source": &*b.source(),
        "state": b.state().as_str(),
        "protocol": b.protocol().as_str(),
        "health": b.health(),
        "drain": {
            "admin": b.drain_flags() & crate::pool::drain::ADMIN != 0,
            "config": b.drain_flags() & crate::pool::drain::CONFIG != 0,
            "gone": b.drain_flags() & crate::pool::drain::GONE != 0,
        },
        "outstanding": b.outstanding(),
        "streams": b.streams(),
        "sessions_created": b.sessions_created(),
        "sessions_orphaned": b.sessions_orphaned(),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
