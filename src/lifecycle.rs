//! Tether's own life: running, closing (a shutdown signal came: readiness
//! fails, listeners close, requests in flight finish, no connection is kept
//! after its answer), ending (the grace is over: held event streams end
//! cleanly, so their clients reconnect, through another Tether replica, to
//! the same owner).
//!
//! Read with one relaxed load. Event streams wait on `notified` (once per
//! wait, not per request): they are what a shutdown has to wake.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Lifecycle {
    phase: AtomicU8,
    notify: Notify,
}

const CLOSING: u8 = 1;
const ENDING: u8 = 2;

impl Lifecycle {
    /// A shutdown has begun.
    pub fn closing(&self) -> bool {
        self.phase.load(Ordering::Relaxed) >= CLOSING
    }

    /// The grace is over: streams end now.
    pub fn ending(&self) -> bool {
        self.phase.load(Ordering::Relaxed) >= ENDING
    }

    pub fn begin_closing(&self) {
        self.phase.fetch_max(CLOSING, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    pub fn begin_ending(&self) {
        self.phase.fetch_max(ENDING, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    /// Resolves once the grace is over.
    pub async fn until_ending(self: std::sync::Arc<Self>) {
        loop {
            let changed = self.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.ending() {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once a shutdown has begun.
    pub async fn until_closing(self: std::sync::Arc<Self>) {
        loop {
            let changed = self.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.closing() {
                return;
            }
            changed.await;
        }
    }

    /// Resolves at the next phase change (made before checking the phase,
    /// so no change is missed).
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}
