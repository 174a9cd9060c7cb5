//! What a reload may change on the request path: built from a config,
//! keeping from the one it replaces the state that must outlive a reload
//! (the response cache, the per-caller counts, the session store).

use std::sync::Arc;

use crate::affinity::{Affinity, SessionKey};
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::pool::Named;
use crate::route::Routes;
use crate::trust::{Bind, CallerLimits, Origins};

/// What the request path needs from the configuration.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) preserve_host: bool,
    pub(super) forwarded: bool,
    pub(super) stream_idle: Option<std::time::Duration>,
    pub(super) sse_scan_bytes: usize,
    pub(super) access_log: bool,
}

/// What a reload may change on the request path, swapped whole.
pub struct Live {
    pub(super) affinity: Affinity,
    pub(super) settings: Settings,
    /// `[sessions] bind`: whose a session is.
    pub(super) bind: Bind,
    /// `allowed_origins` (empty: no check).
    pub(super) origins: Origins,
    /// `[limits.per_caller]`, when set (kept across a reload that leaves it as it was).
    pub(super) callers: Option<Arc<CallerLimits>>,
    /// `[sessions] store`, when not `sealed` (kept across a reload that leaves it as it was).
    pub(super) store: Option<Arc<crate::affinity::store::Store>>,
    /// Every pool: those the config names, then any a reload removed that
    /// still drains (their sessions still reach their owners).
    pub(super) pools: Vec<Arc<Named>>,
    /// Indices into `pools`.
    pub(super) routes: Routes,
    /// `[cache]`, when enabled (kept across a reload that leaves it as it was).
    pub(super) cache: Option<Arc<crate::modern::cache::Cache>>,
    /// The pools with `failover = "reinitialize"`.
    pub(super) failover: Vec<Arc<str>>,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            affinity: Affinity::new(&[SessionKey::generate()]),
            settings: Settings {
                preserve_host: true,
                forwarded: false,
                stream_idle: None,
                sse_scan_bytes: 0,
                access_log: false,
            },
            bind: Bind::None,
            origins: Origins::default(),
            callers: None,
            store: None,
            pools: Vec::new(),
            routes: Routes::default(),
            cache: None,
            failover: Vec::new(),
        }
    }
}

impl Live {
    /// Whether the pool `name` re-initializes a session whose owner is gone.
    pub(super) fn fails_over(&self, name: &str) -> bool {
        self.failover.iter().any(|p| **p == *name)
    }

    /// What `config` says, keeping from `old` the state a reload that
    /// leaves its settings as they were must not lose (the response cache,
    /// the per-caller counts).
    pub(super) fn new(
        config: &Config,
        pools: Vec<Arc<Named>>,
        old: &Live,
        metrics: &Metrics,
    ) -> Live {
        let names: Vec<&str> = pools.iter().map(|p| &*p.name).collect();
        let routes = Routes::new(&config.routes, &names, metrics);
        let cache = match &old.cache {
            Some(c) if config.cache.enabled && *c.settings() == config.cache => Some(c.clone()),
            _ => config
                .cache
                .enabled
                .then(|| Arc::new(crate::modern::cache::Cache::new(config.cache.clone()))),
        };
        let callers = match &old.callers {
            Some(c) if *c.settings() == config.per_caller => Some(c.clone()),
            _ => config
                .per_caller
                .enabled()
                .then(|| CallerLimits::new(config.per_caller)),
        };
        let store = super::stored::store_for(&config.sessions, old.store.as_ref());
        let opens = |key: &SessionKey| {
            let label = metrics::KeyLabel { key: key.id_hex() };
            metrics.token_opens.get_or_create(&label).clone()
        };
        let failover = config
            .pools
            .iter()
            .filter(|p| p.failover == crate::config::Failover::Reinitialize)
            .map(|p| Arc::from(p.name.as_str()))
            .collect();
        Live {
            failover,
            cache,
            callers,
            store,
            pools,
            routes,
            affinity: Affinity::counted(&config.keys, opens),
            bind: config.sessions.bind.clone(),
            origins: config.allowed_origins.clone(),
            settings: Settings {
                preserve_host: config.preserve_host,
                forwarded: config.forwarded,
                stream_idle: config.timeouts.stream_idle,
                sse_scan_bytes: config.limits.sse_scan_bytes,
                access_log: config.log.access,
            },
        }
    }
}
