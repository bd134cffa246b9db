//! The [`Recorder`]: what a device's ops and buffers report for
//! [`StepGraph`](crate::StepGraph) captures, and the buffers CUDA graphs keep alive.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};

use cudarc::driver::{CudaSlice, sys};

use super::CudaBuffer;
use super::buffer::free;
use crate::error::{Error, Result};

/// What a dropped buffer leaves to free: a cudarc slice, or a stand-in in tests.
pub(crate) trait Memory {
    /// Frees it, after the work queued so far.
    fn free(self);

    /// Lets go of it without freeing it: its address belongs to no memory.
    fn forget(self);
}

impl Memory for CudaSlice<f32> {
    fn free(self) {
        free(self);
    }

    fn forget(self) {
        self.leak();
    }
}

/// A device's record of captures and buffer lifetimes:
/// - while a step is traced ([`Recorder::start_trace`], [`Recorder::start_capture`]), the
///   kernels it launches, to compare the captured step with the eager step before it;
/// - while one is captured, that it is (host copies must then fail), the buffers from before
///   the capture that it touches (its graph keeps them) or drops (freed after the capture),
///   and how many of its own buffers are alive;
/// - the buffers live graphs use ([`PinSet`]), freed when the last such graph is, not when
///   their [`CudaBuffer`] is dropped.
///
/// A capture is the device's, not a thread's: while one runs, every thread's host copies are
/// refused and its drops of older buffers are set aside, as the capture's own. So a trace
/// notes when a thread other than the one that started it records an op, allocates or drops
/// a buffer, and the capture is refused for it. This catches the usual mistakes, not every
/// race: a capture needs the device to itself.
#[derive(Debug)]
pub(crate) struct Recorder<M = CudaSlice<f32>> {
    /// The running capture's id, 0 when none runs.
    capture: AtomicU64,
    /// The last capture id handed out.
    captures: AtomicU64,
    tracing: AtomicBool,
    /// The thread that started the running trace.
    tracer: Mutex<Option<ThreadId>>,
    /// Whether another thread used the device during the running trace.
    foreign: AtomicBool,
    trace: Mutex<Vec<String>>,
    /// Buffers from before the running capture that it touched.
    touched: Mutex<BTreeSet<sys::CUdeviceptr>>,
    /// Buffers from before the running capture that were dropped during it.
    dropped_in_capture: Mutex<Vec<(sys::CUdeviceptr, Option<u64>, M)>>,
    /// Buffers the running capture allocated that are still alive.
    live: AtomicUsize,
    /// Captures whose graph was discarded unlaunched: their buffers' addresses are no
    /// memory, so those buffers are forgotten, never freed. (One id per failed capture, so it
    /// stays small.)
    discarded: Mutex<BTreeSet<u64>>,
    /// How many live graphs pin buffers: when none does, a drop takes no lock.
    pinning_graphs: AtomicUsize,
    pins: Mutex<Pins<M>>,
}

impl<M> Default for Recorder<M> {
    fn default() -> Self {
        Self {
            capture: AtomicU64::default(),
            captures: AtomicU64::default(),
            tracing: AtomicBool::default(),
            tracer: Mutex::default(),
            foreign: AtomicBool::default(),
            trace: Mutex::default(),
            touched: Mutex::default(),
            dropped_in_capture: Mutex::new(Vec::new()),
            live: AtomicUsize::default(),
            discarded: Mutex::default(),
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
struct Pins<M> {
    /// How many live graphs use each address.
    graphs: BTreeMap<sys::CUdeviceptr, usize>,
    /// Pinned buffers already dropped, freed when their last graph is.
    dropped: Vec<(sys::CUdeviceptr, M)>,
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
        self.record_raw(buffers.into_iter().map(|b| (b.pointer(), b.capture())), op);
    }
}

impl<M: Memory> Recorder<M> {
    /// [`Recorder::record`] for buffers given as an address and the capture that allocated
    /// each.
    fn record_raw(
        &self,
        buffers: impl IntoIterator<Item = (sys::CUdeviceptr, Option<u64>)>,
        op: impl FnOnce() -> String,
    ) {
        if self.tracing.load(Ordering::Relaxed) {
            self.note_thread();
            let op = op();
            lock(&self.trace).push(op);
            self.touch(buffers);
        }
    }

    /// Notes it when the calling thread is not the one tracing.
    fn note_thread(&self) {
        if *lock(&self.tracer) != Some(thread::current().id()) {
            self.foreign.store(true, Ordering::Relaxed);
        }
    }

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
            self.note_thread();
            self.live.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the memory of a buffer at `pointer`, allocated by `capture` (`None`: outside
    /// any), that was just dropped: returns it when it may be freed now, or keeps it when a
    /// running capture did not allocate it or a live graph uses it (and forgets it when it
    /// came from a discarded graph).
    pub(crate) fn release(
        &self,
        pointer: sys::CUdeviceptr,
        capture: Option<u64>,
        memory: M,
    ) -> Option<M> {
        if let Some(capture) = capture
            && lock(&self.discarded).contains(&capture)
        {
            memory.forget();
            return None;
        }
        if let Some(running) = self.capture_id() {
            self.note_thread();
            if capture == Some(running) {
                self.live.fetch_sub(1, Ordering::Relaxed);
                return Some(memory);
            }
            lock(&self.dropped_in_capture).push((pointer, capture, memory));
            return None;
        }
        if self.pinning_graphs.load(Ordering::Acquire) > 0 {
            let mut pins = lock(&self.pins);
            if pins.graphs.contains_key(&pointer) {
                pins.dropped.push((pointer, memory));
                return None;
            }
        }
        Some(memory)
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

    /// Starts tracing the ops a step launches. Fails while another trace runs on the device.
    pub(crate) fn start_trace(self: &Arc<Self>) -> Result<Trace<M>> {
        self.claim_tracing()?;
        Ok(Trace {
            recorder: Arc::clone(self),
        })
    }

    /// Starts tracing the ops a step launches as a capture. Fails while another trace runs
    /// on the device.
    pub(crate) fn start_capture(self: &Arc<Self>) -> Result<Capture<M>> {
        self.claim_tracing()?;
        lock(&self.touched).clear();
        // Left by a thread that dropped a buffer just as the last capture ended.
        let stray = std::mem::take(&mut *lock(&self.dropped_in_capture));
        self.release_all(stray);
        self.live.store(0, Ordering::Relaxed);
        let id = self.captures.fetch_add(1, Ordering::Relaxed) + 1;
        self.capture.store(id, Ordering::Release);
        Ok(Capture {
            recorder: Arc::clone(self),
            id,
            finished: false,
        })
    }

    /// Takes the device's one trace, with an empty trace.
    fn claim_tracing(&self) -> Result<()> {
        if self.tracing.swap(true, Ordering::AcqRel) {
            return Err(Error::Backend {
                op: "StepGraph::capture",
                message: "another step is being captured on this device".to_owned(),
            });
        }
        lock(&self.trace).clear();
        *lock(&self.tracer) = Some(thread::current().id());
        self.foreign.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Fails when a thread other than the tracing one used the device during the trace.
    fn check_alone(&self) -> Result<()> {
        if self.foreign.load(Ordering::Relaxed) {
            return Err(Error::Backend {
                op: "StepGraph::capture",
                message: "another thread used the GPU while the step was traced or captured; \
                          a capture needs the device to itself"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Releases buffers set aside during a capture, now that none runs: each is freed, kept
    /// for the live graphs that use it, or forgotten.
    pub(crate) fn release_all(&self, buffers: Vec<(sys::CUdeviceptr, Option<u64>, M)>) {
        for (pointer, capture, memory) in buffers {
            if let Some(memory) = self.release(pointer, capture, memory) {
                memory.free();
            }
        }
    }

    /// Marks `capture`'s graph as discarded without a launch: buffers it allocated are then
    /// forgotten when dropped, as their addresses belong to no memory.
    pub(crate) fn discard(&self, capture: u64) {
        lock(&self.discarded).insert(capture);
    }

    /// Keeps the buffers at `pointers` alive for a new graph, before anything else can drop
    /// them.
    fn pin(self: &Arc<Self>, pointers: Vec<sys::CUdeviceptr>) -> PinSet<M> {
        let mut pins = lock(&self.pins);
        for &pointer in &pointers {
            *pins.graphs.entry(pointer).or_default() += 1;
        }
        self.pinning_graphs.fetch_add(1, Ordering::AcqRel);
        PinSet {
            recorder: Arc::clone(self),
            pointers,
        }
    }

    /// Lets go of a dropped graph's buffers, returning those that were dropped and that no
    /// other live graph uses, to release.
    fn unpin(&self, pointers: &[sys::CUdeviceptr]) -> Vec<(sys::CUdeviceptr, Option<u64>, M)> {
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
        free.into_iter()
            .map(|(pointer, memory)| (pointer, None, memory))
            .collect()
    }
}

/// A trace in progress ([`Recorder::start_trace`]), ended by [`finish`](Self::finish) or
/// by being dropped.
pub(crate) struct Trace<M: Memory = CudaSlice<f32>> {
    recorder: Arc<Recorder<M>>,
}

impl<M: Memory> Trace<M> {
    /// Ends the trace: the ops it saw, or an error when another thread used the device.
    pub(crate) fn finish(self) -> Result<Vec<String>> {
        let ops = std::mem::take(&mut *lock(&self.recorder.trace));
        self.recorder.check_alone().map(|()| ops)
    }
}

impl<M: Memory> Drop for Trace<M> {
    fn drop(&mut self) {
        self.recorder.tracing.store(false, Ordering::Release);
    }
}

/// A capture's trace in progress ([`Recorder::start_capture`]), ended by
/// [`finish`](Self::finish); it holds the device's one trace until dropped, so the graph's
/// caller can launch it and release what it left before another capture starts. Dropped
/// unfinished (a step that panicked, an early return), it ends the capture as discarded:
/// buffers it set aside are released, and buffers it allocated that outlive it are forgotten
/// rather than freed at addresses of a graph that never ran.
pub(crate) struct Capture<M: Memory = CudaSlice<f32>> {
    recorder: Arc<Recorder<M>>,
    id: u64,
    finished: bool,
}

/// What a capture left behind ([`Capture::finish`]).
pub(crate) struct Leftovers<M: Memory> {
    /// Buffers from before the capture that it dropped (tensors of the state it replaced),
    /// to [release](Recorder::release_all) once its graph has run, or at once without one.
    pub(crate) dropped: Vec<(sys::CUdeviceptr, Option<u64>, M)>,
    /// How many buffers it allocated are still alive (tensors it stored in the state).
    pub(crate) escaped: usize,
    /// The buffers from before the capture that it touched, pinned for its graph.
    pub(crate) pinned: PinSet<M>,
    /// An error when another thread used the device during the capture.
    pub(crate) alone: Result<()>,
}

impl<M: Memory> Capture<M> {
    /// The capture's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Ends the capture: the ops it saw and what it left behind. The buffers it touched are
    /// pinned before it ends, so none is freed in between. With `discarded` (the driver
    /// failed it), the buffers it allocated are marked first, so none is freed either.
    pub(crate) fn finish(&mut self, discarded: bool) -> (Vec<String>, Leftovers<M>) {
        self.finished = true;
        let recorder = &self.recorder;
        if discarded {
            recorder.discard(self.id);
        }
        let touched = std::mem::take(&mut *lock(&recorder.touched));
        let pinned = recorder.pin(touched.into_iter().collect());
        recorder.capture.store(0, Ordering::Release);
        let leftovers = Leftovers {
            dropped: std::mem::take(&mut *lock(&recorder.dropped_in_capture)),
            escaped: recorder.live.load(Ordering::Relaxed),
            pinned,
            alone: recorder.check_alone(),
        };
        (std::mem::take(&mut *lock(&recorder.trace)), leftovers)
    }
}

impl<M: Memory> Drop for Capture<M> {
    fn drop(&mut self) {
        let recorder = &self.recorder;
        if !self.finished {
            recorder.discard(self.id);
            recorder.capture.store(0, Ordering::Release);
            let dropped = std::mem::take(&mut *lock(&recorder.dropped_in_capture));
            recorder.release_all(dropped);
        }
        recorder.tracing.store(false, Ordering::Release);
    }
}

/// Buffers a live graph uses: freed, if their owners dropped them, when it is dropped.
pub(crate) struct PinSet<M: Memory = CudaSlice<f32>> {
    recorder: Arc<Recorder<M>>,
    pointers: Vec<sys::CUdeviceptr>,
}

impl<M: Memory> PinSet<M> {
    /// The device's recorder.
    pub(crate) fn recorder(&self) -> &Recorder<M> {
        &self.recorder
    }
}

impl<M: Memory> Drop for PinSet<M> {
    fn drop(&mut self) {
        // Through `release`, which sets them aside should a capture be running.
        let unpinned = self.recorder.unpin(&self.pointers);
        self.recorder.release_all(unpinned);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        static FREED: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    }

    /// Device memory stand-in: freeing it logs its name.
    #[derive(Debug, PartialEq)]
    struct Block(&'static str);

    impl Memory for Block {
        fn free(self) {
            FREED.with(|freed| freed.borrow_mut().push(self.0));
        }

        fn forget(self) {}
    }

    /// The blocks freed since the last call.
    fn freed() -> Vec<&'static str> {
        FREED.with(|freed| std::mem::take(&mut *freed.borrow_mut()))
    }

    fn recorder() -> Arc<Recorder<Block>> {
        Arc::default()
    }

    /// Finishes `capture` and gives the device's trace back.
    fn end(mut capture: Capture<Block>, discarded: bool) -> (Vec<String>, Leftovers<Block>) {
        capture.finish(discarded)
    }

    /// Records `op`, as an op touching buffers at `pointers` from outside any capture does.
    fn record(recorder: &Recorder<Block>, op: &str, pointers: &[sys::CUdeviceptr]) {
        recorder.record_raw(pointers.iter().map(|&pointer| (pointer, None)), || {
            op.to_owned()
        });
    }

    /// Drops a block at `pointer` allocated by `capture`, freeing it if the recorder says so.
    fn drop_block(
        recorder: &Recorder<Block>,
        pointer: u64,
        capture: Option<u64>,
        name: &'static str,
    ) {
        if let Some(block) = recorder.release(pointer, capture, Block(name)) {
            block.free();
        }
    }

    #[test]
    fn traces_only_while_a_trace_runs_and_one_at_a_time() {
        let recorder = recorder();
        record(&recorder, "before", &[]);
        let trace = recorder.start_trace().unwrap();
        assert!(!recorder.is_capturing());
        record(&recorder, "inside", &[]);
        assert!(recorder.start_capture().is_err(), "a second trace at once");
        assert_eq!(trace.finish().unwrap(), ["inside"]);
        record(&recorder, "after", &[]);
        assert!(recorder.start_trace().unwrap().finish().unwrap().is_empty());
    }

    #[test]
    fn a_capture_sets_aside_what_it_did_not_allocate_and_counts_what_it_keeps() {
        let recorder = recorder();
        drop_block(&recorder, 1, None, "before any capture");
        assert_eq!(freed(), ["before any capture"]);
        let capture = recorder.start_capture().unwrap();
        let running = recorder.capture_id();
        assert!(running.is_some());
        drop_block(&recorder, 1, None, "state");
        drop_block(&recorder, 2, running.map(|id| id + 1), "another capture's");
        recorder.allocated(running);
        recorder.allocated(running);
        drop_block(&recorder, 3, running, "temporary");
        assert_eq!(freed(), ["temporary"], "its own: freed into the graph");
        let (_, leftovers) = end(capture, false);
        assert!(!recorder.is_capturing());
        let dropped: Vec<_> = leftovers
            .dropped
            .iter()
            .map(|(p, _, b)| (*p, b.0))
            .collect();
        assert_eq!(dropped, [(1, "state"), (2, "another capture's")]);
        assert_eq!(leftovers.escaped, 1, "one of its two buffers outlived it");
        recorder.release_all(leftovers.dropped);
        assert_eq!(freed(), ["state", "another capture's"]);
        let next = recorder.start_capture().unwrap();
        assert_ne!(Some(next.id()), running, "each capture has its own id");
        let (_, next) = end(next, false);
        assert!(next.dropped.is_empty());
        assert_eq!(next.escaped, 0, "counted per capture");
    }

    #[test]
    fn what_a_capture_touched_is_pinned_until_its_last_graph_goes() {
        let recorder = recorder();
        let capture = recorder.start_capture().unwrap();
        let running = recorder.capture_id();
        record(&recorder, "reads 5 and 4", &[5, 4]);
        recorder.touch([(6, running)]); // its own buffer: not pinned
        let (trace, first) = end(capture, false);
        assert_eq!(trace, ["reads 5 and 4"]);
        let capture = recorder.start_capture().unwrap();
        record(&recorder, "reads 5", &[5]);
        let (_, second) = end(capture, false);
        drop_block(&recorder, 4, None, "four");
        drop_block(&recorder, 5, None, "five");
        drop_block(&recorder, 6, None, "six");
        assert_eq!(freed(), ["six"]);
        drop(first.pinned);
        assert_eq!(freed(), ["four"], "five is still used by the second graph");
        drop(second.pinned);
        assert_eq!(freed(), ["five"]);
        drop_block(&recorder, 5, None, "reused address");
        assert_eq!(freed(), ["reused address"]);
    }

    #[test]
    fn a_capture_abandoned_by_a_panic_frees_what_it_set_aside_and_forgets_what_it_made() {
        let recorder = recorder();
        let mut id = None;
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _capture = recorder.start_capture().unwrap();
            id = recorder.capture_id();
            record(&recorder, "half a step", &[8]);
            drop_block(&recorder, 1, None, "replaced state");
            recorder.allocated(id);
            panic!("step failed");
        }));
        assert!(panicked.is_err());
        assert!(!recorder.is_capturing());
        assert_eq!(freed(), ["replaced state"]);
        // The buffer the step stored names memory of a graph that never existed.
        drop_block(&recorder, 9, id, "stored in the state");
        assert!(freed().is_empty(), "forgotten, not freed");
        let trace = recorder.start_trace().unwrap();
        assert!(
            trace.finish().unwrap().is_empty(),
            "nothing of it left in the next trace"
        );
        let (_, next) = end(recorder.start_capture().unwrap(), false);
        assert!(next.dropped.is_empty());
        drop(next.pinned);
        drop_block(&recorder, 8, None, "was touched");
        assert_eq!(freed(), ["was touched"], "nothing of it pinned");
    }

    #[test]
    fn buffers_of_a_discarded_capture_are_forgotten_even_inside_the_next() {
        let recorder = recorder();
        let capture = recorder.start_capture().unwrap();
        let id = recorder.capture_id();
        recorder.allocated(id);
        recorder.allocated(id);
        let (_, leftovers) = end(capture, true);
        assert_eq!(leftovers.escaped, 2);
        drop_block(&recorder, 3, id, "of the discarded graph");
        let next = recorder.start_capture().unwrap();
        drop_block(&recorder, 4, id, "dropped during the next capture");
        let (_, next) = end(next, false);
        assert!(next.dropped.is_empty(), "forgotten, not set aside");
        assert!(freed().is_empty());
    }

    #[test]
    fn another_thread_using_the_device_fails_the_trace_and_the_capture() {
        let recorder = recorder();
        let trace = recorder.start_trace().unwrap();
        thread::scope(|scope| {
            scope.spawn(|| record(&recorder, "someone else's kernel", &[]));
        });
        let error = trace.finish().unwrap_err().to_string();
        assert!(error.contains("another thread used the GPU"), "{error}");
        assert!(
            recorder.start_trace().unwrap().finish().is_ok(),
            "reset for the next"
        );
        let capture = recorder.start_capture().unwrap();
        thread::scope(|scope| {
            scope.spawn(|| drop_block(&recorder, 1, None, "someone else's buffer"));
        });
        let (_, leftovers) = end(capture, false);
        assert!(leftovers.alone.is_err());
    }

    #[test]
    fn a_graph_dropped_during_a_capture_sets_its_buffers_aside() {
        let recorder = recorder();
        let capture = recorder.start_capture().unwrap();
        record(&recorder, "reads 5", &[5]);
        let (_, first) = end(capture, false);
        drop_block(&recorder, 5, None, "five");
        let capture = recorder.start_capture().unwrap();
        drop(first.pinned);
        assert!(freed().is_empty(), "no free inside a capture");
        let (_, leftovers) = end(capture, false);
        assert_eq!(leftovers.dropped.len(), 1);
        assert!(leftovers.alone.is_ok(), "the capturing thread dropped it");
        recorder.release_all(leftovers.dropped);
        assert_eq!(freed(), ["five"]);
    }
}
