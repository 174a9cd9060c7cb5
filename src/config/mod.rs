//! Configuration: file -> overrides (flags, environment) -> `validate()` -> `Config`.
//!
//! Every field has a default, so Tether runs with no file at all. The file is
//! TOML; unknown keys are errors. Durations are humantime strings ("30s",
//! "5m"). `docs/config.md` documents every key: keep it in step with this file.

mod file;
mod pools;
mod trust;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};

pub use crate::pool::Failover;
pub use file::*;
pub use pools::{PoolConfig, PoolView, RouteConfig, SoftKey, DEFAULT_POOL};
pub use trust::{parse_keys, SessionSettings};

use crate::affinity::SessionKey;
pub use crate::modern::cache::CacheSettings;
use crate::pool::discovery::DiscoverySettings;
use crate::pool::fleet::{DrainSettings, Entry};
use crate::pool::health::HealthSettings;
use crate::tls::backend::{BackendSettings, BackendTls};
use crate::tls::{CertFiles, ServerSettings, Terminator};
use crate::trust::{CallerSettings, Origins};

/// The environment variable holding a base64 session key.
pub const KEY_ENV: &str = "TETHER_SESSION_KEY";
/// The environment variable that overrides `threads`.
pub const THREADS_ENV: &str = "TETHER_THREADS";

/// What the command line (and environment) may override.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// When non-empty, replaces the file's list.
    pub backends: Vec<String>,
    pub session_key_file: Option<PathBuf>,
    /// `--session-store`.
    pub session_store: Option<String>,
    pub threads: Option<usize>,
    pub backends_file: Option<PathBuf>,
    pub discovery_interval: Option<Duration>,
    pub resolver: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub backend_ca: Option<PathBuf>,
}

/// A configuration error: which key, what is wrong. Printed as one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.to_string(),
        }
    }
}

/// Where the session key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    File,
    Env,
    /// Made up at start: sessions die with the process and do not span replicas.
    Generated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `drain = true`: no new sessions.
    pub drain: bool,
    /// `protocol = "h2"`: HTTP/2 to it.
    pub protocol: crate::pool::Protocol,
}

impl BackendAddr {
    pub fn entry(&self) -> Entry {
        Entry {
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            drain: self.drain,
            protocol: self.protocol,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    pub max_request_body: usize,
    pub max_header_bytes: usize,
    pub sse_scan_bytes: usize,
    pub max_held_body_bytes: usize,
    /// 0: no limit.
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub access: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Timeouts {
    #[serde(with = "humantime_serde")]
    pub header_read: Duration,
    #[serde(with = "humantime_serde")]
    pub request_body: Duration,
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    #[serde(with = "humantime_serde")]
    pub response: Duration,
    /// `None`: off.
    #[serde(with = "humantime_serde")]
    pub stream_idle: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub upstream_idle: Duration,
}

/// `[http2]` as configured (served by `crate::http2`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Http2Settings {
    /// Offer `h2` in ALPN on a TLS listener.
    pub enabled: bool,
    /// Accept HTTP/2 with prior knowledge on a plain listener (the preface
    /// tells it from HTTP/1.1 on the same port).
    pub h2c: bool,
    pub max_concurrent_streams: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            enabled: true,
            h2c: false,
            max_concurrent_streams: 100,
        }
    }
}

/// The validated configuration the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// `Authorization: Bearer` token the admin API's POSTs need.
    pub admin_token: Option<String>,
    /// `admin.allowed_hosts`, lower case: the names (besides IP literals
    /// and `localhost`) a browser may reach the admin listener by.
    pub admin_allowed_hosts: Vec<String>,
    /// The pools: `default` (the top-level `backends`) first, then
    /// `[pools.NAME]` by name.
    pub pools: Vec<PoolConfig>,
    /// In order; the first that matches picks a request's pool.
    pub routes: Vec<RouteConfig>,
    pub discovery: DiscoverySettings,
    pub drain: DrainSettings,
    pub cache: CacheSettings,
    pub shutdown_grace: Duration,
    pub log: LogSettings,
    /// The session keys in force: the first seals, every one opens.
    pub keys: Vec<SessionKey>,
    pub key_origin: KeyOrigin,
    pub sessions: SessionSettings,
    /// Origins a browser page may call from (empty: no check).
    pub allowed_origins: Origins,
    /// `[limits.per_caller]`.
    pub per_caller: CallerSettings,
    pub preserve_host: bool,
    pub proxy_protocol: bool,
    /// Send an RFC 7239 `Forwarded` field to backends.
    pub forwarded: bool,
    /// TLS on the proxy listener; `None`: plain HTTP.
    pub tls: Option<Arc<Terminator>>,
    /// How `https://` backends are reached.
    pub backend_tls: Arc<BackendTls>,
    pub http2: Http2Settings,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Runtime threads; `None`: one per available CPU.
    pub threads: Option<usize>,
}

impl Config {
    /// Reads the file (if any), applies overrides and the environment, validates.
    pub fn load(
        path: Option<&Path>,
        overrides: Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new(path.display().to_string(), e))?;
                parse_file(&text, &path.display().to_string())?
            }
            None => FileConfig::default(),
        };
        Config::from_parts(file, overrides, env)
    }

    /// The pipeline without file access, for tests and embedding.
    pub fn from_parts(
        mut file: FileConfig,
        overrides: Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let tls_files = (
            overrides.tls_cert.clone(),
            overrides.tls_key.clone(),
            overrides.backend_ca.clone(),
        );
        if !overrides.backends.is_empty() {
            file.backends = overrides
                .backends
                .into_iter()
                .map(BackendFile::Url)
                .collect();
        }
        let listen = overrides
            .listen
            .or(file.listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let (admin, admin_token, admin_allowed_hosts) = match file.admin {
            None => (None, None, Vec::new()),
            Some(AdminFile::Addr(addr)) => (Some(addr), None, Vec::new()),
            Some(AdminFile::Table(t)) => {
                let token = match (t.token, t.token_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::new(
                            "admin.token_file",
                            "give admin.token or admin.token_file, not both",
                        ))
                    }
                    (Some(token), None) => Some(token),
                    (None, Some(path)) => Some(
                        std::fs::read_to_string(&path)
                            .map_err(|e| {
                                ConfigError::new(
                                    "admin.token_file",
                                    format!("cannot read {}: {e}", path.display()),
                                )
                            })?
                            .trim()
                            .to_owned(),
                    ),
                    (None, None) => None,
                };
                if token
                    .as_deref()
                    .is_some_and(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
                {
                    return Err(ConfigError::new(
                        "admin.token",
                        "must be visible ASCII, not empty",
                    ));
                }
                let hosts = trust::admin_hosts(t.allowed_hosts.as_deref())?;
                (Some(t.listen), token, hosts)
            }
        };
        let admin = overrides.admin.or(admin);
        let http2 = http2(&file.http2)?;
        let (tls, backend_tls) = tls(&mut file.tls, tls_files, http2.enabled)?;
        let (pools, routes) = pools::build(pools::Parts {
            backends: &file.backends,
            pools: std::mem::take(&mut file.pools),
            routes: std::mem::take(&mut file.routes),
            health: &file.health,
            balance: file.balance,
            failover: file.failover,
            backends_file: overrides.backends_file.or(file.discovery.file.clone()),
        })?;
        let discovery = DiscoverySettings {
            interval: positive(
                "discovery.interval",
                overrides.discovery_interval.or(file.discovery.interval),
                Duration::from_secs(5),
            )?,
            resolver: overrides.resolver.or(file.discovery.resolver),
        };
        let defaults = DrainSettings::default();
        let drain = DrainSettings {
            idle: positive("drain.idle", file.drain.idle, defaults.idle)?,
            timeout: positive("drain.timeout", file.drain.timeout, defaults.timeout)?,
        };
        let log = LogSettings {
            format: overrides.log_format.or(file.log.format).unwrap_or_default(),
            // Off by default, like HAProxy's and Envoy's: a line per request
            // costs about 3 us of CPU per request (docs/benchmarks.md).
            access: file.log.access.unwrap_or(false),
        };
        let (keys, key_origin) =
            trust::load_keys(overrides.session_key_file, file.session_key_file, env)?;
        let threads = match overrides.threads {
            Some(n) => Some(n),
            None => match env(THREADS_ENV) {
                Some(text) => Some(text.trim().parse::<usize>().map_err(|_| {
                    ConfigError::new(THREADS_ENV, format!("'{text}' is not a number"))
                })?),
                None => file.threads,
            },
        };
        if threads == Some(0) {
            return Err(ConfigError::new("threads", "must be at least 1"));
        }
        Ok(Config {
            listen,
            admin,
            admin_token,
            admin_allowed_hosts,
            pools,
            routes,
            discovery,
            drain,
            cache: cache(&file.cache)?,
            shutdown_grace: match file.shutdown_grace {
                Some(d) => d,
                None => Duration::from_secs(30),
            },
            log,
            keys,
            key_origin,
            sessions: trust::sessions(&file.sessions, overrides.session_store.as_deref())?,
            allowed_origins: trust::origins(file.allowed_origins.as_deref())?,
            per_caller: trust::per_caller(&file.limits.per_caller)?,
            preserve_host: file.preserve_host.unwrap_or(true),
            proxy_protocol: file.proxy_protocol.unwrap_or(false),
            forwarded: file.forwarded.unwrap_or(false),
            tls,
            backend_tls,
            http2,
            limits: limits(file.limits)?,
            timeouts: timeouts(file.timeouts)?,
            threads,
        })
    }
}

/// Parses the TOML text; errors name the file, the line and the key.
pub fn parse_file(text: &str, name: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let mut key = name.to_owned();
        if let Some(span) = e.span() {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            key = format!("{name}:{line_no}");
            let line = text.lines().nth(line_no - 1).unwrap_or("");
            if let Some((field, _)) = line.split_once('=') {
                key = format!("{key}: {}", field.trim());
            }
        }
        ConfigError::new(key, e.message().replace('\n', " "))
    })
}

/// `[tls]` and its flags: the certificates loaded (an unreadable file, a key
/// that does not match its certificate, are errors here).
fn tls(
    file: &mut TlsFile,
    overrides: (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
    alpn_h2: bool,
) -> Result<(Option<Arc<Terminator>>, Arc<BackendTls>), ConfigError> {
    let (cert, key, backend_ca) = overrides;
    let cert = cert.or(file.cert.take());
    let key = key.or(file.key.take());
    let mut certificates = match (cert, key) {
        (Some(cert), Some(key)) => vec![CertFiles { cert, key }],
        (None, None) => Vec::new(),
        (Some(_), None) => return Err(ConfigError::new("tls.key", "tls.cert needs its key")),
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "tls.cert",
                "tls.key needs its certificate",
            ))
        }
    };
    certificates.extend(file.certificates.drain(..).map(|c| CertFiles {
        cert: c.cert,
        key: c.key,
    }));
    let terminator = if certificates.is_empty() {
        None
    } else {
        let settings = ServerSettings {
            certificates,
            handshake_timeout: positive(
                "tls.handshake_timeout",
                file.handshake_timeout,
                Duration::from_secs(10),
            )?,
            watch_interval: match file.watch_interval {
                Some(d) if d.is_zero() => None,
                d => Some(d.unwrap_or(Duration::from_secs(10))),
            },
            alpn_h2,
        };
        let t = Terminator::load(settings).map_err(|e| ConfigError::new(e.key, e.problem))?;
        Some(Arc::new(t))
    };
    let backend = BackendSettings {
        ca: backend_ca.or(file.backend_ca.take()),
        cert: file.backend_cert.take(),
        key: file.backend_key.take(),
        insecure_skip_verify: file.insecure_skip_verify.unwrap_or(false),
    };
    let backend = BackendTls::new(backend).map_err(|e| ConfigError::new(e.key, e.problem))?;
    Ok((terminator, Arc::new(backend)))
}

fn http2(file: &Http2File) -> Result<Http2Settings, ConfigError> {
    let d = Http2Settings::default();
    let s = Http2Settings {
        enabled: file.enabled.unwrap_or(d.enabled),
        h2c: file.h2c.unwrap_or(d.h2c),
        max_concurrent_streams: file
            .max_concurrent_streams
            .unwrap_or(d.max_concurrent_streams),
    };
    if s.max_concurrent_streams == 0 {
        return Err(ConfigError::new(
            "http2.max_concurrent_streams",
            "must be at least 1",
        ));
    }
    Ok(s)
}

fn positive(key: &str, d: Option<Duration>, default: Duration) -> Result<Duration, ConfigError> {
    match d {
        Some(d) if d.is_zero() => Err(ConfigError::new(key, "must be above 0")),
        d => Ok(d.unwrap_or(default)),
    }
}

fn health(file: HealthFile, at: &str) -> Result<HealthSettings, ConfigError> {
    let d = HealthSettings::default();
    let k = |name: &str| format!("{at}.{name}");
    let s = HealthSettings {
        check: file.check.unwrap_or(d.check),
        path: file.path.unwrap_or(d.path),
        interval: positive(&k("interval"), file.interval, d.interval)?,
        timeout: positive(&k("timeout"), file.timeout, d.timeout)?,
        fall: file.fall.unwrap_or(d.fall),
        rise: file.rise.unwrap_or(d.rise),
        down_after: positive(&k("down_after"), file.down_after, d.down_after)?,
    };
    let path_ok = s.path.starts_with('/')
        && s.path.len() <= 1024
        && s.path.bytes().all(|b| b.is_ascii_graphic());
    if !path_ok {
        return Err(ConfigError::new(
            k("path"),
            "must be an origin-form path (starts with /, visible ASCII)",
        ));
    }
    if s.fall == 0 || s.rise == 0 {
        let key = if s.fall == 0 { k("fall") } else { k("rise") };
        return Err(ConfigError::new(key, "must be at least 1"));
    }
    Ok(s)
}

fn cache(file: &CacheFile) -> Result<CacheSettings, ConfigError> {
    let d = CacheSettings::default();
    let s = CacheSettings {
        enabled: file.enabled.unwrap_or(d.enabled),
        max_bytes: file.max_bytes.unwrap_or(d.max_bytes),
        max_ttl: positive("cache.max_ttl", file.max_ttl, d.max_ttl)?,
    };
    if s.max_bytes < 4096 {
        return Err(ConfigError::new("cache.max_bytes", "must be at least 4096"));
    }
    Ok(s)
}

fn limits(file: LimitsFile) -> Result<Limits, ConfigError> {
    let limits = Limits {
        max_request_body: file.max_request_body.unwrap_or(4 << 20),
        max_header_bytes: file.max_header_bytes.unwrap_or(64 << 10),
        sse_scan_bytes: file.sse_scan_bytes.unwrap_or(16 << 10),
        max_held_body_bytes: file.max_held_body_bytes.unwrap_or(64 << 20),
        max_connections: file.max_connections.unwrap_or(0),
    };
    if limits.max_request_body == 0 {
        return Err(ConfigError::new(
            "limits.max_request_body",
            "must be above 0",
        ));
    }
    // Below 8 KiB, ordinary requests with a bearer token start to fail.
    if limits.max_header_bytes < 8192 {
        return Err(ConfigError::new(
            "limits.max_header_bytes",
            "must be at least 8192",
        ));
    }
    if limits.max_held_body_bytes < limits.max_request_body {
        return Err(ConfigError::new(
            "limits.max_held_body_bytes",
            "must be at least limits.max_request_body",
        ));
    }
    if limits.sse_scan_bytes < 256 {
        return Err(ConfigError::new(
            "limits.sse_scan_bytes",
            "must be at least 256",
        ));
    }
    Ok(limits)
}

fn timeouts(file: TimeoutsFile) -> Result<Timeouts, ConfigError> {
    let positive = |key: &str, d: Option<Duration>, default: Duration| match d {
        Some(d) if d.is_zero() => Err(ConfigError::new(
            format!("timeouts.{key}"),
            "must be above 0",
        )),
        d => Ok(d.unwrap_or(default)),
    };
    Ok(Timeouts {
        header_read: positive("header_read", file.header_read, Duration::from_secs(10))?,
        request_body: positive("request_body", file.request_body, Duration::from_secs(30))?,
        connect: positive("connect", file.connect, Duration::from_secs(5))?,
        response: positive("response", file.response, Duration::from_secs(300))?,
        stream_idle: match file.stream_idle {
            Some(d) if d.is_zero() => None,
            d => Some(d.unwrap_or(Duration::from_secs(600))),
        },
        upstream_idle: positive("upstream_idle", file.upstream_idle, Duration::from_secs(4))?,
    })
}

#[cfg(test)]
mod tests;

/// The configuration as it is in force, secrets redacted: `GET /config`
/// and `tether check` show it.
#[derive(Debug, serde::Serialize)]
pub struct View<'a> {
    pub listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<&'static str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub admin_allowed_hosts: &'a [String],
    pub session_key: String,
    /// The keys' ids, the sealing one first.
    pub session_key_ids: Vec<String>,
    pub sessions: &'a SessionSettings,
    #[serde(skip_serializing_if = "Origins::is_empty")]
    pub allowed_origins: &'a Origins,
    pub per_caller: &'a CallerSettings,
    pub preserve_host: bool,
    pub proxy_protocol: bool,
    pub forwarded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub limits: &'a Limits,
    pub timeouts: &'a Timeouts,
    pub discovery: &'a DiscoverySettings,
    pub drain: &'a DrainSettings,
    pub cache: &'a CacheSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'a ServerSettings>,
    pub backend_tls: &'a BackendSettings,
    pub http2: &'a Http2Settings,
    pub log: &'a LogSettings,
    pub pools: std::collections::BTreeMap<&'a str, PoolView<'a>>,
    pub routes: &'a [RouteConfig],
}

impl Config {
    pub fn view(&self) -> View<'_> {
        View {
            listen: self.listen,
            admin: self.admin,
            admin_token: self.admin_token.as_ref().map(|_| "<redacted>"),
            admin_allowed_hosts: &self.admin_allowed_hosts,
            session_key: match self.key_origin {
                KeyOrigin::File => "<redacted> (from a file)".into(),
                KeyOrigin::Env => format!("<redacted> (from {KEY_ENV})"),
                KeyOrigin::Generated => "random (sessions do not survive a restart)".into(),
            },
            session_key_ids: self.keys.iter().map(SessionKey::id_hex).collect(),
            sessions: &self.sessions,
            allowed_origins: &self.allowed_origins,
            per_caller: &self.per_caller,
            preserve_host: self.preserve_host,
            proxy_protocol: self.proxy_protocol,
            forwarded: self.forwarded,
            threads: self.threads,
            shutdown_grace: self.shutdown_grace,
            limits: &self.limits,
            timeouts: &self.timeouts,
            discovery: &self.discovery,
            drain: &self.drain,
            cache: &self.cache,
            tls: self.tls.as_deref().map(Terminator::settings),
            backend_tls: self.backend_tls.settings(),
            http2: &self.http2,
            log: &self.log,
            pools: self
                .pools
                .iter()
                .map(|p| {
                    let view = PoolView {
                        backends: p.listed(),
                        balance: p.balance,
                        failover: p.failover,
                        health: &p.health,
                    };
                    (p.name.as_str(), view)
                })
                .collect(),
            routes: &self.routes,
        }
    }

    /// The view as TOML (`tether check`).
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.view()).unwrap_or_else(|e| format!("# cannot show: {e}\n"))
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}
