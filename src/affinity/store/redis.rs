//! `store = "redis://..."` (or `rediss://`, TLS): the session table in a
//! Redis every Tether instance shares, through redis-rs's connection
//! manager (one multiplexed connection, re-made when it breaks). Keys are
//! `tether:s:<id>` (Streamable) and `tether:l:<id>` (legacy); a lookup is one
//! `GETEX ... EX ttl` (Redis 6.2 or later), so reading renews the TTL.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{SessionStore, Space, StoreError, StoreFuture};

pub struct Redis {
    client: redis::Client,
    timeout: Duration,
    /// Made on first use, inside the runtime; it connects lazily, so Tether
    /// starts (and answers 503) while Redis is down. Dropped after a timeout
    /// (`reset`): a connection whose peer went silent (no reset: a failover
    /// to another address, a partition) is never re-made by the manager
    /// itself, so the next command makes a new one.
    manager: Mutex<Option<ConnectionManager>>,
}

impl Redis {
    /// Checks the URL (and reads `ca`: the PEM certificates a `rediss://`
    /// server is verified against instead of the system's); connects on
    /// first use.
    pub fn new(url: &str, timeout: Duration, ca: Option<&Path>) -> Result<Redis, String> {
        let client = match ca {
            None => redis::Client::open(url),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(url, certificates)
            }
        }
        .map_err(|e| format!("invalid Redis URL or CA: {e}"))?;
        Ok(Redis {
            client,
            timeout,
            manager: Mutex::new(None),
        })
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.manager.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(manager) = &*slot {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // A broken connection is re-made on the next command, not
            // retried for long in the background.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut manager = self.manager()?;
        cmd.query_async(&mut manager).await.map_err(|e| {
            let text = e.to_string();
            if text.to_ascii_lowercase().contains("unknown command") {
                static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::error!(error = %text, "the session store needs Redis 6.2 or later (GETEX)");
                }
            }
            StoreError::Unavailable(text)
        })
    }
}

fn key(space: Space, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + id.len());
    key.extend_from_slice(b"tether:");
    key.extend_from_slice(space.tag().as_bytes());
    key.push(b':');
    key.extend_from_slice(id);
    key
}

/// Whole seconds, rounded up (Redis counts in seconds).
fn seconds(ttl: Duration) -> u64 {
    (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1)
}

impl SessionStore for Redis {
    fn get<'a>(
        &'a self,
        space: Space,
        id: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Option<String>> {
        let mut cmd = redis::cmd("GETEX");
        cmd.arg(key(space, id)).arg("EX").arg(seconds(ttl));
        Box::pin(self.run(cmd))
    }

    fn put<'a>(
        &'a self,
        space: Space,
        id: &'a [u8],
        entry: String,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key(space, id))
            .arg(entry)
            .arg("EX")
            .arg(seconds(ttl));
        Box::pin(self.run(cmd))
    }

    fn remove<'a>(&'a self, space: Space, id: &'a [u8]) -> StoreFuture<'a, ()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key(space, id));
        Box::pin(async move { self.run::<i64>(cmd).await.map(|_| ()) })
    }

    fn reset(&self) {
        *self.manager.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
