//! [`CudaBuffer`]: the [`Cuda`](super::Cuda) backend's storage, a cudarc buffer that tells
//! the device's [`Recorder`] when it is dropped, so memory a CUDA graph uses is never freed
//! under it.

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, result, sys};

use super::recorder::Recorder;

/// `f32`s in GPU memory, freed on the device's stream when dropped, unless a CUDA graph
/// still needs them:
/// - a buffer a [`StepGraph`](crate::StepGraph)'s captured graph reads or writes is freed
///   when the graph is, so replays never touch freed memory, whatever the state's owner did
///   with its tensors in between;
/// - a buffer from before a capture that is dropped during it (a step that replaced a tensor
///   of its state) is freed once the capture is over, as the driver accepts inside a capture
///   only frees of memory the graph itself allocated; the capture then fails saying so.
pub struct CudaBuffer {
    slice: ManuallyDrop<CudaSlice<f32>>,
    pointer: sys::CUdeviceptr,
    recorder: Arc<Recorder>,
    /// The capture that allocated the buffer, if one did ([`Recorder::capture_id`]).
    capture: Option<u64>,
}

impl CudaBuffer {
    /// Wraps `slice`, allocated just now on the device `recorder` watches.
    pub(crate) fn new(slice: CudaSlice<f32>, recorder: &Arc<Recorder>) -> Self {
        let capture = recorder.capture_id();
        recorder.allocated(capture);
        let (pointer, _) = slice.device_ptr(slice.stream());
        Self {
            slice: ManuallyDrop::new(slice),
            pointer,
            recorder: Arc::clone(recorder),
            capture,
        }
    }

    /// The device address of the buffer's memory.
    pub(crate) fn pointer(&self) -> sys::CUdeviceptr {
        self.pointer
    }

    /// The capture that allocated the buffer, if one did.
    pub(crate) fn capture(&self) -> Option<u64> {
        self.capture
    }

    /// The cudarc buffer, to write to. Not public: a slice swapped or replaced through it
    /// would part the memory from the address the recorder knows it by.
    pub(crate) fn slice_mut(&mut self) -> &mut CudaSlice<f32> {
        &mut self.slice
    }
}

/// Read access to the cudarc buffer (write access stays inside the crate).
impl Deref for CudaBuffer {
    type Target = CudaSlice<f32>;

    fn deref(&self) -> &CudaSlice<f32> {
        &self.slice
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
        if let Some(slice) = self.recorder.release(self.pointer, self.capture, slice) {
            free(slice);
        }
    }
}

/// Frees `slice` on its stream. cudarc's drop does not make the context current, which the
/// driver may need on a thread that has not used the device yet; failures are recorded in
/// the context by cudarc, as its own are.
pub(crate) fn free(slice: CudaSlice<f32>) {
    let context = slice.stream().context().cu_ctx();
    if result::ctx::get_current().is_ok_and(|current| current != Some(context)) {
        // SAFETY: `context` is the live context the slice was allocated in (the slice's
        // stream keeps it alive).
        let _ = unsafe { result::ctx::set_current(context) };
    }
    drop(slice);
}
