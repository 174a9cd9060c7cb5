//! Pools and routes as the file writes them: `default` (the top-level
//! `backends`) and `[pools.NAME]`, each validated, then `[[routes]]` checked
//! against them. `docs/config.md` "Pools and routes" documents every key.

use std::path::PathBuf;

use super::{health, BackendAddr, ConfigError};
use crate::config::file::{BackendFile, HealthFile, RouteFile};
use crate::pool::discovery::{self, Source};
use crate::pool::health::HealthSettings;
use crate::pool::{Balance, Failover, Protocol};

/// The pool the top-level `backends` (and `--backend` flags) make.
pub const DEFAULT_POOL: &str = "default";

/// A pool: its backends (own and discovered), health checks and balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    /// Its own `http://` backends.
    pub backends: Vec<BackendAddr>,
    /// `dns://`, `srv://` and (for `default`) the backends file.
    pub sources: Vec<Source>,
    pub health: HealthSettings,
    pub balance: Balance,
    /// What a request of a session whose owner is gone gets.
    pub failover: Failover,
}

/// A route: what a request must carry to go to `pool`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub pool: String,
    pub validate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_affinity: Option<SoftKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_factor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
}

/// What soft affinity hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoftKey {
    /// A request header's value (a tenant id an auth proxy sets).
    Header(String),
    /// The whole `Authorization` value.
    Authorization,
    /// A cookie's value.
    Cookie(String),
}

impl SoftKey {
    fn parse(text: &str) -> Option<SoftKey> {
        let token = |v: &str| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        match text.split_once(':') {
            None if text == "authorization" => Some(SoftKey::Authorization),
            Some(("header", name)) if token(name) => {
                Some(SoftKey::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if token(name) => Some(SoftKey::Cookie(name.to_owned())),
            _ => None,
        }
    }
}

impl serde::Serialize for SoftKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SoftKey::Header(name) => s.serialize_str(&format!("header:{name}")),
            SoftKey::Authorization => s.serialize_str("authorization"),
            SoftKey::Cookie(name) => s.serialize_str(&format!("cookie:{name}")),
        }
    }
}

impl RouteConfig {
    pub fn catch_all(pool: String) -> Self {
        RouteConfig {
            path_prefix: None,
            host: None,
            method: None,
            name: None,
            pool,
            validate: true,
            soft_affinity: None,
            load_factor: None,
            sticky_cookie: None,
        }
    }
}

/// What of the file makes the pools and routes.
pub(super) struct Parts<'a> {
    pub backends: &'a [BackendFile],
    pub pools: std::collections::BTreeMap<String, crate::config::file::PoolFile>,
    pub routes: Vec<RouteFile>,
    pub health: &'a HealthFile,
    pub balance: Option<Balance>,
    pub failover: Option<Failover>,
    /// The backends file: `default`'s.
    pub backends_file: Option<PathBuf>,
}

/// The pools and routes, validated.
pub(super) fn build(file: Parts<'_>) -> Result<(Vec<PoolConfig>, Vec<RouteConfig>), ConfigError> {
    let (mut backends, mut sources) = backend_list(file.backends, "backends")?;
    if let Some(path) = file.backends_file {
        sources.push(Source::File(path));
    }
    let health_defaults = file.health.clone();
    let balance = file.balance.unwrap_or_default();
    let failover = file.failover.unwrap_or_default();
    let mut pools = Vec::new();
    if !backends.is_empty() || !sources.is_empty() {
        if file.pools.contains_key(DEFAULT_POOL) {
            return Err(ConfigError::new(
                "pools.default",
                "the top-level backends are the default pool: give one or the other",
            ));
        }
        pools.push(PoolConfig {
            name: DEFAULT_POOL.into(),
            backends: std::mem::take(&mut backends),
            sources: std::mem::take(&mut sources),
            health: health(health_defaults.clone(), "health")?,
            balance,
            failover,
        });
    }
    for (name, pool) in file.pools {
        let key = format!("pools.{name}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new(
                key,
                "a pool name is 1-64 letters, digits, '-' or '_'",
            ));
        }
        let (backends, sources) = backend_list(&pool.backends, &format!("{key}.backends"))?;
        if backends.is_empty() && sources.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.backends"),
                "a pool needs at least one backend",
            ));
        }
        pools.push(PoolConfig {
            health: health(pool.health.over(&health_defaults), &format!("{key}.health"))?,
            balance: pool.balance.unwrap_or(balance),
            failover: pool.failover.unwrap_or(failover),
            name,
            backends,
            sources,
        });
    }
    if pools.is_empty() {
        return Err(ConfigError::new(
            "backends",
            "at least one backend is needed (--backend http://host:port, dns://NAME:PORT, \
             srv://NAME or --backends-file)",
        ));
    }
    // A backend is in one pool: its sessions and tasks follow one health
    // state, and its metrics are one set.
    for (i, pool) in pools.iter().enumerate() {
        for b in &pool.backends {
            let id = b.authority.as_str().to_ascii_lowercase();
            let other = pools[..i].iter().find(|p| {
                p.backends
                    .iter()
                    .any(|o| o.authority.as_str().eq_ignore_ascii_case(&id))
            });
            if let Some(other) = other {
                return Err(ConfigError::new(
                    format!("pools.{}.backends", pool.name),
                    format!(
                        "http://{id} is in pool '{}' already: a backend is in one pool",
                        other.name
                    ),
                ));
            }
        }
    }
    let routes = routes(file.routes, &pools)?;
    Ok((pools, routes))
}

/// `backends = [...]` (at the top or in a pool): `http://` entries and
/// discovery sources; `key` names the list in errors.
fn backend_list(
    list: &[BackendFile],
    key: &str,
) -> Result<(Vec<BackendAddr>, Vec<Source>), ConfigError> {
    let mut backends = Vec::new();
    let mut sources = Vec::new();
    for (i, spec) in list.iter().enumerate() {
        let (url, drain, protocol) = match spec {
            BackendFile::Url(url) => (url.as_str(), false, None),
            BackendFile::Table(t) => (t.url.as_str(), t.drain, t.protocol.as_deref()),
        };
        let key = || format!("{key}[{i}]");
        let protocol = match protocol {
            None => Protocol::Http1,
            Some(text) => Protocol::parse(text).ok_or_else(|| {
                ConfigError::new(
                    format!("{}.protocol", key()),
                    format!("'{text}': must be \"http/1.1\" or \"h2\""),
                )
            })?,
        };
        match Source::parse(url) {
            Some(Ok(_)) if drain => {
                return Err(ConfigError::new(
                    key(),
                    "drain applies to http:// backends (drain discovered ones with the admin API)",
                ));
            }
            Some(Ok(source)) => sources.push(source.with_protocol(protocol)),
            Some(Err(e)) => return Err(ConfigError::new(key(), e)),
            None => {
                let entry = discovery::parse_http(url).map_err(|e| ConfigError::new(key(), e))?;
                backends.push(BackendAddr {
                    scheme: entry.scheme,
                    authority: entry.authority,
                    drain,
                    protocol,
                });
            }
        }
    }
    Ok((backends, sources))
}

/// The routes, checked against the pools. None given: one catch-all route to
/// the only pool, or to `default`.
fn routes(file: Vec<RouteFile>, pools: &[PoolConfig]) -> Result<Vec<RouteConfig>, ConfigError> {
    if file.is_empty() {
        let pool =
            match pools {
                [only] => only.name.clone(),
                _ if pools.iter().any(|p| p.name == DEFAULT_POOL) => DEFAULT_POOL.into(),
                _ => return Err(ConfigError::new(
                    "routes",
                    "several pools and no default one: [[routes]] must say which requests go where",
                )),
            };
        return Ok(vec![RouteConfig::catch_all(pool)]);
    }
    let mut routes = Vec::new();
    for (i, r) in file.into_iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        if !pools.iter().any(|p| p.name == r.pool) {
            let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
            return Err(ConfigError::new(
                key("pool"),
                format!("no pool '{}' (pools: {})", r.pool, names.join(", ")),
            ));
        }
        let visible = |v: &Option<String>| {
            let ok = |v: &str| {
                !v.is_empty() && v.len() <= 1024 && v.bytes().all(|b| b.is_ascii_graphic())
            };
            v.as_deref().map_or(true, ok)
        };
        for (field, value) in [("host", &r.host), ("method", &r.method), ("name", &r.name)] {
            if !visible(value) {
                return Err(ConfigError::new(
                    key(field),
                    "must be visible ASCII, not empty",
                ));
            }
        }
        if r.path_prefix
            .as_deref()
            .is_some_and(|p| !p.starts_with('/'))
            || !visible(&r.path_prefix)
        {
            return Err(ConfigError::new(key("path_prefix"), "must begin with /"));
        }
        let soft_affinity = match &r.soft_affinity {
            None => None,
            Some(text) => Some(SoftKey::parse(text).ok_or_else(|| {
                ConfigError::new(
                    key("soft_affinity"),
                    "must be header:NAME, authorization or cookie:NAME",
                )
            })?),
        };
        match r.load_factor {
            Some(_) if soft_affinity.is_none() => {
                return Err(ConfigError::new(
                    key("load_factor"),
                    "applies with soft_affinity",
                ))
            }
            Some(f) if !(1.0..=100.0).contains(&f) => {
                return Err(ConfigError::new(key("load_factor"), "must be 1.0 to 100"))
            }
            _ => {}
        }
        let cookie_ok = |c: &str| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if r.sticky_cookie.as_deref().is_some_and(|c| !cookie_ok(c)) {
            return Err(ConfigError::new(
                key("sticky_cookie"),
                "a cookie name is 1-64 letters, digits, '-' or '_'",
            ));
        }
        routes.push(RouteConfig {
            path_prefix: r.path_prefix,
            host: r.host.map(|h| h.to_ascii_lowercase()),
            method: r.method,
            name: r.name,
            pool: r.pool,
            validate: r.validate.unwrap_or(true),
            load_factor: soft_affinity
                .as_ref()
                .map(|_| r.load_factor.unwrap_or(1.25)),
            soft_affinity,
            sticky_cookie: r.sticky_cookie,
        });
    }
    Ok(routes)
}

/// A pool in the view.
#[derive(Debug, serde::Serialize)]
pub struct PoolView<'a> {
    pub backends: Vec<String>,
    pub balance: Balance,
    pub failover: Failover,
    pub health: &'a HealthSettings,
}

impl PoolConfig {
    /// Its backends and sources as the view shows them.
    pub fn listed(&self) -> Vec<String> {
        let mut backends: Vec<String> = self
            .backends
            .iter()
            .map(|b| {
                let mut url = format!("{}://{}", b.scheme, b.authority);
                if b.protocol == Protocol::H2 {
                    url.push_str(" (h2)");
                }
                match b.drain {
                    true => format!("{url} (drain)"),
                    false => url,
                }
            })
            .collect();
        backends.extend(self.sources.iter().map(|s| match s {
            Source::File(_) => format!("backends file {}", s.label().trim_start_matches("file:")),
            _ if s.protocol() == Protocol::H2 => format!("{} (h2)", s.label()),
            _ => s.label(),
        }));
        backends
    }
}
