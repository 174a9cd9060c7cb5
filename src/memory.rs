//! Memory a burst leaves behind goes back to the OS.
//!
//! A burst of connections (clients reconnecting after a deploy, a load test)
//! fills the buffer pools and the allocator's heap; once it is over, held
//! streams and idle connections need a small part of that. Without help the
//! process keeps it all: a pooled buffer stays pooled, and glibc gives back
//! only the top of its heap, which a single live allocation pins. So, every
//! `TICK`:
//! - the buffers each thread spilled as it went idle (this task's own
//!   thread spills at each tick) that no request took for
//!   `http1::buf::IDLE` are freed (a sleeping thread's too);
//! - when pooled buffers of `GROWN` bytes or more were freed since the last
//!   trim (the sign that a burst is over: the rest of its memory went with
//!   them), and `MIN_GAP` has passed since it, `malloc_trim` returns the
//!   allocator's free pages to the OS (glibc on Linux only), on a blocking
//!   thread: it walks every arena, which no worker should wait for.
//!
//! Nothing here is on a request's path: `take` and `give` stay the
//! thread's own (no lock), and a thread going idle checks a length. Under
//! steady load nothing is freed, so nothing is trimmed.

use std::time::{Duration, Instant};

use crate::http1::buf;

/// How often the spills are looked at.
const TICK: Duration = Duration::from_millis(250);
/// Buffers freed since the last trim, in bytes, that call for the next one.
const GROWN: usize = 2 << 20;
/// The least time between two trims.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Runs until `stop` ends: every `TICK`, idle spilled buffers go, and the
/// heap is trimmed once enough of them went.
pub async fn give_back(stop: impl std::future::Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trigger = Trigger::default();
    loop {
        tokio::select! {
            due = tick.tick() => {
                // When the tick was due, not when it ran: a late one is
                // still `TICK` after the last (`buf::trim_idle`).
                let now = due.into_std();
                buf::spill();
                buf::trim_idle(now);
                if heap::TRIMS && trigger.due(buf::freed_bytes(), now) {
                    let _ = tokio::task::spawn_blocking(heap::trim).await;
                    tracing::debug!("free heap memory given back to the OS");
                }
            }
            () = &mut stop => return,
        }
    }
}

/// When the heap is to be trimmed: `GROWN` bytes of buffers freed since
/// the last trim, `MIN_GAP` after it.
#[derive(Default)]
struct Trigger {
    /// `buf::freed_bytes()` at the last trim.
    freed: usize,
    last: Option<Instant>,
}

impl Trigger {
    fn due(&mut self, freed: usize, now: Instant) -> bool {
        let grown = freed.wrapping_sub(self.freed) >= GROWN;
        let apart = self.last.map_or(true, |t| now.duration_since(t) >= MIN_GAP);
        if grown && apart {
            self.freed = freed;
            self.last = Some(now);
            return true;
        }
        false
    }
}

/// The crate's only `unsafe`: one glibc call, no pointers. Measured
/// (`bench/sse_hold.py`, 4,000 held legacy streams opened 500 at a time):
/// 4.0-4.4 KiB of RSS per held stream without the trim, 3.5 with it; the
/// pools' decay alone changed nothing, since glibc kept the pages the freed
/// buffers had.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod heap {
    pub const TRIMS: bool = true;

    /// Returns the free pages of every arena to the OS.
    pub fn trim() {
        // SAFETY: malloc_trim takes no pointer; it takes the arenas' locks
        // itself.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod heap {
    pub const TRIMS: bool = false;

    pub fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_is_trimmed_once_enough_buffers_went_and_not_twice_in_a_row() {
        let mut trigger = Trigger::default();
        let t0 = Instant::now();
        assert!(!trigger.due(GROWN - 1, t0), "not for less than GROWN");
        assert!(trigger.due(GROWN, t0));
        assert!(!trigger.due(GROWN, t0 + MIN_GAP), "nothing freed since");
        let more = 2 * GROWN + 4096;
        assert!(!trigger.due(more, t0 + MIN_GAP / 2), "too soon after one");
        assert!(trigger.due(more, t0 + MIN_GAP));
        assert!(!trigger.due(more + GROWN - 1, t0 + MIN_GAP * 3));
        assert!(trigger.due(more + GROWN, t0 + MIN_GAP * 3));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_freed_pages_back() {
        // Many small blocks freed behind one kept at the top of the heap:
        // glibc keeps their pages until a trim. 64 MB of them, half to come
        // back: tests running beside this one allocate too (RSS is the
        // process's), by far less than that.
        let blocks: Vec<Vec<u8>> = (0..16384).map(|_| vec![1u8; 4000]).collect();
        let pin = vec![1u8; 4000];
        // Seen, so an optimised build does not elide the allocations.
        drop(std::hint::black_box(blocks));
        let pin = std::hint::black_box(pin);
        let resident = || {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            statm.split(' ').nth(1).unwrap().parse::<usize>().unwrap() * 4096
        };
        let held = resident();
        heap::trim();
        let after = resident();
        assert!(
            after + (32 << 20) <= held,
            "the trim gave back {} bytes of 64 MB freed",
            held.saturating_sub(after)
        );
        drop(pin);
    }
}
