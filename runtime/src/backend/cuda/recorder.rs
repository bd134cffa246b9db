//! The [`Recorder`]: what a device's ops and buffers report for
//! [`StepGraph`](crate::StepGraph) captures, and the buffers CUDA graphs keep alive.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cudarc::driver::{CudaSlice, sys};

use super::CudaBuffer;
use crate::error::{Error, Result};

/// A device's record of captures and buffer lifetimes (`Memory` is what a dropped buffer
/// leaves to free: a cudarc slice, or a stand-in in tests):
/// - while a step is traced, the kernels it launches (to compare the captured step with the
///   eager step before it);
/// - while one is captured, that it is (host copies must then fail), the buffers from before
///   the capture it touches (the graph keeps them) or drops (freed after the capture), and
///   how many of its own buffers are alive;
/// - the buffers live graphs use, which are freed when the last such graph is, not when
///   their [`CudaBuffer`] is dropped.
#[derive(Debug)]
pub(crate) struct Recorder<Memory = CudaSlice<f32>> {
    /// The running capture's id, 0 when none runs.
    capture: AtomicU64,
    /// The last capture id handed out.
    captures: AtomicU64,
    tracing: AtomicBool,
    trace: Mutex<Vec<String>>,
    /// Buffers from before the running capture that it touched.
    touched: Mutex<BTreeSet<sys::CUdeviceptr>>,
    /// Buffers from before the running capture that were dropped during it.
    dropped_in_capture: Mutex<Vec<(sys::CUdeviceptr, Memory)>>,
    /// Buffers the running capture allocated that are still alive.
    live: AtomicUsize,
    /// How many live graphs pin buffers: when none does, a drop takes no lock.
    pinning_graphs: AtomicUsize,
    pins: Mutex<Pins<Memory>>,
}

impl<Memory> Default for Recorder<Memory> {
    fn default() -> Self {
        Self {
            capture: AtomicU64::default(),
            captures: AtomicU64::default(),
            tracing: AtomicBool::default(),
            trace: Mutex::default(),
            touched: Mutex::default(),
            dropped_in_capture: Mutex::new(Vec::new()),
            live: AtomicUsize::default(),
            pinning_graphs: AtomicUsize::default(),
            pins: Mutex::new(Pins {
                graphs: BTreeMap::new(),
                dropped: Vec::new(),
            }),
        }
    }
}

/// The buffers live graphs use.
#[derive(Debug)]
struct Pins<Memory> {
    /// How many live graphs use each address.
    graphs: BTreeMap<sys::CUdeviceptr, usize>,
    /// Pinned buffers already dropped, freed when their last graph is.
    dropped: Vec<(sys::CUdeviceptr, Memory)>,
}

/// What a capture left behind ([`Recorder::capture_leftovers`]).
pub(crate) struct Leftovers<Memory> {
    /// Buffers from before the capture that it dropped (tensors of the state it replaced).
    pub(crate) dropped: Vec<(sys::CUdeviceptr, Memory)>,
    /// How many buffers it allocated are still alive (tensors it stored in the state).
    pub(crate) escaped: usize,
    /// The buffers from before the capture that it touched: its graph must keep them.
    pub(crate) touched: Vec<sys::CUdeviceptr>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// Adds `op()` to the trace while one is being taken, and notes the `buffers` it touches
    /// while a capture runs; costs one atomic load otherwise.
    pub(crate) fn record<'b>(
        &self,
        buffers: impl IntoIterator<Item = &'b CudaBuffer>,
        op: impl FnOnce() -> String,
    ) {
        if self.tracing.load(Ordering::Relaxed) {
            let op = op();
            lock(&self.trace).push(op);
            self.touch(buffers.into_iter().map(|b| (b.pointer(), b.capture())));
        }
    }
}

impl<Memory> Recorder<Memory> {
    /// Notes the buffers from before the running capture, if one runs, among `buffers` (each
    /// an address and the capture that allocated it).
    fn touch(&self, buffers: impl IntoIterator<Item = (sys::CUdeviceptr, Option<u64>)>) {
        if let Some(running) = self.capture_id() {
            let outside = buffers.into_iter().filter(|&(_, c)| c != Some(running));
            lock(&self.touched).extend(outside.map(|(pointer, _)| pointer));
        }
    }

    /// Whether a step is being captured on this device.
    pub(crate) fn is_capturing(&self) -> bool {
        self.capture_id().is_some()
    }

    /// The id of the capture running on this device, if one is.
    pub(crate) fn capture_id(&self) -> Option<u64> {
        Some(self.capture.load(Ordering::Acquire)).filter(|&id| id != 0)
    }

    /// Counts a buffer just allocated, by the capture that allocated it (`capture`).
    pub(crate) fn allocated(&self, capture: Option<u64>) {
        if capture.is_some() {
            self.live.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the memory of a buffer at `pointer`, allocated by `capture` (`None`: outside
    /// any), that was just dropped: returns it when it may be freed now, or keeps it when a
    /// running capture did not allocate it or a live graph uses it.
    pub(crate) fn release(
        &self,
        pointer: sys::CUdeviceptr,
        capture: Option<u64>,
        slice: Memory,
    ) -> Option<Memory> {
        if let Some(running) = self.capture_id() {
            if capture == Some(running) {
                self.live.fetch_sub(1, Ordering::Relaxed);
                return Some(slice);
            }
            lock(&self.dropped_in_capture).push((pointer, slice));
            return None;
        }
        if self.pinning_graphs.load(Ordering::Acquire) > 0 {
            let mut pins = lock(&self.pins);
            if pins.graphs.contains_key(&pointer) {
                pins.dropped.push((pointer, slice));
                return None;
            }
        }
        Some(slice)
    }

    /// Fails with `why` for `op` while a step is being captured: `op` cannot be recorded.
    pub(crate) fn refuse_while_capturing(&self, op: &'static str, why: &str) -> Result<()> {
        if self.is_capturing() {
            return Err(Error::Backend {
                op,
                message: why.to_owned(),
            });
        }
        Ok(())
    }

    /// Runs `f` with the ops it launches traced, and a capture running for its duration when
    /// `capturing`.
    pub(crate) fn traced<T>(
        &self,
        capturing: bool,
        f: impl FnOnce() -> T,
    ) -> Result<(T, Vec<String>)> {
        if self.tracing.swap(true, Ordering::AcqRel) {
            return Err(Error::Backend {
                op: "StepGraph::capture",
                message: "another step is being captured on this device".to_owned(),
            });
        }
        let _done = TracingDone(self);
        if capturing {
            self.live.store(0, Ordering::Relaxed);
            let id = self.captures.fetch_add(1, Ordering::Relaxed) + 1;
            self.capture.store(id, Ordering::Release);
        }
        let result = f();
        let trace = std::mem::take(&mut *lock(&self.trace));
        Ok((result, trace))
    }

    /// What the last capture left behind.
    pub(crate) fn capture_leftovers(&self) -> Leftovers<Memory> {
        Leftovers {
            dropped: std::mem::take(&mut *lock(&self.dropped_in_capture)),
            escaped: self.live.load(Ordering::Relaxed),
            touched: std::mem::take(&mut *lock(&self.touched))
                .into_iter()
                .collect(),
        }
    }

    /// Keeps the buffers at `pointers` alive for a new graph.
    pub(crate) fn pin(&self, pointers: &[sys::CUdeviceptr]) {
        let mut pins = lock(&self.pins);
        for &pointer in pointers {
            *pins.graphs.entry(pointer).or_default() += 1;
        }
        self.pinning_graphs.fetch_add(1, Ordering::AcqRel);
    }

    /// Lets go of the buffers a dropped graph pinned, returning those that were dropped and
    /// that no other live graph uses, to free.
    pub(crate) fn unpin(&self, pointers: &[sys::CUdeviceptr]) -> Vec<Memory> {
        let mut pins = lock(&self.pins);
        for pointer in pointers {
            if let Some(count) = pins.graphs.get_mut(pointer) {
                *count -= 1;
                if *count == 0 {
                    pins.graphs.remove(pointer);
                }
            }
        }
        self.pinning_graphs.fetch_sub(1, Ordering::AcqRel);
        let Pins { graphs, dropped } = &mut *pins;
        let (free, keep): (Vec<_>, Vec<_>) = std::mem::take(dropped)
            .into_iter()
            .partition(|(pointer, _)| !graphs.contains_key(pointer));
        *dropped = keep;
        free.into_iter().map(|(_, slice)| slice).collect()
    }
}

/// Ends a [`Recorder`]'s trace and capture, even when the traced step panics.
struct TracingDone<'a, Memory>(&'a Recorder<Memory>);

impl<Memory> Drop for TracingDone<'_, Memory> {
    fn drop(&mut self) {
        self.0.capture.store(0, Ordering::Release);
        self.0.tracing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorder whose "memory" is a label, so its bookkeeping runs without a GPU.
    type TestRecorder = Recorder<&'static str>;

    /// Adds `op` to the trace, as an op touching buffers at `pointers` allocated outside any
    /// capture would.
    fn record(recorder: &TestRecorder, op: &str, pointers: &[sys::CUdeviceptr]) {
        if recorder.tracing.load(Ordering::Relaxed) {
            lock(&recorder.trace).push(op.to_owned());
            recorder.touch(pointers.iter().map(|&pointer| (pointer, None)));
        }
    }

    #[test]
    fn traces_only_inside_traced() {
        let recorder = TestRecorder::default();
        record(&recorder, "before", &[]);
        let ((), trace) = recorder
            .traced(true, || {
                assert!(recorder.is_capturing());
                record(&recorder, "inside", &[]);
            })
            .unwrap();
        record(&recorder, "after", &[]);
        assert_eq!(trace, ["inside"]);
        assert!(!recorder.is_capturing());
        let nested = recorder.traced(false, || recorder.traced(false, || ()).is_err());
        assert!(nested.unwrap().0, "a second capture at once is refused");
    }

    #[test]
    fn a_capture_sets_aside_what_it_did_not_allocate_and_counts_what_it_keeps() {
        let recorder = TestRecorder::default();
        assert_eq!(recorder.release(1, None, "free now"), Some("free now"));
        let ((), _) = recorder
            .traced(true, || {
                let running = recorder.capture_id();
                assert!(running.is_some());
                assert_eq!(recorder.release(1, None, "state"), None, "from before it");
                let other = running.map(|id| id + 1);
                assert_eq!(recorder.release(2, other, "other"), None);
                recorder.allocated(running);
                recorder.allocated(running);
                let temporary = recorder.release(3, running, "temporary");
                assert_eq!(
                    temporary,
                    Some("temporary"),
                    "its own: freed into the graph"
                );
            })
            .unwrap();
        let leftovers = recorder.capture_leftovers();
        assert_eq!(leftovers.dropped, [(1, "state"), (2, "other")]);
        assert_eq!(leftovers.escaped, 1, "one of its two buffers outlived it");
        let ((), _) = recorder
            .traced(true, || {
                assert_ne!(
                    recorder.capture_id(),
                    Some(1),
                    "each capture has its own id"
                );
            })
            .unwrap();
        let leftovers = recorder.capture_leftovers();
        assert!(leftovers.dropped.is_empty());
        assert_eq!(leftovers.escaped, 0, "counted per capture");
    }

    #[test]
    fn a_capture_notes_the_buffers_from_before_it_that_it_touches() {
        let recorder = TestRecorder::default();
        record(&recorder, "eager", &[7]);
        let ((), _) = recorder
            .traced(true, || {
                let running = recorder.capture_id();
                recorder.touch([(5, None), (6, running), (5, None), (4, Some(99))]);
            })
            .unwrap();
        assert_eq!(recorder.capture_leftovers().touched, [4, 5]);
        assert!(recorder.capture_leftovers().touched.is_empty());
    }

    #[test]
    fn pinned_buffers_are_freed_with_their_last_graph() {
        let recorder = TestRecorder::default();
        recorder.pin(&[1, 2]);
        recorder.pin(&[2]);
        assert_eq!(recorder.release(1, None, "one"), None, "a graph uses it");
        assert_eq!(recorder.release(2, None, "two"), None);
        assert_eq!(recorder.release(3, None, "three"), Some("three"));
        assert_eq!(recorder.unpin(&[1, 2]), ["one"], "2 is still used");
        assert_eq!(recorder.unpin(&[2]), ["two"]);
        assert_eq!(recorder.release(2, None, "reused"), Some("reused"));
    }

    #[test]
    fn a_panicking_step_leaves_the_recorder_idle() {
        let recorder = TestRecorder::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            recorder.traced(true, || panic!("step failed")).ok();
        }));
        assert!(panicked.is_err());
        assert!(!recorder.is_capturing());
        assert!(
            recorder.traced(false, || ()).is_ok(),
            "a new capture may start"
        );
    }
}
