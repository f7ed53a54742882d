//! Byte buffers kept for reuse by each worker thread.
//!
//! Under load a connection's read buffer and write queue empty and fill again with every
//! read, and every relayed message is built in a buffer of its own; allocating them anew
//! each time, and growing a queue frame by frame, cost a tenth of the relay's own work per
//! message. An idle connection still holds no buffer: emptied ones come back here, and each
//! thread keeps only a few.

use std::cell::RefCell;

/// Capacity of a new buffer: a read's worth of signaling frames.
pub const SIZE: usize = 4096;

/// Buffers kept per thread.
const KEPT: usize = 32;

/// Larger buffers are freed rather than kept: one big offer should not pin memory.
const LARGEST_KEPT: usize = 64 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least [`SIZE`] bytes.
#[inline]
pub fn take() -> Vec<u8> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// [`take`] as a `String`.
pub fn take_string() -> String {
    // An empty buffer is valid UTF-8.
    String::from_utf8(take()).unwrap_or_default()
}

/// Keeps `buf`, emptied, for a later [`take`] on this thread, or frees it.
#[inline]
pub fn give(mut buf: Vec<u8>) {
    if !(SIZE..=LARGEST_KEPT).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    // A thread being torn down has no spares any more; the buffer is simply freed.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_comes_back_empty_and_odd_sizes_are_freed() {
        let mut buf = take();
        assert!(buf.capacity() >= SIZE);
        buf.extend_from_slice(b"frame");
        let at = buf.as_ptr();
        give(buf);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
        give(Vec::with_capacity(LARGEST_KEPT * 2));
        give(Vec::new());
        assert!(take().capacity() <= LARGEST_KEPT);
    }
}
