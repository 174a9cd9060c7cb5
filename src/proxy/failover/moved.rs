//! The sessions this instance moved: the old token's digest -> the new
//! session's token, bounded (the oldest go first). One new session per old
//! one: requests that arrive together with the same old token (a client's
//! GET stream reconnecting while its POSTs are in flight) wait for the first
//! one's `initialize` instead of each beginning a session of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

/// How many moved sessions an instance remembers.
pub(super) const REMEMBERED: usize = 10_000;

/// A move, done or under way: the new session's token once begun, `None`
/// if it could not be.
pub(super) type Slot = Arc<OnceCell<Option<Arc<str>>>>;

pub(super) type Digest = [u8; 32];

#[derive(Default)]
pub struct Moved {
    inner: Mutex<Inner>,
    /// Whether anything was ever moved: the one check a request of a
    /// replayable session pays when nothing was.
    any: AtomicBool,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Digest, Slot>,
    order: VecDeque<Digest>,
}

impl Moved {
    pub(super) fn digest(token: &[u8]) -> Digest {
        Sha256::digest(token).into()
    }

    pub(in crate::proxy) fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token of the session `old` was moved to, if the move is done.
    pub(super) fn moved_to(&self, old: &Digest) -> Option<Arc<str>> {
        self.lock().map.get(old)?.get()?.clone()
    }

    /// The move of `old`, begun now if it is not under way or done.
    pub(super) fn slot(&self, old: Digest) -> Slot {
        let mut inner = self.lock();
        if let Some(slot) = inner.map.get(&old) {
            return slot.clone();
        }
        let slot = Slot::default();
        inner.map.insert(old, slot.clone());
        inner.order.push_back(old);
        while inner.order.len() > REMEMBERED {
            if let Some(oldest) = inner.order.pop_front() {
                inner.map.remove(&oldest);
            }
        }
        self.any.store(true, Ordering::Relaxed);
        slot
    }

    /// Forgets the move of `old` if it is still `slot` (it failed, or the
    /// session it made is gone too): the next request may begin another.
    pub(super) fn forget(&self, old: &Digest, slot: &Slot) {
        let mut inner = self.lock();
        if inner.map.get(old).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            inner.map.remove(old);
            inner.order.retain(|d| d != old);
        }
    }

    /// The slot of `old`, if any (to forget it).
    pub(super) fn current(&self, old: &Digest) -> Option<Slot> {
        self.lock().map.get(old).cloned()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.map.len(), inner.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_move_per_old_session_remembered_up_to_a_bound() {
        let moved = Moved::default();
        assert!(!moved.any());
        let first = Moved::digest(b"t2.first");
        let slot = moved.slot(first);
        assert!(moved.any());
        assert!(
            Arc::ptr_eq(&slot, &moved.slot(first)),
            "one move under way per old session"
        );
        assert_eq!(moved.moved_to(&first), None, "not done yet");
        slot.get_or_init(|| async { Some(Arc::from("t2.new")) })
            .await;
        assert_eq!(moved.moved_to(&first).as_deref(), Some("t2.new"));
        assert_eq!(moved.moved_to(&Moved::digest(b"t2.other")), None);
        for i in 0..REMEMBERED {
            moved.slot(Moved::digest(format!("t2.{i}").as_bytes()));
        }
        assert_eq!(
            moved.moved_to(&first),
            None,
            "the oldest is forgotten first"
        );
        assert_eq!(moved.len(), (REMEMBERED, REMEMBERED));
    }

    #[tokio::test]
    async fn a_failed_move_is_forgotten_and_may_be_tried_again() {
        let moved = Moved::default();
        let old = Moved::digest(b"t2.old");
        let slot = moved.slot(old);
        slot.get_or_init(|| async { None }).await;
        assert_eq!(moved.moved_to(&old), None);
        let stale = Slot::default();
        moved.forget(&old, &stale);
        assert!(
            moved.current(&old).is_some(),
            "only the same slot is forgotten"
        );
        moved.forget(&old, &slot);
        assert!(moved.current(&old).is_none());
        assert!(
            !Arc::ptr_eq(&slot, &moved.slot(old)),
            "a new move may begin"
        );
        assert_eq!(moved.len(), (1, 1));
    }
}
