//! The status page's short memory: a fixed ring of counter samples, one
//! every `INTERVAL` for the last `WINDOW`, so a page opened now shows the last
//! minutes instead of starting empty.
//!
//! The samples are read from the metrics registry, the same numbers a
//! Prometheus scrape gets, by encoding it as a scrape does: the request path
//! keeps no second set of counters and takes no lock for this. The totals
//! charted are kept here, series by series (`Totals`), so a backend whose
//! series the registry forgets takes nothing away from them. The ring's
//! mutex is held by the sampler and by `GET /status` only, never across an
//! `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

/// One sample every...
pub const INTERVAL: Duration = Duration::from_secs(5);
/// ...for the last fifteen minutes.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The live point's rate is taken over at least this long, so a page polled
/// just after a sample does not show one request as a spike.
const MIN_SPAN: Duration = Duration::from_secs(1);

/// The counters at one moment: running totals since the first sample
/// (except `streams`, open now), which never go down.
///
/// They are not the sums of the registry's series: a backend Tether forgets
/// has its series removed from the registry (`Metrics::forget_backend`), and
/// a sum would drop by what it had counted. Each sample instead adds what
/// each series (by name and labels) grew by since the last one: a series
/// that is gone adds nothing and takes nothing away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// `tether_requests_total`, every backend and status.
    pub requests: u64,
    /// Of those, answered with a 5xx status.
    pub errors: u64,
    pub sessions_created: u64,
    /// `tether_sessions_orphaned_total`: requests for a session whose owner
    /// is gone.
    pub sessions_orphaned: u64,
    pub invalid_tokens: u64,
    /// `tether_active_streams`: open now.
    pub streams: u64,
}

impl Totals {
    /// These totals moved on from reading `before` to reading `now`: each
    /// counter series adds its growth (all of it when it is new, or when it
    /// went down: removed and counted again from zero).
    fn advance(mut self, before: &Reading, now: &Reading) -> Totals {
        self.streams = 0;
        for (key, &(family, value)) in &now.series {
            let was = before.series.get(key).map_or(0, |&(_, v)| v);
            let grew = if value >= was { value - was } else { value };
            match family {
                Family::Requests { error } => {
                    self.requests += grew;
                    if error {
                        self.errors += grew;
                    }
                }
                Family::SessionsCreated => self.sessions_created += grew,
                Family::SessionsOrphaned => self.sessions_orphaned += grew,
                Family::InvalidTokens => self.invalid_tokens += grew,
                Family::Streams => self.streams += value,
            }
        }
        self
    }
}

/// Which total a series counts towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `error`: its `status` label is a 5xx.
    Requests {
        error: bool,
    },
    SessionsCreated,
    SessionsOrphaned,
    InvalidTokens,
    Streams,
}

/// One reading of the registry: the value of each series the page charts,
/// by its sample line's name and labels.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    series: HashMap<String, (Family, u64)>,
}

impl Reading {
    /// Reads the registry's text encoding, as a scrape does.
    pub fn read(registry: &Registry) -> Reading {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
            tracing::warn!(error = %e, "metrics encoding failed; status sample skipped");
        }
        Reading::parse(&text)
    }

    /// OpenMetrics sample lines (`name{labels} value`); other lines and
    /// values that are not numbers are skipped.
    fn parse(text: &str) -> Reading {
        let mut series = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, labels, rest) = match line.find('{') {
                Some(open) => match line[open..].find('}') {
                    Some(close) => (
                        &line[..open],
                        &line[open + 1..open + close],
                        &line[open + close + 1..],
                    ),
                    None => continue,
                },
                None => match line.split_once(' ') {
                    Some((name, rest)) => (name, "", rest),
                    None => continue,
                },
            };
            let Some(value) = rest.split_whitespace().next().and_then(number) else {
                continue;
            };
            let family = match name {
                "tether_requests_total" => Family::Requests {
                    error: label(labels, "status").is_some_and(|s| s.starts_with('5')),
                },
                "tether_sessions_created_total" => Family::SessionsCreated,
                "tether_sessions_orphaned_total" => Family::SessionsOrphaned,
                "tether_invalid_tokens_total" => Family::InvalidTokens,
                "tether_active_streams" => Family::Streams,
                _ => continue,
            };
            series.insert(format!("{name}{{{labels}}}"), (family, value));
        }
        Reading { series }
    }
}

/// A counter or gauge value as a whole number (negative gauges count as 0).
fn number(v: &str) -> Option<u64> {
    v.parse::<u64>()
        .ok()
        .or_else(|| v.parse::<f64>().ok().map(|f| f.max(0.0) as u64))
}

/// The value of label `name` in `a="x",b="y"` (values are host:port and
/// numbers here, so no escaped quote needs handling).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    totals: Totals,
}

/// The ring of samples, with the reading the last one was taken from.
pub struct History {
    state: Mutex<Ring>,
    capacity: usize,
}

#[derive(Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// What the last sample read (empty before the first).
    last: Reading,
}

impl Ring {
    fn totals(&self) -> Totals {
        self.samples.back().map(|s| s.totals).unwrap_or_default()
    }
}

impl Default for History {
    fn default() -> Self {
        let capacity = (WINDOW.as_secs() / INTERVAL.as_secs()) as usize + 1;
        History {
            state: Mutex::new(Ring {
                samples: VecDeque::with_capacity(capacity),
                last: Reading::default(),
            }),
            capacity,
        }
    }
}

impl History {
    /// Records the totals `reading` makes as the sample taken `at`, the
    /// oldest leaving a full ring.
    pub fn record(&self, at: Instant, reading: Reading) {
        let mut ring = lock(&self.state);
        let totals = ring.totals().advance(&ring.last, &reading);
        if ring.samples.len() == self.capacity {
            ring.samples.pop_front();
        }
        ring.samples.push_back(Sample { at, totals });
        ring.last = reading;
    }

    /// The totals as of `reading` (taken now), without recording a sample.
    pub fn current(&self, reading: &Reading) -> Totals {
        let ring = lock(&self.state);
        ring.totals().advance(&ring.last, reading)
    }

    /// The charts' points, oldest first: the rate per second of each counter
    /// between consecutive samples, and open streams at the later one; the
    /// last point runs from the last sample to `now` (`current`).
    pub fn points(&self, now: Instant, current: Totals) -> Vec<serde_json::Value> {
        let samples: Vec<Sample> = lock(&self.state).samples.iter().copied().collect();
        let mut out = Vec::with_capacity(samples.len());
        for pair in samples.windows(2) {
            out.push(point(&pair[0], &pair[1], now));
        }
        if let Some(last) = samples.last() {
            let live = Sample {
                at: now.max(last.at),
                totals: current,
            };
            out.push(point(last, &live, now));
        }
        out
    }

    /// Samples taken and kept.
    pub fn len(&self) -> usize {
        lock(&self.state).samples.len()
    }
}

/// The rates from `a` to `b`, dated by how long before `now` `b` was.
fn point(a: &Sample, b: &Sample, now: Instant) -> serde_json::Value {
    let span = b.at.saturating_duration_since(a.at).max(MIN_SPAN);
    let rate = |x: u64, y: u64| {
        let per_second = y.saturating_sub(x) as f64 / span.as_secs_f64();
        (per_second * 1000.0).round() / 1000.0
    };
    let (x, y) = (&a.totals, &b.totals);
    json!({
        "seconds_ago": now.saturating_duration_since(b.at).as_secs(),
        "requests": rate(x.requests, y.requests),
        "errors": rate(x.errors, y.errors),
        "sessions_created": rate(x.sessions_created, y.sessions_created),
        "sessions_orphaned": rate(x.sessions_orphaned, y.sessions_orphaned),
        "invalid_tokens": rate(x.invalid_tokens, y.invalid_tokens),
        "streams": y.streams,
    })
}

/// Samples `registry` into `history` every `INTERVAL` from one interval on
/// (`Admin::new` takes the first, so a page opened at once has one) until
/// `shutdown` changes. Started with the admin listener.
pub async fn sample(history: &History, registry: &Registry, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval_at(Instant::now() + INTERVAL, INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            at = every.tick() => history.record(at, Reading::read(registry)),
            _ = shutdown.changed() => return,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
