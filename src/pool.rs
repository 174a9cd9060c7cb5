//! Stage 4: pool. The backends and how a new session's backend is chosen.
//!
//! A `Pool` is immutable once built and shared through an `ArcSwap` (see
//! `proxy.rs`), so discovery and hot reload can swap in a new set without a
//! lock on the request path. Per-backend counters live in the `Backend`, which
//! is kept (by `Arc`) across swaps when its identity stays.
//!
//! This stage never looks at a request: it answers "which backend" and
//! "is this identity still here".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http::uri::{Authority, Scheme};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How a request without a session is given a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Fewest outstanding requests (held SSE streams included); ties go round
    /// robin. The default: a held legacy stream or a slow tool call makes a
    /// replica busier for as long as it lasts, which plain rotation ignores.
    #[default]
    LeastOutstanding,
    /// Strict rotation, whatever each backend is doing.
    RoundRobin,
}

/// One upstream replica.
#[derive(Debug)]
pub struct Backend {
    /// The identity sealed into tokens: the URL's `host:port` as configured.
    /// Every Tether replica that shares a key must name a backend the same way.
    /// Shared, so metric labels clone it without allocating.
    pub id: Arc<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    outstanding: AtomicUsize,
    /// Its idle keep-alive connections, most recently used last
    /// (`forward::upstream` keeps them).
    pub idle: Mutex<Vec<IdleConn>>,
    /// Its `tether_requests_total` series, made on first use.
    pub requests: OnceLock<crate::metrics::StatusCounters>,
}

/// A kept-alive connection to a backend, waiting for a request.
#[derive(Debug)]
pub struct IdleConn {
    pub stream: TcpStream,
    pub since: Instant,
    /// When it stops being used: the idle timeout, or the backend's own.
    pub expires: Instant,
}

impl Backend {
    /// Parses `http://host:port` (a path, if any, is rejected by config validation).
    pub fn new(scheme: Scheme, authority: Authority) -> Self {
        let id = match authority.port() {
            Some(_) => authority.as_str().to_ascii_lowercase(),
            None => format!("{}:80", authority.as_str().to_ascii_lowercase()),
        };
        Backend {
            id: id.into(),
            scheme,
            authority,
            outstanding: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            requests: OnceLock::new(),
        }
    }

    /// Requests and streams currently open to this backend.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts one request as outstanding until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self.clone())
    }
}

/// Keeps a request counted against its backend while alive.
#[derive(Debug)]
pub struct Outstanding(Arc<Backend>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The current set of backends.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Arc<Backend>>,
    balance: Balance,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(backends: Vec<Arc<Backend>>, balance: Balance) -> Self {
        Pool {
            backends,
            balance,
            next: AtomicUsize::new(0),
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The backend with this identity, if it is still in the pool. A linear
    /// scan: pools are small and this beats hashing below a few dozen entries.
    pub fn get(&self, id: &[u8]) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.id.as_bytes() == id)
    }

    /// Chooses a backend for a request without a session, skipping those in
    /// `exclude` (already tried and refused).
    pub fn pick(&self, exclude: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut candidates = (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .filter(|b| !exclude.iter().any(|e| Arc::ptr_eq(e, b)));
        match self.balance {
            Balance::RoundRobin => candidates.next().cloned(),
            // min_by_key keeps the first minimum, so ties rotate with `start`.
            Balance::LeastOutstanding => candidates.min_by_key(|b| b.outstanding()).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, balance: Balance) -> Pool {
        let backends = (0..n)
            .map(|i| {
                Arc::new(Backend::new(
                    Scheme::HTTP,
                    format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                ))
            })
            .collect();
        Pool::new(backends, balance)
    }

    #[test]
    fn idle_backends_are_used_in_turn() {
        for balance in [Balance::LeastOutstanding, Balance::RoundRobin] {
            let p = pool(3, balance);
            let ids: Vec<_> = (0..6).map(|_| p.pick(&[]).unwrap().id.clone()).collect();
            assert_eq!(ids[0..3], ids[3..6]);
            let mut first = ids[0..3].to_vec();
            first.sort();
            first.dedup();
            assert_eq!(first.len(), 3, "{balance:?}: {ids:?}");
        }
    }

    #[test]
    fn least_outstanding_avoids_busy_backends() {
        let p = pool(3, Balance::LeastOutstanding);
        let busy = p.backends()[1].clone();
        let _g = [busy.track(), busy.track()];
        let idle0 = p.backends()[0].track();
        for _ in 0..5 {
            let b = p.pick(&[]).unwrap();
            assert_eq!(b.id, p.backends()[2].id);
        }
        drop(idle0);
        assert_ne!(p.pick(&[]).unwrap().id, busy.id);
    }

    #[test]
    fn excluded_backends_are_skipped_and_exhaustion_is_none() {
        let p = pool(2, Balance::RoundRobin);
        let a = p.pick(&[]).unwrap();
        let b = p.pick(std::slice::from_ref(&a)).unwrap();
        assert_ne!(a.id, b.id);
        assert!(p.pick(&[a, b]).is_none());
        assert!(pool(0, Balance::RoundRobin).pick(&[]).is_none());
    }

    #[test]
    fn outstanding_guard_counts_down_on_drop() {
        let p = pool(1, Balance::LeastOutstanding);
        let b = p.backends()[0].clone();
        let g = b.track();
        assert_eq!(b.outstanding(), 1);
        drop(g);
        assert_eq!(b.outstanding(), 0);
    }

    #[test]
    fn identity_is_lowercase_host_port() {
        let b = Backend::new(Scheme::HTTP, "Replica-A.local".parse().unwrap());
        assert_eq!(&*b.id, "replica-a.local:80");
        assert!(pool(2, Balance::RoundRobin)
            .get(b"127.0.0.1:9001")
            .is_some());
    }
}
