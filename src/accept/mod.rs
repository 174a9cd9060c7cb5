//! Stage 1, both listeners: what a failed accept (out of descriptors, most
//! often) and an ended connection task mean. A failed accept is retried after
//! a short pause, counted, and logged at most once per `ACCEPT_LOG_EVERY` with
//! the number of failures since: the condition can last, the log must not
//! flood.

pub mod limit;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{self, Metrics};

/// Pause before accepting again after a failure.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// At most one log line per this long about failing accepts.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// A connection task that panicked outside its guarded part (the panic hook
/// has printed it): counted with the others.
pub fn task_ended(joined: Result<(), tokio::task::JoinError>, metrics: &Metrics) {
    if let Err(e) = joined {
        if e.is_panic() {
            metrics.internal_errors.inc();
        }
    }
}

/// Failed accepts on one listener: counted by kind, logged sparingly.
pub struct AcceptErrors {
    metrics: Arc<Metrics>,
    listener: &'static str,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    pub fn new(metrics: Arc<Metrics>, listener: &'static str) -> Self {
        AcceptErrors {
            metrics,
            listener,
            last_log: None,
            unlogged: 0,
        }
    }

    /// Counts `e`, logs it if none was logged for a while, and pauses
    /// before the next accept instead of spinning.
    pub async fn failed(&mut self, e: &std::io::Error) {
        let kind = match e.raw_os_error() {
            Some(24) => "emfile", // EMFILE: this process is out of descriptors
            Some(23) => "enfile", // ENFILE: the system is
            _ => "other",
        };
        self.metrics
            .accept_errors
            .get_or_create(&metrics::Kind { kind })
            .inc();
        let now = Instant::now();
        let due = match self.last_log {
            Some(at) => now.duration_since(at) >= ACCEPT_LOG_EVERY,
            None => true,
        };
        if due {
            tracing::error!(listener = self.listener, error = %e, kind, failures_since_last_log = self.unlogged, "accept failed; retrying");
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        tokio::time::sleep(ACCEPT_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn accept_failures_are_counted_and_logged_sparingly() {
        let metrics = Arc::new(Metrics::default());
        let mut errors = AcceptErrors::new(metrics.clone(), "proxy");
        let emfile = std::io::Error::from_raw_os_error(24);
        let mut logged = 0;
        let start = Instant::now();
        // Twelve seconds of failures, one every ACCEPT_RETRY.
        while start.elapsed() < Duration::from_secs(12) {
            let before = errors.last_log;
            errors.failed(&emfile).await;
            if errors.last_log != before {
                logged += 1;
            }
        }
        assert_eq!(logged, 2, "the first, and one after ten seconds");
        let n = metrics
            .accept_errors
            .get_or_create(&metrics::Kind { kind: "emfile" })
            .get();
        assert_eq!(n, 240, "every failure counted (12 s / 50 ms)");
    }
}
