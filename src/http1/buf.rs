//! Per-thread pool of I/O buffers.
//!
//! A connection takes a buffer when bytes arrive and gives it back as soon as
//! it is empty, so the thousands of idle connections a proxy holds (kept-alive
//! clients, held SSE streams) own no buffer at all, and a busy thread reuses
//! the same few warm buffers instead of asking the allocator each time.

use std::cell::RefCell;

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

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least `SIZE` bytes of capacity.
pub fn take() -> Vec<u8> {
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// Returns a buffer to the pool (emptied). Buffers that grew past twice the
/// pooled size (a large head or body) are freed instead.
pub fn give(mut buf: Vec<u8>) {
    if buf.capacity() < SIZE || buf.capacity() > 2 * SIZE {
        return;
    }
    buf.clear();
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
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
}
