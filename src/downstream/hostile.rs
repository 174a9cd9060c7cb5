//! Client errors (malformed heads, slowloris, oversized heads): each one at
//! debug, and at info at most once per `EVERY` with the count since, so a
//! flood of hostile input cannot flood the log. Each is also counted in
//! `tether_connection_errors_total{kind}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(10);

static START: OnceLock<Instant> = OnceLock::new();
/// Milliseconds after `START` of the last info line; `u64::MAX`: none yet.
static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
static SINCE: AtomicU64 = AtomicU64::new(0);

pub fn note(kind: &'static str, detail: &str) {
    tracing::debug!(kind, error = %detail, "client connection error");
    let seen = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let last = LAST.load(Ordering::Relaxed);
    let due = last == u64::MAX || now.saturating_sub(last) >= EVERY.as_millis() as u64;
    if due
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SINCE.fetch_sub(seen, Ordering::Relaxed);
        tracing::info!(
            kind,
            error = %detail,
            count = seen,
            "client connection errors (this one, and the count since the last such line; each at debug)"
        );
    }
}
