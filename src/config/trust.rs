//! The trust parts of the config: the session keys (several, for a
//! rollout), `[sessions] bind`, `allowed_origins`, `[limits.per_caller]`,
//! `admin.allowed_hosts`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigError, KeyOrigin, KEY_ENV};
use crate::affinity::store::StoreKind;
use crate::affinity::{SessionKey, MAX_KEYS};
use crate::config::file::{PerCallerFile, SessionsFile};
use crate::trust::{Bind, CallerSettings, Origins};

/// `[sessions]` as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionSettings {
    pub bind: Bind,
    pub store: StoreKind,
    /// With a store: an idle session's life (renewed by each request).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// With a store: the bound on each lookup.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// With a `rediss://` store: the CA file it is verified against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_ca: Option<PathBuf>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            bind: Bind::None,
            store: StoreKind::Sealed,
            ttl: Duration::from_secs(24 * 3600),
            store_timeout: Duration::from_millis(500),
            store_ca: None,
        }
    }
}

/// `[sessions]`, with `--session-store` over the file's `store`.
pub fn sessions(file: &SessionsFile, flag: Option<&str>) -> Result<SessionSettings, ConfigError> {
    let defaults = SessionSettings::default();
    let store = match flag.or(file.store.as_deref()) {
        None => StoreKind::Sealed,
        Some(text) => StoreKind::parse(text).ok_or_else(|| {
            // Never the text itself: a mistyped URL may hold a password.
            let shown = crate::affinity::store::redact(text);
            ConfigError::new(
                "sessions.store",
                format!("{shown:?}: must be sealed, memory, or a redis:// or rediss:// URL"),
            )
        })?,
    };
    match (&store, &file.store_ca) {
        // The URL and the CA are checked now; the connection is made when first needed.
        (StoreKind::Redis(url), ca) => {
            crate::affinity::store::Redis::new(url, Duration::from_secs(1), ca.as_deref())
                .map_err(|e| {
                    ConfigError::new("sessions.store", crate::affinity::store::redact(&e))
                })?;
        }
        (_, Some(_)) => {
            return Err(ConfigError::new(
                "sessions.store_ca",
                "only for a rediss:// store",
            ));
        }
        _ => {}
    }
    let positive = |key: &str, d: Option<Duration>, default: Duration| match d {
        Some(d) if d.is_zero() => Err(ConfigError::new(
            format!("sessions.{key}"),
            "must be above 0",
        )),
        Some(d) => Ok(d),
        None => Ok(default),
    };
    let ttl = positive("ttl", file.ttl, defaults.ttl)?;
    if ttl < Duration::from_secs(1) {
        return Err(ConfigError::new("sessions.ttl", "must be at least 1s"));
    }
    let store_timeout = positive("store_timeout", file.store_timeout, defaults.store_timeout)?;
    let bind = match &file.bind {
        None => Bind::None,
        Some(text) => Bind::parse(text).ok_or_else(|| {
            ConfigError::new(
                "sessions.bind",
                format!(
                    "{text:?}: must be none, jwt:CLAIM (claims joined by +), header:NAME or authorization"
                ),
            )
        })?,
    };
    Ok(SessionSettings {
        bind,
        store,
        ttl,
        store_timeout,
        store_ca: file.store_ca.clone(),
    })
}

pub fn origins(list: Option<&[String]>) -> Result<Origins, ConfigError> {
    Origins::parse(list.unwrap_or_default()).map_err(|e| ConfigError::new("allowed_origins", e))
}

/// `admin.allowed_hosts`: each a host name (`tether-admin.internal`) or
/// `name:port`, stored in lower case. No scheme, path or wildcard: the
/// entry is compared with a browser's `Host` as it is.
pub fn admin_hosts(list: Option<&[String]>) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for entry in list.unwrap_or_default() {
        let host = entry.trim().to_ascii_lowercase();
        let (name, port) = match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host.as_str(), None),
        };
        let name_ok = !name.is_empty()
            && !name.starts_with(['.', '-'])
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        let port_ok = port.map_or(true, |p| {
            p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        });
        if !name_ok || !port_ok {
            return Err(ConfigError::new(
                "admin.allowed_hosts",
                format!(
                    "{entry:?}: must be a host name, or name:port (no scheme, path or wildcard)"
                ),
            ));
        }
        out.push(host);
    }
    Ok(out)
}

pub fn per_caller(file: &PerCallerFile) -> Result<CallerSettings, ConfigError> {
    let rate = file.rate.unwrap_or(0.0);
    if !rate.is_finite() || rate < 0.0 {
        return Err(ConfigError::new(
            "limits.per_caller.rate",
            "must be a number of requests per second, 0 or more",
        ));
    }
    let burst = match file.burst {
        Some(b) if !b.is_finite() || b < 1.0 => {
            return Err(ConfigError::new(
                "limits.per_caller.burst",
                "must be at least 1",
            ))
        }
        Some(b) if rate == 0.0 => {
            return Err(ConfigError::new(
                "limits.per_caller.burst",
                format!("{b} given without limits.per_caller.rate"),
            ))
        }
        Some(b) => b,
        // A second's worth, and at least a session's handshake
        // (`initialize`, `notifications/initialized`, a list or two).
        None => rate.max(5.0),
    };
    Ok(CallerSettings {
        concurrent: file.concurrent.unwrap_or(0),
        rate,
        burst,
    })
}

/// The session keys: `--session-key-file`, then `TETHER_SESSION_KEY`, then
/// the file's `session_key_file` (a deployment's environment, a Kubernetes
/// Secret, overrides what a shared config file says), else a random one.
/// Each source may hold several keys: the first seals, all open.
pub fn load_keys(
    flag: Option<PathBuf>,
    file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<SessionKey>, KeyOrigin), ConfigError> {
    if let Some(path) = flag {
        return key_file(&path);
    }
    if let Some(text) = env(KEY_ENV) {
        return Ok((parse_keys(&text, KEY_ENV)?, KeyOrigin::Env));
    }
    match file {
        Some(path) => key_file(&path),
        None => Ok((vec![SessionKey::generate()], KeyOrigin::Generated)),
    }
}

fn key_file(path: &Path) -> Result<(Vec<SessionKey>, KeyOrigin), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "session_key_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let keys = parse_keys(&text, &format!("session_key_file: {}", path.display()))?;
    Ok((keys, KeyOrigin::File))
}

/// Keys one a line (also separated by spaces or commas, for an environment
/// variable); blank lines and `#` comments are skipped.
pub fn parse_keys(text: &str, source: &str) -> Result<Vec<SessionKey>, ConfigError> {
    let err = |problem: String| ConfigError::new(source, problem);
    let mut keys: Vec<SessionKey> = Vec::new();
    let words = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split([' ', '\t', ',']))
        .filter(|w| !w.is_empty());
    for (i, word) in words.enumerate() {
        let key = SessionKey::from_base64(word).map_err(|e| err(format!("key {}: {e}", i + 1)))?;
        if let Some(j) = keys.iter().position(|k| k.id() == key.id()) {
            let problem = match keys[j].same_as(&key) {
                true => format!("key {} repeats key {}", i + 1, j + 1),
                // Two keys whose 32-bit ids collide: one chance in four billion.
                false => format!(
                    "keys {} and {} have the same id; make another",
                    j + 1,
                    i + 1
                ),
            };
            return Err(err(problem));
        }
        keys.push(key);
    }
    match keys.len() {
        0 => Err(err("no key in it".into())),
        n if n > MAX_KEYS => Err(err(format!("{n} keys; at most {MAX_KEYS}"))),
        _ => Ok(keys),
    }
}
