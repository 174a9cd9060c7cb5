//! `limits.max_connections`: how many client connections may be open. At the
//! limit the accept loop waits for one to close (the kernel's backlog holds
//! new ones meanwhile). A reload changes the limit at once: lowering it below
//! what is open only stops accepting until enough have closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct ConnLimit {
    /// 0: no limit.
    limit: AtomicUsize,
    open: AtomicUsize,
    freed: Notify,
}

/// One open connection's place; freed when dropped.
#[derive(Debug)]
pub struct Slot(Arc<ConnLimit>);

impl ConnLimit {
    pub fn new(limit: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            limit: AtomicUsize::new(limit),
            ..ConnLimit::default()
        })
    }

    pub fn set(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        // A raised limit may let the waiting accept loop go on.
        self.freed.notify_one();
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place for one more connection, if the limit allows. Only the accept
    /// loop takes places, so checking then adding is not a race.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit != 0 && self.open.load(Ordering::Relaxed) >= limit {
            return None;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot(self.clone()))
    }

    /// Resolves after a connection closed or the limit changed (a wake-up
    /// that comes before the wait is kept: `notify_one` stores it).
    pub async fn changed(&self) {
        self.freed.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limit_holds_and_follows_changes_both_ways() {
        let l = ConnLimit::new(2);
        let a = l.try_take().unwrap();
        let b = l.try_take().unwrap();
        assert!(l.try_take().is_none());
        drop(a);
        l.changed().await; // the drop's wake-up was kept
        let c = l.try_take().unwrap();
        // Lowered below what is open: nothing more until enough closed.
        l.set(1);
        assert!(l.try_take().is_none());
        drop(b);
        assert!(l.try_take().is_none(), "one still open, limit 1");
        drop(c);
        let d = l.try_take().unwrap();
        assert!(l.try_take().is_none());
        l.set(0);
        let many: Vec<_> = (0..100).map(|_| l.try_take().unwrap()).collect();
        assert_eq!(l.open(), 101);
        drop((d, many));
        assert_eq!(l.open(), 0);
    }
}
