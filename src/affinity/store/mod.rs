//! A session table in a store (`[sessions] store = "memory" | "redis://..."`),
//! for deployments that cannot let Tether rewrite ids: the client sees the
//! server's own id, and Tether keeps `id -> owner` instead of sealing it.
//!
//! What a store holds for an id is exactly what a token would say: the
//! sealed `(kind, owner, id, principal)`, under the session keys. So routing,
//! binding and key rotation are the token path's, unchanged; an entry cannot
//! be forged by whoever can write to the store (it does not open), nor moved
//! to another id (the id is inside it). The TTL slides: every lookup renews
//! it, and a successful `DELETE` removes the entry.
//!
//! This part never decides a route: it answers "which token does this id
//! stand for", or that it cannot tell (the store is unreachable: never read
//! as "no such session", which would make clients drop live sessions).

mod memory;
mod redis;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use memory::Memory;
pub use redis::Redis;

/// What `[sessions] store` names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// Ids sealed into tokens the client carries (no store).
    #[default]
    Sealed,
    /// A table in this process (one Tether instance).
    Memory,
    /// A Redis (`redis://` or `rediss://` URL) shared by every instance.
    Redis(String),
}

impl StoreKind {
    pub fn parse(text: &str) -> Option<StoreKind> {
        match text {
            "sealed" => Some(StoreKind::Sealed),
            "memory" => Some(StoreKind::Memory),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Some(StoreKind::Redis(url.to_owned()))
            }
            _ => None,
        }
    }

    /// How it is shown (`/config`, logs): a Redis URL without its password.
    pub fn shown(&self) -> String {
        match self {
            StoreKind::Sealed => "sealed".into(),
            StoreKind::Memory => "memory".into(),
            StoreKind::Redis(url) => redact(url),
        }
    }
}

impl serde::Serialize for StoreKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

/// `scheme://user:password@host` -> `scheme://user:<redacted>@host`; any
/// other text with an `@` (a mistyped URL) loses all before it.
pub fn redact(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let (before, host) = url.split_at(at);
    match before.split_once("://") {
        Some((scheme, userinfo)) if !userinfo.contains('/') => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:<redacted>{host}"),
            None => url.to_owned(),
        },
        _ => format!("<redacted>{host}"),
    }
}

/// Which transport an id belongs to: the two never share an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// `Mcp-Session-Id`.
    Streamable,
    /// The legacy endpoint's session parameter, as the URL carries it.
    Legacy,
}

impl Space {
    fn tag(self) -> &'static str {
        match self {
            Space::Streamable => "s",
            Space::Legacy => "l",
        }
    }
}

/// Why a store gave no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("session store timed out after {0:?}")]
    Timeout(Duration),
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A table of `id -> sealed entry` with a sliding TTL.
pub trait SessionStore: Send + Sync {
    /// The entry for `id`, its TTL renewed; `None` if there is none.
    fn get<'a>(
        &'a self,
        space: Space,
        id: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, Option<String>>;
    fn put<'a>(
        &'a self,
        space: Space,
        id: &'a [u8],
        entry: String,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;
    fn remove<'a>(&'a self, space: Space, id: &'a [u8]) -> StoreFuture<'a, ()>;
    /// An operation timed out: whatever connection it used may be dead.
    fn reset(&self) {}
}

/// The store in force, with its TTL and its bound on each operation.
pub struct Store {
    table: Arc<dyn SessionStore>,
    kind: StoreKind,
    ca: Option<PathBuf>,
    ttl: Duration,
    timeout: Duration,
}

impl Store {
    /// `None` for `sealed`. A Redis store connects lazily: Tether starts
    /// while Redis is down, and answers 503 until it is back.
    pub fn new(
        kind: &StoreKind,
        ttl: Duration,
        timeout: Duration,
        ca: Option<&Path>,
    ) -> Result<Option<Arc<Store>>, String> {
        let table: Arc<dyn SessionStore> = match kind {
            StoreKind::Sealed => return Ok(None),
            StoreKind::Memory => Arc::new(Memory::new()),
            StoreKind::Redis(url) => Arc::new(Redis::new(url, timeout, ca)?),
        };
        Ok(Some(Arc::new(Store {
            table,
            kind: kind.clone(),
            ca: ca.map(Path::to_owned),
            ttl,
            timeout,
        })))
    }

    /// The same store (its table, its connection) with other settings: what
    /// a reload that keeps the kind makes, so no session is lost.
    pub fn with(
        &self,
        kind: &StoreKind,
        ttl: Duration,
        timeout: Duration,
        ca: Option<&Path>,
    ) -> Option<Arc<Store>> {
        (self.kind == *kind && self.ca.as_deref() == ca).then(|| {
            Arc::new(Store {
                table: self.table.clone(),
                kind: kind.clone(),
                ca: self.ca.clone(),
                ttl,
                timeout,
            })
        })
    }

    pub async fn get(&self, space: Space, id: &[u8]) -> Result<Option<String>, StoreError> {
        self.bounded(self.table.get(space, id, self.ttl)).await
    }

    pub async fn put(&self, space: Space, id: &[u8], entry: String) -> Result<(), StoreError> {
        self.bounded(self.table.put(space, id, entry, self.ttl))
            .await
    }

    pub async fn remove(&self, space: Space, id: &[u8]) -> Result<(), StoreError> {
        self.bounded(self.table.remove(space, id)).await
    }

    async fn bounded<T>(&self, op: StoreFuture<'_, T>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result,
            Err(_) => {
                self.table.reset();
                Err(StoreError::Timeout(self.timeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_urls_show_no_password() {
        assert_eq!(StoreKind::parse("sealed"), Some(StoreKind::Sealed));
        assert_eq!(StoreKind::parse("memory"), Some(StoreKind::Memory));
        assert!(matches!(
            StoreKind::parse("rediss://h:6380/0"),
            Some(StoreKind::Redis(_))
        ));
        assert_eq!(StoreKind::parse("redis"), None);
        assert_eq!(StoreKind::parse("http://h"), None);
        let shown = StoreKind::Redis("redis://app:s3cret@10.0.0.5:6379/2".into()).shown();
        assert_eq!(shown, "redis://app:<redacted>@10.0.0.5:6379/2");
        assert!(!StoreKind::Redis("redis://:pw@h".into())
            .shown()
            .contains("pw"));
        assert_eq!(
            StoreKind::Redis("redis://h:1".into()).shown(),
            "redis://h:1"
        );
    }

    #[tokio::test]
    async fn the_memory_store_slides_its_ttl_and_forgets() {
        tokio::time::pause();
        let ttl = Duration::from_secs(60);
        let store = Store::new(&StoreKind::Memory, ttl, Duration::from_secs(1), None)
            .unwrap()
            .unwrap();
        store
            .put(Space::Streamable, b"id-1", "t2.x".into())
            .await
            .unwrap();
        assert_eq!(
            store.get(Space::Legacy, b"id-1").await,
            Ok(None),
            "spaces apart"
        );
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(45)).await;
            assert_eq!(
                store.get(Space::Streamable, b"id-1").await,
                Ok(Some("t2.x".into()))
            );
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(
            store.get(Space::Streamable, b"id-1").await,
            Ok(None),
            "expired"
        );
        store
            .put(Space::Streamable, b"id-2", "t2.y".into())
            .await
            .unwrap();
        store.remove(Space::Streamable, b"id-2").await.unwrap();
        assert_eq!(store.get(Space::Streamable, b"id-2").await, Ok(None));
    }
}
