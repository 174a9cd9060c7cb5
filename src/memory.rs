//! Memory a burst leaves behind goes back to the OS.
//!
//! A burst of connections (clients reconnecting after a deploy, a load test)
//! fills the buffer pools and the allocator's heap; once it is over, held
//! streams and idle connections need a small part of that. Without help the
//! process keeps it all: a pooled buffer stays pooled, and glibc gives back
//! only the top of its heap, which a single live allocation pins. So:
//! - a thread's pooled buffers that no request took for `http1::buf::IDLE`
//!   are freed, at every `LOOK`th time the thread goes idle (`on_park`) and
//!   at each tick of the thread the ticking task runs on;
//! - every `TICK`, when the allocator holds `GROWN` bytes more free than the
//!   least it held since the last trim (memory was used and given back),
//!   `malloc_trim` returns its free pages to the OS (glibc on Linux only).
//!
//! Nothing here is on a request's path: `on_park` counts, and reads the
//! clock once per `LOOK` parks (at every park it cost 1.5% of a sticky
//! request's user-space instructions at one connection, which parks once a
//! request: `bench/instructions.sh`); the pool's cost per `take` is one
//! comparison.

use std::time::Duration;

use tokio::time::Instant;

use crate::http1::buf;

/// How often the allocator is looked at.
const TICK: Duration = Duration::from_millis(250);
/// Free memory grown by this much since the last trim is given back.
const GROWN: usize = 1 << 20;

/// Parks of a thread between two looks at its pool.
const LOOK: u32 = 32;

thread_local! {
    static PARKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// For the runtime's `on_thread_park`: every `LOOK` parks, the thread's
/// idle pooled buffers go.
pub fn on_park() {
    let parks = PARKS.with(|p| {
        let n = p.get().wrapping_add(1);
        p.set(n);
        n
    });
    if parks % LOOK == 0 {
        buf::trim_idle(std::time::Instant::now());
    }
}

/// Runs until `stop` ends: every `TICK`, this thread's idle buffers go,
/// and the heap is trimmed when it has grown free memory.
pub async fn give_back(stop: impl std::future::Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heap = Heap::default();
    loop {
        tokio::select! {
            now = tick.tick() => {
                buf::trim_idle(Instant::into_std(now));
                if let Some(free) = heap::free_bytes() {
                    if heap.grown(free) {
                        heap::trim();
                        tracing::debug!(free_bytes = free, "free heap memory given back to the OS");
                    }
                }
            }
            () = &mut stop => return,
        }
    }
}

/// The allocator's free memory over time.
#[derive(Default)]
struct Heap {
    /// The least free memory seen since the last trim (`None` before the
    /// first sample).
    low: Option<usize>,
}

impl Heap {
    /// Whether the heap has `GROWN` more free bytes than the least it had
    /// since the last trim; if so, that is where the next one starts.
    fn grown(&mut self, free: usize) -> bool {
        let low = self.low.map_or(free, |low| low.min(free));
        if free >= low.saturating_add(GROWN) {
            self.low = Some(free);
            return true;
        }
        self.low = Some(low);
        false
    }
}

/// The crate's only `unsafe`: two glibc calls, no pointers. Measured
/// (`bench/sse_hold.py`, 4,000 held legacy streams opened 500 at a time,
/// one thread): 4.6-5.3 KiB of RSS per held stream without the trim,
/// 3.5-3.6 with it; the pool's decay alone changed nothing, since glibc
/// kept the pages the freed buffers had.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod heap {
    /// Bytes in the allocator's free chunks, all arenas.
    pub fn free_bytes() -> Option<usize> {
        // SAFETY: mallinfo2 only reads the allocator's own statistics.
        Some(unsafe { libc::mallinfo2() }.fordblks)
    }

    /// Returns the free pages of every arena to the OS.
    pub fn trim() {
        // SAFETY: malloc_trim takes the arenas' locks itself.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod heap {
    pub fn free_bytes() -> Option<usize> {
        None
    }

    pub fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_is_trimmed_once_memory_was_used_and_given_back_not_while_it_is_held() {
        let mut heap = Heap::default();
        assert!(!heap.grown(10 << 20), "a first sample is only a start");
        // Memory taken (less free), then given back: trimmed.
        assert!(!heap.grown(2 << 20));
        assert!(!heap.grown((2 << 20) + GROWN - 1));
        assert!(heap.grown((2 << 20) + GROWN));
        // Trimmed free memory stays free: no trim again for the same bytes.
        assert!(!heap.grown((2 << 20) + GROWN));
        assert!(!heap.grown((2 << 20) + GROWN + 4096));
        // A new burst used it and gave it back: trimmed again.
        assert!(!heap.grown(1 << 20));
        assert!(heap.grown((1 << 20) + 2 * GROWN));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_freed_pages_back() {
        // Many small blocks freed behind one kept at the top of the heap:
        // glibc keeps their pages until a trim.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 4000]).collect();
        let pin = vec![1u8; 4000];
        let before = heap::free_bytes().unwrap();
        drop(blocks);
        let freed = heap::free_bytes().unwrap();
        assert!(freed >= before + (8 << 20), "{before} -> {freed}");
        let mut heap = Heap::default();
        heap.grown(before);
        assert!(heap.grown(freed));
        let resident = || {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            statm.split(' ').nth(1).unwrap().parse::<usize>().unwrap() * 4096
        };
        let held = resident();
        heap::trim();
        let after = resident();
        assert!(
            after + (8 << 20) <= held,
            "the trim gave back {} bytes of 16 MB freed",
            held.saturating_sub(after)
        );
        drop(pin);
    }
}
