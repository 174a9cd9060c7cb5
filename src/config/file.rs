//! The configuration file as written: serde structs, every field optional.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::pool::health::Check;
use crate::pool::{Balance, Failover};

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Proxy listener. Default `127.0.0.1:8080`.
    pub listen: Option<SocketAddr>,
    /// Admin listener: an address, or `[admin]` with `listen` and `token`. Default: none.
    pub admin: Option<AdminFile>,
    /// Backends: `http://host:port`, `dns://NAME:PORT`, `srv://NAME`, or
    /// `{ url = "...", drain = true }`.
    #[serde(default)]
    pub backends: Vec<BackendFile>,
    /// File holding the base64 32-byte session keys, one a line: the first
    /// seals, all open.
    pub session_key_file: Option<PathBuf>,
    /// Origins a browser page may call from; a request whose `Origin` is
    /// present and not listed gets 403. Default: no check.
    pub allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    pub sessions: SessionsFile,
    /// `least-outstanding` (default) or `round-robin`.
    pub balance: Option<Balance>,
    /// `none` (default: the spec's 404 when a session's owner is gone) or
    /// `reinitialize`; for the `default` pool and, unless they say, the others.
    pub failover: Option<Failover>,
    /// Forward the client's `Host` (default true) or the backend's authority.
    pub preserve_host: Option<bool>,
    /// Every connection to the proxy listener begins with a PROXY protocol
    /// (v1 or v2) header naming the client (behind an L4 balancer). Default false.
    pub proxy_protocol: Option<bool>,
    /// Also send an RFC 7239 `Forwarded` field (`for`, `proto`, `host`) to
    /// backends, besides `X-Forwarded-For`/`-Proto`. Default false.
    pub forwarded: Option<bool>,
    /// Threads that serve traffic. 1 runs everything on one thread (a
    /// current-thread runtime: no work-stealing, like one HAProxy thread or one
    /// nginx worker); N > 1 runs N workers. Default: one per CPU Tether may use.
    /// `TETHER_THREADS` overrides it.
    pub threads: Option<usize>,
    /// How long held streams may go on after a shutdown signal. Default 30s.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub discovery: DiscoveryFile,
    #[serde(default)]
    pub health: HealthFile,
    #[serde(default)]
    pub drain: DrainFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub cache: CacheFile,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub http2: Http2File,
    /// Named pools (`[pools.NAME]`), besides `default` (the top-level `backends`).
    #[serde(default)]
    pub pools: std::collections::BTreeMap<String, PoolFile>,
    /// Ordered routes (`[[routes]]`): the first that matches picks the pool.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

/// `[pools.NAME]`: a pool's backends and how it is balanced and checked;
/// what it does not say comes from the top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    #[serde(default)]
    pub backends: Vec<BackendFile>,
    pub balance: Option<Balance>,
    /// `none` or `reinitialize` (default: the top level's).
    pub failover: Option<Failover>,
    /// Keys of `[health]`, over the top-level ones.
    #[serde(default)]
    pub health: HealthFile,
}

/// `[[routes]]`: match fields (all given must match; none: the fallback)
/// and the pool.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// The request path begins with this.
    pub path_prefix: Option<String>,
    /// The request's host (`Host`, port ignored unless given); `*.` prefix allowed.
    pub host: Option<String>,
    /// `Mcp-Method` equals this.
    pub method: Option<String>,
    /// `Mcp-Name` equals this, or matches it as a glob (`*` any run of characters).
    pub name: Option<String>,
    pub pool: String,
    /// Check `Mcp-*` headers against the body (2026-07-28 requests). Default true.
    pub validate: Option<bool>,
    /// Soft affinity: `header:NAME`, `authorization` or `cookie:NAME`, hashed
    /// onto the pool with bounded loads.
    pub soft_affinity: Option<String>,
    /// With `soft_affinity`: how far above the mean load a backend may be and
    /// still take its keys. Default 1.25.
    pub load_factor: Option<f64>,
    /// Cookie stickiness: the name of a sealed cookie naming the backend.
    pub sticky_cookie: Option<String>,
}

/// `[tls]`: TLS for clients (`cert`/`key`, `[[tls.certificates]]`) and to
/// `https://` backends (`backend_*`, `insecure_skip_verify`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// The default certificate (PEM, full chain) and its key: the proxy
    /// listener speaks TLS when given.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// More certificates, each served to clients whose SNI names one of its names.
    #[serde(default)]
    pub certificates: Vec<CertFile>,
    /// Longest a client may take to finish its handshake. Default 10s.
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
    /// How often the certificate and key files are checked for a change
    /// (then loaded for new connections). Default 10s; "0s": never.
    #[serde(default, with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
    /// CA certificates (PEM) that `https://` backends are verified against,
    /// instead of the system's.
    pub backend_ca: Option<PathBuf>,
    /// A client certificate and key for `https://` backends (mTLS).
    pub backend_cert: Option<PathBuf>,
    pub backend_key: Option<PathBuf>,
    /// Accept any certificate from `https://` backends. Default false; logged.
    pub insecure_skip_verify: Option<bool>,
}

/// `[http2]`: HTTP/2 from clients.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2File {
    /// Offer `h2` in ALPN on a TLS listener. Default true.
    pub enabled: Option<bool>,
    /// Accept HTTP/2 with prior knowledge (h2c) on a plain listener, beside
    /// HTTP/1.1. Default false.
    pub h2c: Option<bool>,
    /// Most streams a client may have open on one connection. Default 100.
    pub max_concurrent_streams: Option<u32>,
}

/// `[[tls.certificates]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[limits]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest request body in bytes; larger gets 413. Default 4 MiB.
    pub max_request_body: Option<usize>,
    /// Largest request head in bytes (at least 8192); larger gets 431. Default 64 KiB.
    pub max_header_bytes: Option<usize>,
    /// Most bytes held while looking for a legacy stream's first event. Default 16 KiB.
    pub sse_scan_bytes: Option<usize>,
    /// Most request body bytes held in memory across all connections while
    /// bodies arrive (at least `max_request_body`). Default 64 MiB.
    pub max_held_body_bytes: Option<usize>,
    /// Most client connections open at once; past it the listener stops
    /// accepting until one closes. Default: none (0 also means none).
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub per_caller: PerCallerFile,
}

/// `[limits.per_caller]`: limits for each caller (the bound principal,
/// else the client address); 0 or absent: no such limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerCallerFile {
    /// Requests in progress at once.
    pub concurrent: Option<u32>,
    /// Requests per second, on average.
    pub rate: Option<f64>,
    /// Requests above the rate allowed at once. Default: a second's worth.
    pub burst: Option<f64>,
}

/// `[sessions]`: how sessions are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsFile {
    /// What a session is bound to: `none` (default), `jwt:CLAIM[+CLAIM]`,
    /// `header:NAME` or `authorization`.
    pub bind: Option<String>,
    /// Where sessions are kept: `sealed` (default: in tokens the client
    /// carries), `memory`, or a `redis://`/`rediss://` URL.
    pub store: Option<String>,
    /// With a store: how long an idle session is kept (each request renews it). Default 24h.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// With a store: the longest a lookup may take before the request gets 503. Default 500ms.
    #[serde(default, with = "humantime_serde")]
    pub store_timeout: Option<Duration>,
    /// With a `rediss://` store: CA certificates (PEM) it is verified
    /// against instead of the system's.
    pub store_ca: Option<PathBuf>,
}

/// `admin = "ADDR"` or `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AdminFile {
    Addr(SocketAddr),
    Table(AdminTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTable {
    pub listen: SocketAddr,
    /// When set, POSTs need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The same, read from a file (a Kubernetes Secret).
    pub token_file: Option<PathBuf>,
    /// Host names a browser may reach the admin listener by, besides IP
    /// literals and `localhost` (the guard against DNS rebinding).
    pub allowed_hosts: Option<Vec<String>>,
}

/// A `backends` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BackendFile {
    Url(String),
    Table(BackendTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTable {
    pub url: String,
    /// Takes no new sessions; its sessions are still forwarded.
    #[serde(default)]
    pub drain: bool,
    /// `"http/1.1"` (the default) or `"h2"`; on a `dns://`/`srv://` source,
    /// for every backend it yields. Checked in `config::pools`.
    pub protocol: Option<String>,
}

/// `[discovery]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    /// How often `dns://`/`srv://` names and the backends file are read again. Default 5s.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// DNS server `IP:PORT` instead of the system's.
    pub resolver: Option<SocketAddr>,
    /// A file of backend URLs, one a line, watched for changes.
    pub file: Option<PathBuf>,
}

/// `[health]` in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub check: Option<Check>,
    pub path: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub down_after: Option<Duration>,
}

impl HealthFile {
    /// These keys, and `base`'s where these say nothing.
    pub fn over(self, base: &HealthFile) -> HealthFile {
        let base = base.clone();
        HealthFile {
            check: self.check.or(base.check),
            path: self.path.or(base.path),
            interval: self.interval.or(base.interval),
            timeout: self.timeout.or(base.timeout),
            fall: self.fall.or(base.fall),
            rise: self.rise.or(base.rise),
            down_after: self.down_after.or(base.down_after),
        }
    }
}

/// `[cache]` in the file: the shared cache of `"public"` results (off by default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub enabled: Option<bool>,
    /// Most bytes of results held. Default 16 MiB.
    pub max_bytes: Option<usize>,
    /// Longest an entry lives, whatever its `ttlMs`. Default 5m.
    #[serde(default, with = "humantime_serde")]
    pub max_ttl: Option<Duration>,
}

/// `[drain]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainFile {
    #[serde(default, with = "humantime_serde")]
    pub idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// `[log]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `text` (default) or `json`.
    pub format: Option<LogFormat>,
    /// An access log line per request (default false).
    pub access: Option<bool>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[timeouts]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Time for a client to send a whole request head. Default 10s.
    #[serde(default, with = "humantime_serde")]
    pub header_read: Option<Duration>,
    /// Time for a client to send a whole request body. Default 30s.
    #[serde(default, with = "humantime_serde")]
    pub request_body: Option<Duration>,
    /// Time to connect to a backend. Default 5s.
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    /// Time for a backend to send a response head. Default 5m.
    #[serde(default, with = "humantime_serde")]
    pub response: Option<Duration>,
    /// Longest silence on a response body before Tether ends it; "0s" turns
    /// it off. Default 10m. Never a total timeout: streams live as long as they talk.
    #[serde(default, with = "humantime_serde")]
    pub stream_idle: Option<Duration>,
    /// How long an idle keep-alive connection to a backend is kept. Default
    /// 4s, below the 5 s idle timeout of Node and uvicorn servers.
    #[serde(default, with = "humantime_serde")]
    pub upstream_idle: Option<Duration>,
}
