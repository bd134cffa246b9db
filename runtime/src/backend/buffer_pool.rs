//! The CPU's reuse of tensor buffers. A training step allocates tensors of the same sizes
//! every time, and malloc maps a fresh zeroed region for each large one and unmaps it when the
//! tensor drops: every page of it faults again on first touch (a 2 MiB activation, 512 page
//! faults). Dropped tensors' buffers wait here instead, by length, for the next tensor of that
//! length, on the thread that dropped them; so a steady-state step allocates nothing.

use std::cell::RefCell;
use std::collections::HashMap;

/// The most bytes one thread's pool holds; buffers beyond it are freed.
const MAX_BYTES: usize = 256 << 20;
/// The most buffers of one length the pool holds.
const MAX_PER_LEN: usize = 64;

#[derive(Default)]
struct Pool {
    by_len: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A buffer of `len` elements (holding stale values) from the pool, if one waits there.
pub(crate) fn take(len: usize) -> Option<Vec<f32>> {
    if len == 0 {
        return None;
    }
    POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let buffer = pool.by_len.get_mut(&len)?.pop()?;
        pool.bytes -= bytes(&buffer);
        Some(buffer)
    })
    .ok()
    .flatten()
}

/// Keeps `buffer` for a later [`take`] of its length, or frees it (an empty one, one with
/// spare capacity, or one the pool has no room for).
pub(crate) fn give(buffer: Vec<f32>) {
    let len = buffer.len();
    if len == 0 || buffer.capacity() != len {
        return;
    }
    // During thread exit the pool may be gone: the buffer is then freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let size = bytes(&buffer);
        if pool.bytes + size > MAX_BYTES {
            return;
        }
        let waiting = pool.by_len.entry(len).or_default();
        if waiting.len() < MAX_PER_LEN {
            waiting.push(buffer);
            pool.bytes += size;
        }
    });
}

fn bytes(buffer: &[f32]) -> usize {
    std::mem::size_of_val(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_by_length_once() {
        let buffer = vec![1.5f32; 1000];
        let address = buffer.as_ptr();
        give(buffer);
        assert!(take(1001).is_none());
        let reused = take(1000).unwrap();
        assert_eq!(reused.as_ptr(), address);
        assert!(take(1000).is_none(), "handed out once");
        let mut spare = Vec::with_capacity(20);
        spare.resize(10, 0.0f32);
        give(spare);
        assert!(take(10).is_none(), "only exact-capacity buffers are kept");
    }
}
