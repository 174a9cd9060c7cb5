//! The living set of backends: the one writer of the pool.
//!
//! Every source (the config's static list, each discovery source) reports
//! its latest answer here; the fleet merges them into one `Pool` and swaps it
//! in. A backend keeps its `Arc` (state, counters, idle connections) for as
//! long as any source names it, and beyond: one that leaves turns `draining`,
//! because during a rolling update the old replica lives on for its grace
//! period and its sessions must keep working. It is removed once it has had
//! no stream and no request for `drain.idle`, at `drain.timeout`, or when it
//! is down. Removed backends are remembered (bounded) so one that comes back
//! finds its counters.
//!
//! Readers never lock: they load the pool. The lock here is taken by
//! sources, the admin API and the once-a-second `tick`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::backend::{drain, identity, Backend, State};
use super::health::{self, HealthSettings};
use super::{Balance, Pool};
use crate::metrics::{self, Metrics};

/// The source name of the config's own `http://` backends.
pub const STATIC: &str = "static";
/// How many removed backends are remembered for their counters.
const RETIRED: usize = 256;

/// A backend as a source names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `drain = true` in the config.
    pub drain: bool,
    /// `protocol` in the config (of the entry, or of its discovery source).
    pub protocol: super::Protocol,
}

/// How long a backend that left its source is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DrainSettings {
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DrainSettings {
    fn default() -> Self {
        DrainSettings {
            idle: Duration::from_secs(30),
            timeout: Duration::from_secs(600),
        }
    }
}

/// The backends, for the request path (`pool`) and everything that changes them.
pub struct Fleet {
    pool: ArcSwap<Pool>,
    members: Mutex<Members>,
    metrics: Arc<Metrics>,
    health: Arc<ArcSwap<HealthSettings>>,
    /// For the health checks of `https://` backends.
    tls: crate::tls::backend::Shared,
}

struct Members {
    /// Each source's last good answer.
    sources: BTreeMap<String, Vec<Entry>>,
    /// The sources the config names (`None`: any): an answer from one a
    /// reload removed, arriving late, is ignored.
    allowed: Option<Vec<String>>,
    known: Vec<Member>,
    retired: VecDeque<Arc<Backend>>,
    balance: Balance,
    drain: DrainSettings,
}

struct Member {
    backend: Arc<Backend>,
    /// When it left every source.
    gone_since: Option<Instant>,
    /// Since when a leaving backend has had nothing to do.
    quiet_since: Option<Instant>,
    started_seen: u64,
    /// Its health check task.
    checker: Option<AbortHandle>,
    /// The state last published in `tether_backend_state`.
    shown: Option<State>,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(task) = self.checker.take() {
            task.abort();
        }
    }
}

impl Fleet {
    pub fn new(
        metrics: Arc<Metrics>,
        health: HealthSettings,
        tls: crate::tls::backend::Shared,
    ) -> Self {
        Fleet {
            pool: ArcSwap::from_pointee(Pool::new(Vec::new(), Balance::default())),
            members: Mutex::new(Members {
                sources: BTreeMap::new(),
                allowed: None,
                known: Vec::new(),
                retired: VecDeque::new(),
                balance: Balance::default(),
                drain: DrainSettings::default(),
            }),
            metrics,
            health: Arc::new(ArcSwap::from_pointee(health)),
            tls,
        }
    }

    /// The current pool: what the request path routes on.
    pub fn pool(&self) -> arc_swap::Guard<Arc<Pool>> {
        self.pool.load()
    }

    pub fn load_full(&self) -> Arc<Pool> {
        self.pool.load_full()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settings that apply to the whole fleet (a reload may change them).
    pub fn configure(&self, balance: Balance, drain: DrainSettings, health: HealthSettings) {
        self.health.store(Arc::new(health));
        let mut m = self.lock();
        m.balance = balance;
        m.drain = drain;
        self.publish(&mut m);
    }

    pub fn health_settings(&self) -> Arc<HealthSettings> {
        self.health.load_full()
    }

    /// A source's latest answer (an empty one for a source that is no more).
    pub fn set_source(&self, source: &str, entries: Vec<Entry>) {
        let mut m = self.lock();
        if m.allowed
            .as_ref()
            .is_some_and(|a| !a.iter().any(|k| k == source))
        {
            tracing::debug!(source, "answer from a source no longer configured: ignored");
            return;
        }
        if entries.is_empty() {
            m.sources.remove(source);
        } else {
            m.sources.insert(source.to_owned(), entries);
        }
        self.publish(&mut m);
    }

    /// Drops every source not in `keep` (a reload removed them), and
    /// ignores them from now on.
    pub fn retain_sources(&self, keep: &[String]) {
        let mut m = self.lock();
        m.allowed = Some(keep.to_vec());
        let before = m.sources.len();
        m.sources.retain(|name, _| keep.iter().any(|k| k == name));
        if m.sources.len() != before {
            self.publish(&mut m);
        }
    }

    /// Drains (or undrains) a known backend by identity; false if unknown.
    pub fn set_admin_drain(&self, id: &str, on: bool) -> bool {
        let mut m = self.lock();
        let Some(member) = m.known.iter().find(|k| &*k.backend.id == id) else {
            return false;
        };
        member.backend.set_drain(drain::ADMIN, on);
        tracing::info!(
            backend = id,
            drain = on,
            "backend drain set by the admin API"
        );
        self.show_states(&mut m);
        true
    }

    /// Removes backends that left their sources and are done (idle for
    /// `drain.idle`, past `drain.timeout`, or down); updates the state gauges.
    pub fn tick(&self, now: Instant) {
        let mut m = self.lock();
        let settings = m.drain;
        let mut leaving = Vec::new();
        for (i, member) in m.known.iter_mut().enumerate() {
            let Some(gone) = member.gone_since else {
                continue;
            };
            let b = &member.backend;
            let started = b.started();
            if b.outstanding() == 0 && started == member.started_seen {
                member.quiet_since.get_or_insert(now);
            } else {
                member.quiet_since = None;
                member.started_seen = started;
            }
            let why = if b.state() == State::Down {
                Some("down")
            } else if now.duration_since(gone) >= settings.timeout {
                Some("drain.timeout")
            } else if member
                .quiet_since
                .is_some_and(|q| now.duration_since(q) >= settings.idle)
            {
                Some("drain.idle")
            } else {
                None
            };
            if let Some(why) = why {
                tracing::info!(backend = %b.id, why, outstanding = b.outstanding(), "backend removed");
                leaving.push(i);
            }
        }
        if !leaving.is_empty() {
            for i in leaving.into_iter().rev() {
                let mut member = m.known.remove(i);
                member.backend.retire();
                self.clear_state(&member.backend, member.shown.take());
                m.retired.push_back(member.backend.clone());
                if m.retired.len() > RETIRED {
                    if let Some(old) = m.retired.pop_front() {
                        let statuses = old.requests.get().map(|r| r.statuses()).unwrap_or_default();
                        self.metrics.forget_backend(&old.id, &statuses);
                    }
                }
            }
            self.store(&m);
        }
        self.show_states(&mut m);
    }

    /// Builds the pool from the sources and swaps it in.
    fn publish(&self, m: &mut Members) {
        let now = Instant::now();
        // Wanted: every source's entries by identity (first source wins).
        let mut wanted: Vec<(String, &str, &Entry)> = Vec::new();
        for (source, entries) in &m.sources {
            for entry in entries {
                let id = identity(&entry.authority);
                if !wanted.iter().any(|(w, _, _)| *w == id) {
                    wanted.push((id, source, entry));
                }
            }
        }
        let mut known = std::mem::take(&mut m.known);
        for member in known.iter_mut() {
            let b = &member.backend;
            if !wanted.iter().any(|(id, _, _)| **id == *b.id) && member.gone_since.is_none() {
                tracing::info!(backend = %b.id, "backend left its source: draining");
                b.set_drain(drain::GONE, true);
                member.gone_since = Some(now);
                member.quiet_since = None;
                member.started_seen = b.started();
            }
        }
        for (id, source, entry) in &wanted {
            let found = known.iter_mut().find(|k| *k.backend.id == **id);
            let member = match found {
                Some(member) => member,
                None => {
                    let revived = m
                        .retired
                        .iter()
                        .position(|b| *b.id == **id)
                        .and_then(|i| m.retired.remove(i));
                    let backend = match revived {
                        Some(b) => {
                            b.revive();
                            b
                        }
                        None => Arc::new(Backend::with_source(
                            entry.scheme.clone(),
                            entry.authority.clone(),
                            source,
                        )),
                    };
                    tracing::info!(backend = %backend.id, source, "backend added");
                    known.push(Member {
                        backend,
                        gone_since: None,
                        quiet_since: None,
                        started_seen: 0,
                        checker: None,
                        shown: None,
                    });
                    known.last_mut().expect("just pushed")
                }
            };
            let b = &member.backend;
            if member.gone_since.take().is_some() {
                tracing::info!(backend = %b.id, "backend back in its source");
            }
            b.set_drain(drain::GONE, false);
            b.set_drain(drain::CONFIG, entry.drain);
            b.set_protocol(entry.protocol);
            b.set_source(source);
            if member.checker.is_none() && tokio::runtime::Handle::try_current().is_ok() {
                member.checker = Some(health::spawn(
                    b.clone(),
                    self.health.clone(),
                    self.tls.clone(),
                    self.metrics.clone(),
                ));
            }
        }
        m.known = known;
        self.store(m);
        self.show_states(m);
    }

    fn store(&self, m: &Members) {
        let backends = m.known.iter().map(|k| k.backend.clone()).collect();
        self.pool.store(Arc::new(Pool::new(backends, m.balance)));
    }

    /// `tether_backend_state`: 1 for each backend's state, 0 for the others.
    fn show_states(&self, m: &mut Members) {
        for member in m.known.iter_mut() {
            let state = member.backend.state();
            if member.shown == Some(state) {
                continue;
            }
            for s in State::ALL {
                self.metrics
                    .backend_state
                    .get_or_create(&metrics::BackendState {
                        backend: metrics::Name(member.backend.id.clone()),
                        state: s.as_str(),
                    })
                    .set(i64::from(s == state));
            }
            if let Some(before) = member.shown {
                tracing::info!(backend = %member.backend.id, from = before.as_str(), to = state.as_str(), "backend state changed");
            }
            member.shown = Some(state);
        }
    }

    fn clear_state(&self, backend: &Backend, shown: Option<State>) {
        if shown.is_some() {
            for s in State::ALL {
                self.metrics.backend_state.remove(&metrics::BackendState {
                    backend: metrics::Name(backend.id.clone()),
                    state: s.as_str(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
