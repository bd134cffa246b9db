//! The CPU's reuse of tensor buffers. A training step allocates tensors of the same sizes
//! every time, and malloc maps a fresh zeroed region for each large one and unmaps it when the
//! tensor drops: every page of it faults again on first touch (a 2 MiB activation, 512 page
//! faults). Dropped tensors' buffers wait here instead, by length, for the next tensor of that
//! length, on the thread that dropped them; so a steady-state step allocates nothing.
//!
//! The pools hold at most as many bytes as the program's tensors have held at once (and at
//! least [`MIN_BYTES`]): a step whose tensors take more than a fixed bound would free and map
//! its largest buffers again every step (a four-block CNN on 224x224 images at batch 8, whose
//! tensors take 600 MB: 214-246 ms a step with at most 256 MiB pooled, 180-208 ms with all of
//! it, in alternated runs), and a program never holds more than twice what its tensors once
//! needed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most bytes the pools hold while the program's tensors have never held more.
const MIN_BYTES: usize = 256 << 20;
/// The most buffers of one length a thread's pool holds.
const MAX_PER_LEN: usize = 64;

/// Bytes of the buffers [`lend`] handed out that have not come back to [`give`].
static IN_USE: AtomicUsize = AtomicUsize::new(0);
/// The most [`IN_USE`] has been.
static PEAK_IN_USE: AtomicUsize = AtomicUsize::new(0);
/// Bytes waiting in all threads' pools.
static POOLED: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Pool {
    by_len: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

impl Drop for Pool {
    /// A thread's pool, freed as the thread exits, no longer counts.
    fn drop(&mut self) {
        POOLED.fetch_sub(self.bytes, Ordering::Relaxed);
    }
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
        let size = bytes(&buffer);
        pool.bytes -= size;
        POOLED.fetch_sub(size, Ordering::Relaxed);
        Some(buffer)
    })
    .ok()
    .flatten()
}

/// Counts `buffer`, about to become a tensor's, as in use until it comes back to [`give`].
pub(crate) fn lend(buffer: Vec<f32>) -> Vec<f32> {
    let in_use = IN_USE.fetch_add(bytes(&buffer), Ordering::Relaxed) + bytes(&buffer);
    PEAK_IN_USE.fetch_max(in_use, Ordering::Relaxed);
    buffer
}

/// Keeps `buffer` for a later [`take`] of its length, or frees it (an empty one, one with
/// spare capacity, or one the pools have no room for).
pub(crate) fn give(buffer: Vec<f32>) {
    let size = bytes(&buffer);
    // Buffers the pool did not lend (a user's `Vec` made a tensor) count as lent.
    let _ = IN_USE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |in_use| {
        Some(in_use.saturating_sub(size))
    });
    if size == 0 || buffer.capacity() != buffer.len() {
        return;
    }
    let limit = PEAK_IN_USE.load(Ordering::Relaxed).max(MIN_BYTES);
    // During thread exit the pool may be gone: the buffer is then freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if POOLED.load(Ordering::Relaxed) + size > limit {
            return;
        }
        let waiting = pool.by_len.entry(buffer.len()).or_default();
        if waiting.len() < MAX_PER_LEN {
            waiting.push(buffer);
            pool.bytes += size;
            POOLED.fetch_add(size, Ordering::Relaxed);
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
