//! Configuration: file -> overrides (flags, environment) -> `validate()` -> `Config`.
//!
//! Every field has a default, so Tether runs with no file at all. The file is
//! TOML; unknown keys are errors. Durations are humantime strings ("30s",
//! "5m"). `docs/config.md` documents every key: keep it in step with this file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use serde::Deserialize;

use crate::affinity::SessionKey;
use crate::pool::Balance;

/// The environment variable holding a base64 session key.
pub const KEY_ENV: &str = "TETHER_SESSION_KEY";
/// The environment variable that overrides `threads`.
pub const THREADS_ENV: &str = "TETHER_THREADS";

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Proxy listener. Default `127.0.0.1:8080`.
    pub listen: Option<SocketAddr>,
    /// Admin listener (`/healthz`, `/metrics`). Default: none.
    pub admin: Option<SocketAddr>,
    /// Backend replicas, `http://host:port`.
    #[serde(default)]
    pub backends: Vec<String>,
    /// File holding the base64 32-byte session key.
    pub session_key_file: Option<PathBuf>,
    /// `least-outstanding` (default) or `round-robin`.
    pub balance: Option<Balance>,
    /// Forward the client's `Host` (default true) or the backend's authority.
    pub preserve_host: Option<bool>,
    /// Threads that serve traffic. 1 runs everything on one thread (a
    /// current-thread runtime: no work-stealing, like one HAProxy thread or one
    /// nginx worker); N > 1 runs N workers. Default: one per CPU Tether may use.
    /// `TETHER_THREADS` overrides it.
    pub threads: Option<usize>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
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

/// What the command line (and environment) may override.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// When non-empty, replaces the file's list.
    pub backends: Vec<String>,
    pub session_key_file: Option<PathBuf>,
    pub threads: Option<usize>,
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

#[derive(Debug, Clone)]
pub struct BackendAddr {
    pub scheme: Scheme,
    pub authority: Authority,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_body: usize,
    pub max_header_bytes: usize,
    pub sse_scan_bytes: usize,
    pub max_held_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub header_read: Duration,
    pub request_body: Duration,
    pub connect: Duration,
    pub response: Duration,
    /// `None`: off.
    pub stream_idle: Option<Duration>,
    pub upstream_idle: Duration,
}

/// The validated configuration the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub backends: Vec<BackendAddr>,
    pub key: SessionKey,
    pub key_origin: KeyOrigin,
    pub balance: Balance,
    pub preserve_host: bool,
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
        if !overrides.backends.is_empty() {
            file.backends = overrides.backends;
        }
        let listen = overrides
            .listen
            .or(file.listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let admin = overrides.admin.or(file.admin);
        let backends = file
            .backends
            .iter()
            .enumerate()
            .map(|(i, url)| {
                parse_backend(url).map_err(|p| ConfigError::new(format!("backends[{i}]"), p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if backends.is_empty() {
            return Err(ConfigError::new(
                "backends",
                "at least one backend is needed (--backend http://host:port)",
            ));
        }
        let (key, key_origin) =
            load_key(overrides.session_key_file.or(file.session_key_file), env)?;
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
            backends,
            key,
            key_origin,
            balance: file.balance.unwrap_or_default(),
            preserve_host: file.preserve_host.unwrap_or(true),
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

fn parse_backend(url: &str) -> Result<BackendAddr, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .ok_or_else(|| format!("'{url}' needs a scheme: http://host:port"))?;
    if *scheme != Scheme::HTTP {
        return Err(format!("'{url}': only http:// backends are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("'{url}' needs a host"))?
        .clone();
    if authority.host().is_empty()
        || authority.as_str().contains('@')
        || authority.as_str().ends_with(':')
    {
        return Err(format!("'{url}' needs a plain host[:port]"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "'{url}': a backend is an origin; paths pass through unchanged, so give none"
        ));
    }
    Ok(BackendAddr {
        scheme: Scheme::HTTP,
        authority,
    })
}

fn load_key(
    file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(SessionKey, KeyOrigin), ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::new(
                "session_key_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let key = SessionKey::from_base64(&text).map_err(|e| {
            ConfigError::new("session_key_file", format!("{}: key {e}", path.display()))
        })?;
        return Ok((key, KeyOrigin::File));
    }
    if let Some(text) = env(KEY_ENV) {
        let key = SessionKey::from_base64(&text)
            .map_err(|e| ConfigError::new(KEY_ENV, format!("key {e}")))?;
        return Ok((key, KeyOrigin::Env));
    }
    Ok((SessionKey::generate(), KeyOrigin::Generated))
}

fn limits(file: LimitsFile) -> Result<Limits, ConfigError> {
    let limits = Limits {
        max_request_body: file.max_request_body.unwrap_or(4 << 20),
        max_header_bytes: file.max_header_bytes.unwrap_or(64 << 10),
        sse_scan_bytes: file.sse_scan_bytes.unwrap_or(16 << 10),
        max_held_body_bytes: file.max_held_body_bytes.unwrap_or(64 << 20),
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
