//! Per-thread pool of I/O buffers.
//!
//! A connection takes a buffer when bytes arrive and gives it back as soon as
//! it is empty, so the thousands of idle connections a proxy holds (kept-alive
//! clients, held SSE streams) own no buffer at all, and a busy thread reuses
//! the same few warm buffers instead of asking the allocator each time.
//! Buffers a thread has not needed for `IDLE` are freed (`trim_idle`, from
//! `crate::memory`), so the pool a burst filled does not stay filled.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Size of a pooled buffer: a read of up to this many bytes at once.
pub const SIZE: usize = 16 * 1024;
/// Buffers kept per thread; more are freed. A request in flight holds up
/// to two (the client's, the backend's), so this covers a burst of 256
/// requests at once (an HTTP/2 client has up to 100 per connection). After
/// such a burst a thread keeps 8 MiB (16 MiB if every buffer had grown to
/// the largest kept, 32 KiB), as the allocator would keep the memory too
/// (it gives back only the top of its heap); an idle thread keeps none
/// more than that, and idle connections hold none of them.
const KEEP: usize = 512;
/// A pooled buffer no request took for this long is freed.
pub const IDLE: Duration = Duration::from_millis(250);

struct Pool {
    free: Vec<Vec<u8>>,
    /// The fewest buffers the pool held since `since`: that many were not
    /// needed over the whole time.
    low: usize,
    since: Option<Instant>,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            free: Vec::new(),
            low: 0,
            since: None,
        })
    };
}

/// An empty buffer with at least `SIZE` bytes of capacity.
pub fn take() -> Vec<u8> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let buf = pool.free.pop();
        pool.low = pool.low.min(pool.free.len());
        buf
    })
    .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// Frees the buffers this thread's pool held unused for `IDLE` up to `now`
/// (the coldest: the pool hands out the last given back first). Called by
/// `crate::memory` (at parks and ticks); returns how many went.
pub fn trim_idle(now: Instant) -> usize {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let pool = &mut *pool;
        let unused = match pool.since {
            Some(since) if now.saturating_duration_since(since) < IDLE => return 0,
            Some(_) => pool.low.min(pool.free.len()),
            None => 0,
        };
        pool.free.drain(..unused);
        if pool.free.is_empty() {
            pool.free = Vec::new();
        }
        pool.low = pool.free.len();
        pool.since = Some(now);
        unused
    })
}

/// Returns a buffer to the pool (emptied). Buffers that grew past twice the
/// pooled size (a large head or body) are freed instead.
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() < SIZE || buf.capacity() > 2 * SIZE {
        return;
    }
    buf.clear();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.free.len() < KEEP {
            pool.free.push(buf);
        }
    });
}

/// Gives `buf` back if it holds nothing, leaving an unallocated `Vec` in its place.
pub fn release_if_empty(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 0 {
        give(std::mem::take(buf));
    }
}

/// Makes sure `buf` has a pooled allocation before reading into it.
pub fn ensure(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        *buf = take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_released_only_when_empty() {
        let mut a = take();
        a.extend_from_slice(b"abc");
        let ptr = a.as_ptr();
        release_if_empty(&mut a);
        assert_eq!(
            a.capacity(),
            SIZE.max(a.capacity()),
            "a non-empty buffer stays"
        );
        a.clear();
        release_if_empty(&mut a);
        assert_eq!(a.capacity(), 0);
        let b = take();
        assert_eq!(b.as_ptr(), ptr, "the freed buffer is the next one taken");
        assert!(b.is_empty());
    }

    #[test]
    fn buffers_no_request_took_for_a_while_are_freed_the_warm_ones_kept() {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            p.free.clear();
            p.since = None;
        });
        let t0 = Instant::now();
        trim_idle(t0);
        let bufs: Vec<_> = (0..10).map(|_| take()).collect();
        let cold = bufs[0].as_ptr();
        bufs.into_iter().for_each(give);
        assert_eq!(trim_idle(t0), 0, "nothing goes before IDLE has passed");
        // Started with an empty pool: none of the 10 sat unused all along.
        assert_eq!(trim_idle(t0 + IDLE), 0);
        // Within the next period, 4 are taken and given back: 6 never moved.
        let again: Vec<_> = (0..4).map(|_| take()).collect();
        again.into_iter().for_each(give);
        assert_eq!(trim_idle(t0 + IDLE * 3 / 2), 0, "not yet");
        assert_eq!(trim_idle(t0 + IDLE * 2), 6, "the 6 unused go");
        let kept: Vec<_> = (0..4).map(|_| take()).collect();
        assert!(
            kept.iter().all(|b| b.as_ptr() != cold),
            "the coldest buffer went, not a warm one"
        );
        kept.into_iter().for_each(give);
        // They were taken in that period; after a quiet one they go too, and
        // the pool holds nothing.
        assert_eq!(trim_idle(t0 + IDLE * 3), 0);
        assert_eq!(trim_idle(t0 + IDLE * 4), 4);
        assert_eq!(POOL.with(|p| p.borrow().free.capacity()), 0);
    }
}
