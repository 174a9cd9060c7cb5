//! Per-caller limits (`[limits.per_caller]`): concurrent requests and
//! requests per second for each caller, the bound principal when there is
//! one, else the client's address. Past a limit: 429 with `Retry-After`.
//!
//! State is per Tether instance (N instances allow N times the rate), held
//! in a sharded table. An entry goes once its caller has nothing in
//! progress and a full bucket again (at most `burst / rate` seconds after
//! its last request); shards are swept as they grow and every second, so a
//! flood of addresses costs memory for the callers of the last few seconds,
//! and it is given back after the flood.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::affinity::PrincipalTag;

/// The limits, as configured (0: no such limit).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Default)]
pub struct CallerSettings {
    /// Requests in progress at once.
    pub concurrent: u32,
    /// Requests per second, on average.
    pub rate: f64,
    /// Requests at once above the rate (the bucket's size); at least 1.
    pub burst: f64,
}

impl CallerSettings {
    pub fn enabled(&self) -> bool {
        self.concurrent > 0 || self.rate > 0.0
    }
}

/// Who a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    Principal(PrincipalTag),
    Addr(IpAddr),
}

/// Which limit a request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Concurrency,
    /// With the seconds until the next request would be allowed.
    Rate {
        retry_after: u32,
    },
}

struct Entry {
    active: u32,
    tokens: f64,
    at: Instant,
}

const SHARDS: usize = 16;

pub struct CallerLimits {
    settings: CallerSettings,
    shards: [Mutex<Shard>; SHARDS],
    hasher: std::hash::RandomState,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Caller, Entry>,
    /// Entries after the last sweep: the next sweep comes at twice that,
    /// or a second after the last, whichever is first.
    swept_at: usize,
    last_sweep: Option<Instant>,
}

/// A request in progress, counted until dropped.
pub struct CallerGuard {
    limits: Arc<CallerLimits>,
    caller: Caller,
}

impl CallerLimits {
    pub fn new(settings: CallerSettings) -> Arc<CallerLimits> {
        Arc::new(CallerLimits {
            settings,
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: std::hash::RandomState::new(),
        })
    }

    pub fn settings(&self) -> &CallerSettings {
        &self.settings
    }

    fn shard(&self, caller: &Caller) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::BuildHasher;
        let i = self.hasher.hash_one(caller) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request of `caller` at `now`, or says which limit it hit.
    pub fn admit(self: &Arc<Self>, caller: Caller, now: Instant) -> Result<CallerGuard, Limited> {
        let s = self.settings;
        let burst = s.burst.max(1.0);
        let mut shard = self.shard(&caller);
        let len = shard.entries.len();
        let second = shard.last_sweep.map_or(true, |at| {
            now.saturating_duration_since(at) >= Duration::from_secs(1)
        });
        if len >= (2 * shard.swept_at).max(64) || (len >= 64 && second) {
            shard.sweep(&s, now);
        }
        let entry = shard.entries.entry(caller).or_insert(Entry {
            active: 0,
            tokens: burst,
            at: now,
        });
        if s.concurrent > 0 && entry.active >= s.concurrent {
            return Err(Limited::Concurrency);
        }
        if s.rate > 0.0 {
            let elapsed = now.saturating_duration_since(entry.at).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * s.rate).min(burst);
            entry.at = now;
            if entry.tokens < 1.0 {
                let wait = (1.0 - entry.tokens) / s.rate;
                return Err(Limited::Rate {
                    retry_after: (wait.ceil() as u32).max(1),
                });
            }
            entry.tokens -= 1.0;
        }
        entry.active += 1;
        drop(shard);
        Ok(CallerGuard {
            limits: self.clone(),
            caller,
        })
    }

    /// Callers tracked now (for tests and the admin API).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).entries.len())
            .sum()
    }
}

impl Shard {
    /// Drops the entries of callers with nothing in progress whose bucket
    /// is full again: forgetting them changes nothing.
    fn sweep(&mut self, s: &CallerSettings, now: Instant) {
        let burst = s.burst.max(1.0);
        self.entries.retain(|_, e| {
            let refilled = s.rate <= 0.0
                || e.tokens + now.saturating_duration_since(e.at).as_secs_f64() * s.rate >= burst;
            e.active > 0 || !refilled
        });
        self.swept_at = self.entries.len();
        self.last_sweep = Some(now);
    }
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        let mut shard = self.limits.shard(&self.caller);
        if let Some(e) = shard.entries.get_mut(&self.caller) {
            e.active = e.active.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(n: u8) -> Caller {
        Caller::Addr(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn concurrency_is_per_caller_and_freed_on_drop() {
        let l = CallerLimits::new(CallerSettings {
            concurrent: 2,
            ..Default::default()
        });
        let now = Instant::now();
        let a1 = l.admit(addr(1), now).unwrap();
        let _a2 = l.admit(addr(1), now).unwrap();
        assert_eq!(l.admit(addr(1), now).err(), Some(Limited::Concurrency));
        let _b = l
            .admit(addr(2), now)
            .expect("another caller is not limited");
        drop(a1);
        assert!(l.admit(addr(1), now).is_ok());
    }

    #[test]
    fn the_rate_allows_a_burst_then_refills() {
        let l = CallerLimits::new(CallerSettings {
            rate: 2.0,
            burst: 3.0,
            concurrent: 0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            drop(l.admit(addr(1), t0).unwrap());
        }
        assert_eq!(
            l.admit(addr(1), t0).err(),
            Some(Limited::Rate { retry_after: 1 })
        );
        // Half a second later one more token is there (2 per second).
        assert!(l.admit(addr(1), t0 + Duration::from_millis(500)).is_ok());
        assert!(l.admit(addr(1), t0 + Duration::from_millis(500)).is_err());
        let slow = CallerLimits::new(CallerSettings {
            rate: 0.1,
            burst: 1.0,
            concurrent: 0,
        });
        drop(slow.admit(addr(1), t0).unwrap());
        assert_eq!(
            slow.admit(addr(1), t0).err(),
            Some(Limited::Rate { retry_after: 10 })
        );
    }

    #[test]
    fn idle_callers_are_forgotten() {
        let l = CallerLimits::new(CallerSettings {
            rate: 100.0,
            burst: 1.0,
            concurrent: 0,
        });
        let t0 = Instant::now();
        let held = l.admit(addr(0), t0).unwrap();
        // 4,000 callers, one a millisecond: each bucket is full again 10 ms on.
        for n in 0..4000u32 {
            let caller = Caller::Addr(IpAddr::from(n.to_be_bytes()));
            drop(l.admit(caller, t0 + Duration::from_millis(u64::from(n))));
        }
        assert!(l.tracked() < 2000, "{} tracked", l.tracked());
        // The one in progress is never forgotten.
        assert!(l
            .shard(&addr(0))
            .entries
            .get(&addr(0))
            .is_some_and(|e| e.active == 1));
        drop(held);
    }

    #[test]
    fn a_flood_is_given_back_when_it_stops() {
        let l = CallerLimits::new(CallerSettings {
            rate: 10.0,
            burst: 5.0,
            concurrent: 0,
        });
        let t0 = Instant::now();
        for n in 0..20_000u32 {
            drop(l.admit(Caller::Addr(IpAddr::from(n.to_be_bytes())), t0));
        }
        assert!(l.tracked() > 10_000, "the flood is tracked while it lasts");
        // A minute later, a few callers: each shard they touch sweeps.
        for n in 0..200u32 {
            let caller = Caller::Addr(IpAddr::from((n + 1_000_000).to_be_bytes()));
            drop(l.admit(caller, t0 + Duration::from_secs(60)));
        }
        assert!(l.tracked() < 1_000, "{} still tracked", l.tracked());
    }
}
