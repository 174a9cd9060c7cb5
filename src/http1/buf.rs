//! Per-thread pool of I/O buffers.
//!
//! A connection takes a buffer when bytes arrive and gives it back as soon as
//! it is empty, so the thousands of idle connections a proxy holds (kept-alive
//! clients, held SSE streams) own no buffer at all, and a busy thread reuses
//! the same few warm buffers instead of asking the allocator each time.
//! A thread keeps its buffers to itself while it works; as it goes idle
//! (`spill`), all but `LOCAL` of them move to its spill, a list
//! `trim_idle` reaches from any thread (a sleeping one's too): buffers the
//! spill held unused for `IDLE` are freed, so the pool a burst filled does
//! not stay filled, and `freed_bytes` counts what went, for the heap trim
//! that follows (`crate::memory`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Size of a pooled buffer: a read of up to this many bytes at once.
pub const SIZE: usize = 16 * 1024;
/// Buffers a thread's pool keeps, and its spill; more are freed. A request
/// in flight holds up to two (the client's, the backend's), so this covers
/// a burst of 256 requests at once (an HTTP/2 client has up to 100 per
/// connection). After bursts a thread can keep up to 8 MiB in its pool and
/// as much in its spill (twice that if every buffer had grown to the
/// largest kept, 32 KiB) until `IDLE` has passed; idle connections hold
/// none of them.
const KEEP: usize = 512;
/// Buffers a thread keeps to itself as it goes idle (256 KiB): the rest go
/// to its spill.
const LOCAL: usize = 16;
/// A spilled buffer no request took for this long is freed. Short, so a
/// burst's memory is back within a second; bursts that come every second
/// or so pay for it in allocations: at most `2 * KEEP` buffers of `SIZE`
/// (16 MiB, their page faults and zeroing: a few milliseconds) a thread
/// per burst.
pub const IDLE: Duration = Duration::from_millis(250);

/// Buffers a thread spilled as it went idle.
#[derive(Default)]
struct Spill {
    free: Vec<Vec<u8>>,
    /// The fewest buffers the spill held since `since`: that many were not
    /// needed over the whole time.
    low: usize,
    since: Option<Instant>,
}

type Shared = Arc<Mutex<Spill>>;

/// Every thread's spill; a thread that ended leaves a dead `Weak`.
static SPILLS: Mutex<Vec<Weak<Mutex<Spill>>>> = Mutex::new(Vec::new());
/// Bytes of pooled buffers freed as a thread went idle: those its full
/// spill had no room for, and those `trim_idle` freed. (Buffers freed
/// past `KEEP` while a thread works are not counted: under load nothing
/// calls for a trim.)
static FREED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The thread's own buffers: the last given back is the first taken.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Touched only as the thread goes idle with more than `LOCAL`, or
    /// when its own buffers ran out.
    static SPILL: Shared = register();
}

fn register() -> Shared {
    let spill = Shared::default();
    let mut spills = lock(&SPILLS);
    spills.retain(|s| s.strong_count() > 0);
    spills.push(Arc::downgrade(&spill));
    spill
}

/// A poisoned lock is still a pool: what a panic left is a list of buffers.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer with at least `SIZE` bytes of capacity.
pub fn take() -> Vec<u8> {
    // `try_with`: a buffer taken or given in another thread-local's
    // destructor, as the thread ends, is just not pooled.
    POOL.try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
        .or_else(unspill)
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// The thread's own buffers ran out: the warmer half of its spill comes
/// back (one lock for many takes), and one of it is taken.
fn unspill() -> Option<Vec<u8>> {
    let mut back = SPILL
        .try_with(|spill| {
            let mut spill = lock(spill);
            let n = spill.free.len().div_ceil(2);
            let at = spill.free.len() - n;
            let back = spill.free.split_off(at);
            spill.low = spill.low.min(spill.free.len());
            back
        })
        .ok()?;
    let buf = back.pop();
    if !back.is_empty() {
        let _ = POOL.try_with(|pool| pool.borrow_mut().append(&mut back));
    }
    buf
}

/// A thread going idle with more than `LOCAL` buffers moves the rest (its
/// coldest) to its spill, where `trim_idle` frees them once unused for
/// `IDLE`. Costs a length check when there are not that many. Called by a
/// multi-thread runtime's `on_thread_park` (once as a worker goes idle),
/// and by `crate::memory`'s tick on its own thread (a current-thread
/// runtime parks between every few events: a hook there cost about 100
/// instructions a request).
pub fn spill() {
    let excess = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let n = pool.len().saturating_sub(LOCAL);
        (n > 0).then(|| pool.drain(..n).collect::<Vec<_>>())
    });
    if let Ok(Some(mut excess)) = excess {
        let cold = SPILL.try_with(|spill| {
            let mut spill = lock(spill);
            // The spill keeps the warmest it has room for.
            let room = KEEP.saturating_sub(spill.free.len());
            let cold: Vec<_> = excess.drain(..excess.len().saturating_sub(room)).collect();
            spill.free.append(&mut excess);
            cold
        });
        if let Ok(cold) = cold {
            // Freed out of the lock, and counted: a burst is over.
            FREED.fetch_add(capacities(&cold), Ordering::Relaxed);
        }
    }
}

/// Frees the buffers every thread's spill held unused for `IDLE` up to
/// `now` (the coldest: a spill gives back its warmer half first); returns
/// how many went.
/// `now` is best the instant the caller's tick was due: read late, a
/// clock would make a tick `IDLE` after the last seem too soon.
pub fn trim_idle(now: Instant) -> usize {
    trim_each(&SPILLS, now)
}

/// `trim_idle` over `spills`, which loses the spills of ended threads.
fn trim_each(spills: &Mutex<Vec<Weak<Mutex<Spill>>>>, now: Instant) -> usize {
    let live: Vec<Shared> = {
        let mut spills = lock(spills);
        spills.retain(|s| s.strong_count() > 0);
        spills.iter().filter_map(Weak::upgrade).collect()
    };
    live.iter()
        .map(|spill| {
            // Freed out of the lock, which a thread's `unspill` may wait on.
            let unused = trim(&mut lock(spill), now);
            FREED.fetch_add(capacities(&unused), Ordering::Relaxed);
            unused.len()
        })
        .sum()
}

/// Takes out of `spill` the buffers it held unused since the last trim, if
/// that was `IDLE` ago.
fn trim(spill: &mut Spill, now: Instant) -> Vec<Vec<u8>> {
    let unused = match spill.since {
        Some(since) if now.saturating_duration_since(since) < IDLE => return Vec::new(),
        Some(_) => spill.low.min(spill.free.len()),
        None => 0,
    };
    let unused: Vec<_> = spill.free.drain(..unused).collect();
    if spill.free.is_empty() {
        spill.free = Vec::new();
    }
    spill.low = spill.free.len();
    spill.since = Some(now);
    unused
}

fn capacities(bufs: &[Vec<u8>]) -> usize {
    bufs.iter().map(Vec::capacity).sum()
}

/// Bytes of spilled buffers freed since the process started.
pub fn freed_bytes() -> usize {
    FREED.load(Ordering::Relaxed)
}

/// Returns a buffer to the pool (emptied). Buffers that grew past twice the
/// pooled size (a large head or body) are freed instead, as are those past
/// `KEEP`.
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() < SIZE || buf.capacity() > 2 * SIZE {
        return;
    }
    buf.clear();
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < KEEP {
            pool.push(buf);
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

    /// `trim` on this thread's spill alone: `trim_idle` would reach the
    /// spills of the tests running beside this one.
    fn trim_here(now: Instant) -> usize {
        let unused = SPILL.with(|s| trim(&mut lock(s), now));
        FREED.fetch_add(capacities(&unused), Ordering::Relaxed);
        unused.len()
    }

    fn spilled() -> usize {
        SPILL.with(|s| lock(s).free.len())
    }

    #[test]
    fn a_thread_going_idle_spills_all_but_a_few_and_spilled_buffers_unused_for_a_while_go() {
        POOL.with(|p| p.borrow_mut().clear());
        SPILL.with(|s| *lock(s) = Spill::default());
        let t0 = Instant::now();
        trim_here(t0);
        let bufs: Vec<_> = (0..LOCAL + 10).map(|_| take()).collect();
        let cold = bufs[0].as_ptr();
        bufs.into_iter().for_each(give);
        spill();
        assert_eq!(spilled(), 10, "all but LOCAL are spilled");
        assert_eq!(POOL.with(|p| p.borrow().len()), LOCAL);
        spill();
        assert_eq!(spilled(), 10, "no more than that");
        assert_eq!(trim_here(t0), 0, "nothing goes before IDLE has passed");
        // The spill started empty: none of the 10 sat there all along.
        assert_eq!(trim_here(t0 + IDLE), 0);
        // Within the next period the thread's own run out and 4 more are
        // taken: the warmer half of the spill comes back, 5 never moved.
        let again: Vec<_> = (0..LOCAL + 4).map(|_| take()).collect();
        assert_eq!(spilled(), 5);
        again.into_iter().for_each(give);
        spill();
        assert_eq!(trim_here(t0 + IDLE * 3 / 2), 0, "not yet");
        let before = freed_bytes();
        assert_eq!(trim_here(t0 + IDLE * 2), 5, "the 5 unused go");
        assert!(freed_bytes() >= before + 5 * SIZE, "what went is counted");
        let all: Vec<_> = (0..LOCAL + 5).map(|_| take()).collect();
        assert!(
            all.iter().all(|b| b.as_ptr() != cold),
            "the coldest buffer went, not a warm one"
        );
        all.into_iter().for_each(give);
        spill();
        // After a quiet period the spill is empty and holds no allocation;
        // the thread keeps LOCAL.
        assert_eq!(trim_here(t0 + IDLE * 3), 0);
        assert_eq!(trim_here(t0 + IDLE * 4), 5);
        assert_eq!(SPILL.with(|s| lock(s).free.capacity()), 0);
        assert_eq!(POOL.with(|p| p.borrow().len()), LOCAL);
    }

    #[test]
    fn a_full_spill_keeps_the_warmest_and_counts_what_it_had_no_room_for() {
        POOL.with(|p| p.borrow_mut().clear());
        let full: Vec<_> = (0..KEEP).map(|_| Vec::with_capacity(SIZE)).collect();
        SPILL.with(|s| lock(s).free = full);
        let bufs: Vec<_> = (0..LOCAL + 3).map(|_| Vec::with_capacity(SIZE)).collect();
        let coldest_kept = bufs[3].as_ptr();
        bufs.into_iter().for_each(give);
        let before = freed_bytes();
        spill();
        assert_eq!(spilled(), KEEP, "the spill stays at KEEP");
        assert!(
            freed_bytes() >= before + 3 * SIZE,
            "the 3 it had no room for are counted as freed"
        );
        assert_eq!(POOL.with(|p| p.borrow().len()), LOCAL);
        assert_eq!(
            POOL.with(|p| p.borrow()[0].as_ptr()),
            coldest_kept,
            "the thread keeps its warmest LOCAL"
        );
        SPILL.with(|s| *lock(s) = Spill::default());
    }

    #[test]
    fn a_sleeping_threads_spill_is_reached_and_an_ended_threads_is_gone() {
        let (spilled, asleep) = std::sync::mpsc::channel();
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let bufs: Vec<_> = (0..LOCAL + 3).map(|_| take()).collect();
            bufs.into_iter().for_each(give);
            spill();
            spilled.send(SPILL.with(Arc::downgrade)).unwrap();
            // Asleep: it takes nothing and gives nothing back.
            let _ = woken.recv();
        });
        let spill = asleep.recv().unwrap().upgrade().unwrap();
        let registered = || {
            lock(&SPILLS)
                .iter()
                .any(|s| s.as_ptr() == Arc::as_ptr(&spill))
        };
        assert!(registered(), "a thread's spill is known to trim_idle");
        // trim_idle's walk, over the sleeping thread's spill and an ended
        // thread's (trim_idle itself would reach the spills of the tests
        // running beside this one).
        let ended = Arc::downgrade(&Shared::default());
        let spills = Mutex::new(vec![ended, Arc::downgrade(&spill)]);
        let t0 = Instant::now();
        assert_eq!(trim_each(&spills, t0), 0, "nothing before IDLE");
        assert_eq!(lock(&spills).len(), 1, "the ended thread's is let go");
        let before = freed_bytes();
        assert_eq!(trim_each(&spills, t0 + IDLE), 3);
        assert!(lock(&spill).free.is_empty());
        assert!(freed_bytes() >= before + 3 * SIZE, "what went is counted");
        let weak = Arc::downgrade(&spill);
        drop(spill);
        wake.send(()).unwrap();
        thread.join().unwrap();
        assert!(
            weak.upgrade().is_none(),
            "an ended thread's spill is dropped"
        );
    }
}
