//! [`CudaBuffer`]: the [`Cuda`](super::Cuda) backend's storage, a cudarc buffer that knows
//! which step capture, if any, allocated it, so dropping it inside a capture never frees
//! memory the graph does not own.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use cudarc::driver::{CudaSlice, result};

use super::graph::Recorder;

/// `f32`s in GPU memory, freed on the device's stream when dropped.
///
/// Inside a [`StepGraph`](crate::StepGraph) capture, a free becomes a node of the graph, and
/// the driver accepts only frees of memory the graph itself allocated. So a buffer from
/// before the capture that is dropped during it (a step that replaced a tensor of its state)
/// is set aside instead, and freed once the capture is over; the capture then fails with an
/// error saying so.
pub struct CudaBuffer {
    slice: ManuallyDrop<CudaSlice<f32>>,
    recorder: Arc<Recorder>,
    /// The capture that allocated the buffer, if one did ([`Recorder::capture_id`]).
    capture: Option<u64>,
}

impl CudaBuffer {
    /// Wraps `slice`, allocated just now on the device `recorder` watches.
    pub(crate) fn new(slice: CudaSlice<f32>, recorder: &Arc<Recorder>) -> Self {
        let capture = recorder.capture_id();
        recorder.allocated(capture);
        Self {
            slice: ManuallyDrop::new(slice),
            recorder: Arc::clone(recorder),
            capture,
        }
    }
}

impl Deref for CudaBuffer {
    type Target = CudaSlice<f32>;

    fn deref(&self) -> &CudaSlice<f32> {
        &self.slice
    }
}

impl DerefMut for CudaBuffer {
    fn deref_mut(&mut self) -> &mut CudaSlice<f32> {
        &mut self.slice
    }
}

impl fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBuffer")
            .field("len", &self.slice.len())
            .finish_non_exhaustive()
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        // SAFETY: the slice is taken once, here, and `self` is not used afterwards.
        let slice = unsafe { ManuallyDrop::take(&mut self.slice) };
        if self.recorder.frees_outside_capture(self.capture) {
            self.recorder.defer_free(slice);
            return;
        }
        // cudarc frees on the stream without making the context current, which the driver
        // may need on a thread that has not used the device yet. Failures are recorded in the
        // context by cudarc's drop, as its own are.
        let context = slice.stream().context().cu_ctx();
        if result::ctx::get_current().is_ok_and(|current| current != Some(context)) {
            // SAFETY: `context` is the live context the slice was allocated in (the slice's
            // stream keeps it alive).
            let _ = unsafe { result::ctx::set_current(context) };
        }
        drop(slice);
    }
}
