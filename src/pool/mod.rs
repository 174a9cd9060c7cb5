//! Stage 4: pool. The backends and how a new session's backend is chosen.
//!
//! A `Pool` is immutable once built and swapped in whole by the `Fleet`
//! (`fleet.rs`, the one writer: the config's list, `discovery`, the admin
//! API), so the request path never takes a lock. A `Backend` (`backend.rs`)
//! keeps its state, counters and idle connections across swaps while its
//! identity stays; `health` probes it and hears of failed calls.
//!
//! This stage never looks at a request: it answers "which backend" and
//! "is this identity still here".

mod backend;
pub mod discovery;
pub mod fleet;
pub mod health;
pub mod ring;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[cfg(test)]
pub use backend::Health;
pub use backend::{drain, Backend, IdleConn, Outstanding, Protocol, State, StreamCount};
pub use fleet::Fleet;

/// How a request without a session is given a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
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

/// What a session's request gets when its owner is gone (`failover`, per
/// pool; `docs/config.md` "Failover").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failover {
    /// The spec's 404: the client must begin a new session.
    #[default]
    None,
    /// Tether begins a new session on another backend with what the client
    /// sent in `initialize` (sealed in its token) and sends the request
    /// there; the answer carries the new session's token.
    Reinitialize,
}

/// A named pool (`default`, or `[pools.NAME]`) and its living set.
pub struct Named {
    pub name: Arc<str>,
    pub fleet: Arc<Fleet>,
}

/// Finds the backend with identity `id` in any of `pools` (a session
/// follows its owner whatever pool it is in), with the pool it is in.
pub fn find_owner<'a>(
    pools: &'a [Arc<Named>],
    id: &[u8],
) -> Option<(&'a Arc<Named>, Arc<Backend>)> {
    pools
        .iter()
        .find_map(|named| Some((named, named.fleet.pool().get(id)?.clone())))
}

/// The backend chosen for a new session.
#[derive(Debug)]
pub struct Picked {
    pub backend: Arc<Backend>,
    /// No backend was healthy: this one was chosen among the unhealthy ones
    /// (Envoy's panic threshold), so a wrong probe never black-holes a pool.
    pub panic: bool,
}

/// The current set of backends.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Arc<Backend>>,
    balance: Balance,
    next: AtomicUsize,
    /// Built the first time a key is hashed (soft affinity is opt-in).
    ring: std::sync::OnceLock<ring::Ring>,
}

impl Pool {
    pub fn new(backends: Vec<Arc<Backend>>, balance: Balance) -> Self {
        Pool {
            backends,
            balance,
            next: AtomicUsize::new(0),
            ring: std::sync::OnceLock::new(),
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

    /// Chooses a backend for a request without a session among the `active`
    /// ones, skipping those in `exclude` (already tried and refused). When
    /// none is active but some are only unhealthy (not drained, not down),
    /// the choice is made among those instead (`Picked::panic`).
    pub fn pick(&self, exclude: &[Arc<Backend>]) -> Option<Picked> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let untried = |b: &&Arc<Backend>| !exclude.iter().any(|e| Arc::ptr_eq(e, b));
        if let Some(backend) = self.select(start, |b| b.takes_new() && untried(&b)) {
            return Some(Picked {
                backend,
                panic: false,
            });
        }
        if self.backends.iter().any(|b| b.takes_new()) {
            // Healthy ones exist, and were all tried.
            return None;
        }
        self.select(start, |b| b.takes_new_in_panic() && untried(&b))
            .map(|backend| Picked {
                backend,
                panic: true,
            })
    }

    /// Soft affinity: the first `active` backend clockwise from `hash` on
    /// the ring whose outstanding requests stay within `load_factor` times
    /// the mean (`ring`). With none active, the ordinary pick (panic mode).
    pub fn pick_by_key(
        &self,
        hash: u64,
        load_factor: f64,
        exclude: &[Arc<Backend>],
    ) -> Option<Picked> {
        let untried = |b: &Arc<Backend>| !exclude.iter().any(|e| Arc::ptr_eq(e, b));
        let active: Vec<&Arc<Backend>> = self
            .backends
            .iter()
            .filter(|b| b.takes_new() && untried(b))
            .collect();
        if active.is_empty() {
            return self.pick(exclude);
        }
        let total: usize = active.iter().map(|b| b.outstanding()).sum();
        let cap = ring::capacity(total, active.len(), load_factor);
        let ring = self.ring.get_or_init(|| ring::Ring::new(&self.backends));
        let mut first = None;
        for i in ring.walk(hash, self.backends.len()) {
            let b = &self.backends[i];
            if !b.takes_new() || !untried(b) {
                continue;
            }
            first.get_or_insert(i);
            if b.outstanding() < cap {
                return Some(Picked {
                    backend: b.clone(),
                    panic: false,
                });
            }
        }
        // Every one at capacity (a factor below 1): the key's own.
        first.map(|i| Picked {
            backend: self.backends[i].clone(),
            panic: false,
        })
    }

    fn select(&self, start: usize, accept: impl Fn(&Arc<Backend>) -> bool) -> Option<Arc<Backend>> {
        let n = self.backends.len();
        let mut candidates = (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .filter(|b| accept(b));
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
    use http::uri::Scheme;

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
            let ids: Vec<_> = (0..6)
                .map(|_| p.pick(&[]).unwrap().backend.id.clone())
                .collect();
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
            let b = p.pick(&[]).unwrap().backend;
            assert_eq!(b.id, p.backends()[2].id);
        }
        drop(idle0);
        assert_ne!(p.pick(&[]).unwrap().backend.id, busy.id);
    }

    #[test]
    fn excluded_backends_are_skipped_and_exhaustion_is_none() {
        let p = pool(2, Balance::RoundRobin);
        let a = p.pick(&[]).unwrap().backend;
        let b = p.pick(std::slice::from_ref(&a)).unwrap().backend;
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
    fn only_active_backends_take_new_sessions() {
        let p = pool(3, Balance::RoundRobin);
        p.backends()[0].set_drain(drain::ADMIN, true);
        p.backends()[1].set_health(Health::Unhealthy);
        for _ in 0..4 {
            let picked = p.pick(&[]).unwrap();
            assert_eq!(picked.backend.id, p.backends()[2].id);
            assert!(!picked.panic);
        }
        // The healthy one refused: the others are not a fallback.
        assert!(p.pick(&[p.backends()[2].clone()]).is_none());
    }

    #[test]
    fn with_none_healthy_new_sessions_spread_over_the_unhealthy() {
        let p = pool(4, Balance::RoundRobin);
        p.backends()[0].set_health(Health::Unhealthy);
        p.backends()[1].set_health(Health::Down);
        p.backends()[2].set_drain(drain::GONE, true);
        p.backends()[3].set_health(Health::Unhealthy);
        let mut seen: Vec<_> = (0..4)
            .map(|_| {
                let picked = p.pick(&[]).unwrap();
                assert!(picked.panic);
                picked.backend.id.clone()
            })
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen,
            [p.backends()[0].id.clone(), p.backends()[3].id.clone()]
        );
        p.backends()[0].set_health(Health::Down);
        p.backends()[3].set_health(Health::Down);
        assert!(p.pick(&[]).is_none(), "down backends answer nothing");
        p.backends()[0].set_health(Health::Unhealthy);
        // All drained: nothing takes a new session.
        for b in p.backends() {
            b.set_drain(drain::ADMIN, true);
        }
        assert!(p.pick(&[]).is_none());
    }

    #[test]
    fn state_shows_the_strongest_reason() {
        let b = Backend::new(Scheme::HTTP, "h:1".parse().unwrap());
        assert_eq!(b.state(), State::Active);
        b.set_health(Health::Unhealthy);
        assert_eq!(b.state(), State::Unhealthy);
        b.set_drain(drain::CONFIG, true);
        assert_eq!(b.state(), State::Draining);
        b.set_health(Health::Down);
        assert_eq!(b.state(), State::Down);
        b.set_health(Health::Healthy);
        b.set_drain(drain::CONFIG, false);
        assert_eq!(b.state(), State::Active);
    }

    #[test]
    fn a_key_keeps_its_backend_until_it_is_over_its_share() {
        let p = pool(5, Balance::LeastOutstanding);
        let key = ring::hash_key(b"tenant-a");
        let home = p.pick_by_key(key, 1.25, &[]).unwrap().backend;
        for _ in 0..10 {
            assert_eq!(p.pick_by_key(key, 1.25, &[]).unwrap().backend.id, home.id);
        }
        // Keys spread: 200 keys land on every backend, none with more than
        // twice its share.
        let mut counts = std::collections::HashMap::new();
        for k in 0..200 {
            let b = p.pick_by_key(ring::hash_key(format!("k{k}").as_bytes()), 1.25, &[]);
            *counts.entry(b.unwrap().backend.id.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5, "{counts:?}");
        assert!(counts.values().all(|&c| c < 80), "{counts:?}");
        // Busy beyond 1.25x the mean: the next backend on the ring takes it.
        let busy: Vec<_> = (0..4).map(|_| home.track()).collect();
        let moved = p.pick_by_key(key, 1.25, &[]).unwrap().backend;
        assert_ne!(moved.id, home.id);
        drop(busy);
        assert_eq!(p.pick_by_key(key, 1.25, &[]).unwrap().backend.id, home.id);
        // A drained home: elsewhere; excluded (refused): elsewhere.
        home.set_drain(drain::ADMIN, true);
        assert_ne!(p.pick_by_key(key, 1.25, &[]).unwrap().backend.id, home.id);
        home.set_drain(drain::ADMIN, false);
        let other = p
            .pick_by_key(key, 1.25, std::slice::from_ref(&home))
            .unwrap();
        assert_ne!(other.backend.id, home.id);
    }

    #[test]
    fn a_backend_leaving_moves_only_its_keys() {
        let five = pool(5, Balance::LeastOutstanding);
        let four = Pool::new(five.backends()[..4].to_vec(), Balance::LeastOutstanding);
        let gone = five.backends()[4].id.clone();
        for k in 0..200 {
            let key = ring::hash_key(format!("k{k}").as_bytes());
            let before = five.pick_by_key(key, 10.0, &[]).unwrap().backend.id.clone();
            let after = four.pick_by_key(key, 10.0, &[]).unwrap().backend.id.clone();
            if before != gone {
                assert_eq!(before, after, "key k{k} moved");
            }
        }
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
