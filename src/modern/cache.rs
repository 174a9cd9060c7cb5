//! The opt-in response cache for results servers mark shareable (SEP-2549,
//! `server/utilities/caching.mdx` of 2026-07-28).
//!
//! A shared gateway MAY store and serve a `"public"` result to anyone;
//! `"private"` ones MUST NOT be shared across authorization contexts, so Tether
//! never stores them. Only the cacheable operations are looked at
//! (`server/discover`, the lists, `resources/read`); a request that retries a
//! multi-round-trip exchange (`inputResponses`, `requestState`) is never
//! cached. The key is the pool, the protocol version, the method and the
//! parameters (their `_meta` too, but for `clientInfo`, which names the
//! client software and not what it asks). An entry lives for the result's
//! `ttlMs`, at most `cache.max_ttl`; a hit is served with the `id` of the
//! request and `ttlMs` set to what remains, as an HTTP cache sets `Age`.
//!
//! Bounded by `cache.max_bytes`: the oldest entries go first. Only a JSON
//! answer whose whole body came with its head is stored (a streamed one is
//! passed and not stored).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// The operations whose results carry caching hints.
pub const CACHEABLE: &[&str] = &[
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// The largest result stored.
pub const MAX_ENTRY: usize = 1 << 20;

/// `[cache]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheSettings {
    pub enabled: bool,
    pub max_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: false,
            max_bytes: 16 << 20,
            max_ttl: Duration::from_secs(300),
        }
    }
}

struct Entry {
    /// The `result` member, as JSON.
    result: Value,
    expires: Instant,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Keys by age, oldest first (an entry replaced keeps its old place).
    order: VecDeque<String>,
    bytes: usize,
}

/// What a cache lookup found.
pub enum Lookup {
    /// The whole answer, for the request's id.
    Hit(Vec<u8>),
    /// Not there: store the answer under this key.
    Miss(String),
}

pub struct Cache {
    settings: CacheSettings,
    inner: Mutex<Inner>,
}

impl Cache {
    pub fn new(settings: CacheSettings) -> Cache {
        Cache {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks a request (`body`, of a 2026-07-28 POST routed to `pool`) up;
    /// `None` when it is not cacheable at all.
    pub fn lookup(&self, pool: &str, version: &[u8], body: &[u8], now: Instant) -> Option<Lookup> {
        let request: Value = serde_json::from_slice(body).ok()?;
        let key = key(pool, version, &request)?;
        let mut inner = self.lock();
        let fresh = match inner.map.get(&key) {
            Some(entry) if now < entry.expires => Some(entry),
            Some(_) => {
                if let Some(entry) = inner.map.remove(&key) {
                    inner.bytes -= entry.bytes;
                }
                None
            }
            None => None,
        };
        let Some(entry) = fresh else {
            return Some(Lookup::Miss(key));
        };
        let mut result = entry.result.clone();
        let left = entry.expires.saturating_duration_since(now).as_millis() as u64;
        result["ttlMs"] = left.into();
        let answer = serde_json::json!({
            "jsonrpc": "2.0",
            "id": request.get("id").cloned().unwrap_or(Value::Null),
            "result": result,
        });
        Some(Lookup::Hit(serde_json::to_vec(&answer).ok()?))
    }

    /// Stores a backend's whole JSON answer under `key` if its result says it
    /// may be shared: `cacheScope: "public"`, `ttlMs` above 0, complete.
    /// Returns whether it was stored.
    pub fn store(&self, key: String, answer: &[u8], now: Instant) -> bool {
        if answer.len() > MAX_ENTRY || answer.len() > self.settings.max_bytes {
            return false;
        }
        let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(answer) else {
            return false;
        };
        let Some(result) = answer.remove("result") else {
            return false;
        };
        let public = result.get("cacheScope").and_then(Value::as_str) == Some("public");
        let complete = result
            .get("resultType")
            .and_then(Value::as_str)
            .map_or(true, |t| t == "complete");
        let ttl = result.get("ttlMs").and_then(Value::as_u64).unwrap_or(0);
        if !public || !complete || ttl == 0 {
            return false;
        }
        let ttl = Duration::from_millis(ttl).min(self.settings.max_ttl);
        let bytes = key.len() + result.to_string().len();
        let mut inner = self.lock();
        if let Some(old) = inner.map.remove(&key) {
            inner.bytes -= old.bytes;
        } else {
            inner.order.push_back(key.clone());
        }
        inner.bytes += bytes;
        inner.map.insert(
            key,
            Entry {
                result,
                expires: now + ttl,
                bytes,
            },
        );
        while inner.bytes > self.settings.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(entry) = inner.map.remove(&oldest) {
                inner.bytes -= entry.bytes;
            }
        }
        // Keys of entries already gone (expired) leave the order list too.
        if inner.order.len() > 2 * inner.map.len() + 16 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|k| map.contains_key(k));
        }
        true
    }

    /// Entries and bytes held.
    #[cfg(test)]
    pub fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.map.len(), inner.bytes)
    }
}

/// The cache key of a request, or `None` when it is not cacheable.
fn key(pool: &str, version: &[u8], request: &Value) -> Option<String> {
    let method = request.get("method")?.as_str()?;
    if !CACHEABLE.contains(&method) {
        return None;
    }
    let mut params = match request.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return None,
    };
    if params.contains_key("inputResponses") || params.contains_key("requestState") {
        return None;
    }
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        meta.remove("io.modelcontextprotocol/clientInfo");
    }
    // serde_json's Map is ordered by key: the same parameters in any order
    // give the same text.
    let params = Value::Object(params).to_string();
    let version = String::from_utf8_lossy(version);
    Some(format!("{pool}\n{version}\n{method}\n{params}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Cache {
        Cache::new(CacheSettings {
            enabled: true,
            max_bytes: 4096,
            max_ttl: Duration::from_secs(60),
        })
    }

    const LIST: &[u8] = br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/clientInfo":{"name":"a"}}}}"#;

    fn answer(scope: &str, ttl: i64) -> Vec<u8> {
        format!(r#"{{"jsonrpc":"2.0","id":7,"result":{{"tools":[],"ttlMs":{ttl},"cacheScope":"{scope}","resultType":"complete"}}}}"#).into_bytes()
    }

    fn miss(c: &Cache, body: &[u8], now: Instant) -> String {
        match c.lookup("main", b"2026-07-28", body, now) {
            Some(Lookup::Miss(key)) => key,
            Some(Lookup::Hit(_)) => panic!("a hit"),
            None => panic!("not cacheable"),
        }
    }

    #[test]
    fn a_public_result_is_served_with_the_requests_id_until_its_ttl() {
        let c = cache();
        let t0 = Instant::now();
        let key = miss(&c, LIST, t0);
        assert!(c.store(key, &answer("public", 10_000), t0));
        // Another client (other clientInfo, other id): the same entry.
        let other = br#"{"jsonrpc":"2.0","id":"x","method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/clientInfo":{"name":"b"}}}}"#;
        let Some(Lookup::Hit(hit)) =
            c.lookup("main", b"2026-07-28", other, t0 + Duration::from_secs(4))
        else {
            panic!("no hit");
        };
        let v: Value = serde_json::from_slice(&hit).unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(v["result"]["ttlMs"], 6000, "what is left of it");
        assert_eq!(v["result"]["cacheScope"], "public");
        miss(&c, LIST, t0 + Duration::from_secs(10));
        assert_eq!(c.size().0, 0, "the stale entry is gone");
    }

    #[test]
    fn private_zero_ttl_and_interim_results_are_never_stored() {
        let c = cache();
        let now = Instant::now();
        for body in [
            answer("private", 10_000),
            answer("public", 0),
            answer("public", -5),
            br#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"input_required","ttlMs":5000,"cacheScope":"public"}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":7,"error":{"code":-1,"message":"x"}}"#.to_vec(),
            b"not json".to_vec(),
        ] {
            let key = miss(&c, LIST, now);
            assert!(!c.store(key, &body, now), "{}", String::from_utf8_lossy(&body));
        }
        assert_eq!(c.size().0, 0);
    }

    #[test]
    fn keys_follow_method_params_pool_and_version() {
        let c = cache();
        let now = Instant::now();
        let key = miss(&c, LIST, now);
        assert!(c.store(key, &answer("public", 10_000), now));
        let page2 = br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"2"}}"#;
        miss(&c, page2, now);
        assert!(matches!(
            c.lookup("other", b"2026-07-28", LIST, now),
            Some(Lookup::Miss(_))
        ));
        assert!(matches!(
            c.lookup("main", b"2027-01-01", LIST, now),
            Some(Lookup::Miss(_))
        ));
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","requestState":"s"}}"#,
            b"[]",
        ] {
            assert!(c.lookup("main", b"2026-07-28", body, now).is_none());
        }
    }

    #[test]
    fn the_oldest_entries_go_when_the_bytes_run_out() {
        let c = cache();
        let now = Instant::now();
        for i in 0..100 {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"r{i}"}}}}"#
            );
            let key = miss(&c, body.as_bytes(), now);
            c.store(key, &answer("public", 10_000), now);
        }
        let (entries, bytes) = c.size();
        assert!(
            bytes <= 4096 && entries > 10,
            "{entries} entries, {bytes} bytes"
        );
        let last = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"r99"}}"#;
        assert!(matches!(
            c.lookup("main", b"2026-07-28", last, now),
            Some(Lookup::Hit(_))
        ));
        let first = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"r0"}}"#;
        assert!(matches!(
            c.lookup("main", b"2026-07-28", first, now),
            Some(Lookup::Miss(_))
        ));
    }
}
