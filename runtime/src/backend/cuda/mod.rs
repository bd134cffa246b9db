//! The [`Cuda`] backend: `f32` buffers in GPU memory, GEMM on cuBLAS, every other op in a
//! kernel from the op's folder (`ops/<family>/<family>.cu`), compiled by NVRTC on first use.
//!
//! Everything runs in order on one stream per device, so no work waits on events and a buffer
//! freed by one op is reused by the next from the stream-ordered memory pool. The stream is a
//! created one, not the legacy default stream, because only created streams can be captured
//! into a CUDA graph ([`StepGraph`](crate::StepGraph)).

mod buffer;
mod graph;
mod kernels;
mod launch;
mod recorder;

pub(crate) use super::expect_len;
pub use buffer::CudaBuffer;
pub(crate) use graph::CapturedGraph;
pub(crate) use kernels::{BLOCK, Kernels, cuda_error, launch_config};
pub(crate) use launch::CValue;

pub(crate) use recorder::Recorder;

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, result, sys};

use super::{Memory, check_fits};
use crate::error::{Error, Result};
use crate::ops::unary;

/// An NVIDIA GPU, by ordinal. Clones share one context, stream, cuBLAS handle and kernel
/// table, and so does every [`Cuda::new`] of the same ordinal in a process.
#[derive(Clone)]
pub struct Cuda {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: Arc<Blas>,
    kernels: Arc<OnceLock<Result<Kernels>>>,
    recorder: Arc<Recorder>,
}

/// The cuBLAS handle and the workspace it owns. The workspace is given explicitly, so cuBLAS
/// never allocates one of its own while a [`StepGraph`](crate::StepGraph) is being captured.
struct Blas {
    handle: CudaBlas,
    _workspace: CudaSlice<u8>,
}

/// The cuBLAS workspace: NVIDIA's recommendation for Hopper, enough for every earlier GPU.
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// The devices opened so far, so each ordinal has one context and compiles its kernels once.
static DEVICES: Mutex<Vec<Cuda>> = Mutex::new(Vec::new());

impl Cuda {
    /// Opens GPU `ordinal` (0 is the first).
    ///
    /// # Errors
    /// [`Error::Backend`] when the CUDA driver, NVRTC or cuBLAS library cannot be loaded (the
    /// toolkit's `lib64` must be on `LD_LIBRARY_PATH`), when there is no such device, or when
    /// the driver fails to set it up. Never panics for a missing library.
    pub fn new(ordinal: usize) -> Result<Self> {
        let mut devices = DEVICES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(device) = devices.iter().find(|d| d.ordinal == ordinal) {
            return Ok(device.clone());
        }
        let device = Self::open(ordinal)?;
        devices.push(device.clone());
        Ok(device)
    }

    /// The device's ordinal.
    #[must_use]
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn open(ordinal: usize) -> Result<Self> {
        const OP: &str = "Cuda::new";
        let missing = |library: &str| Error::Backend {
            op: OP,
            message: format!(
                "cannot load the CUDA {library} library; install the CUDA 13 driver and toolkit \
                 and put the toolkit's lib64 on LD_LIBRARY_PATH"
            ),
        };
        // cudarc panics when a library it needs cannot be loaded, so look for each first.
        // SAFETY: `is_culib_present` only tries to dlopen the library by its usual names and
        // closes it again; loading the CUDA libraries runs no code with preconditions.
        if !unsafe { sys::is_culib_present() } {
            return Err(missing("driver (libcuda)"));
        }
        // SAFETY: as above, for NVRTC.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(missing("NVRTC (libnvrtc)"));
        }
        // SAFETY: as above, for cuBLAS.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(missing("cuBLAS (libcublas)"));
        }
        let count = CudaContext::device_count().map_err(cuda_error(OP))?;
        if usize::try_from(count).map_or(true, |count| ordinal >= count) {
            return Err(Error::Backend {
                op: OP,
                message: format!("no CUDA device {ordinal}: the driver reports {count}"),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_error(OP))?;
        // SAFETY: all work goes to the device's one stream, in order, so no buffer needs the
        // cross-stream events this turns off; it runs before any buffer exists.
        unsafe { ctx.disable_event_tracking() };
        if !ctx.has_async_alloc() {
            return Err(Error::Backend {
                op: OP,
                message: format!(
                    "CUDA device {ordinal} has no stream-ordered allocator (cuMemAllocAsync), \
                     which declnet needs to reuse memory between steps"
                ),
            });
        }
        keep_freed_memory(&ctx).map_err(cuda_error(OP))?;
        let stream = ctx.new_stream().map_err(cuda_error(OP))?;
        let blas = Blas::new(&stream)?;
        Ok(Self {
            ordinal,
            ctx,
            stream,
            blas: Arc::new(blas),
            kernels: Arc::new(OnceLock::new()),
            recorder: Arc::default(),
        })
    }

    /// Waits until the GPU has finished every op issued so far (ops return as soon as they
    /// are queued), like `torch.cuda.synchronize()`: for timing, or to surface an
    /// asynchronous kernel failure at a known point.
    ///
    /// # Errors
    /// [`Error::Backend`] with the driver's message when queued work failed, or inside a
    /// step being captured by a [`StepGraph`](crate::StepGraph) (nothing runs then).
    pub fn synchronize(&self) -> Result<()> {
        self.recorder.refuse_while_capturing(
            "synchronize",
            "cannot wait for the GPU inside a captured step: a capture records work without \
             running it",
        )?;
        self.stream.synchronize().map_err(cuda_error("synchronize"))
    }

    /// The stream every op runs on.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle, bound to [`Cuda::stream`], with the context made current on the
    /// calling thread (cuBLAS calls, unlike cudarc's own, do not do that themselves).
    pub(crate) fn blas(&self) -> Result<&CudaBlas> {
        self.ctx.bind_to_thread().map_err(cuda_error("gemm"))?;
        Ok(&self.blas.handle)
    }

    /// What the ops of a [`StepGraph`](crate::StepGraph) capture are checked against; every
    /// kernel launch records itself here first.
    pub(crate) fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Fails inside a step being captured: `op` would copy between host and GPU.
    pub(crate) fn refuse_host_copy(&self, op: &'static str) -> Result<()> {
        self.recorder.refuse_while_capturing(op, NO_HOST_COPY)
    }

    /// The compiled kernels; the first call compiles them for this device.
    pub(crate) fn kernels(&self) -> Result<&Kernels> {
        self.kernels
            .get_or_init(|| Kernels::compile(&self.ctx))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A buffer of `len` zeros.
    fn alloc(&self, op: &'static str, len: usize) -> Result<CudaBuffer> {
        if len == 0 {
            // The driver's answer to a zero-byte allocation is not specified, so an empty
            // buffer holds one element it never shows.
            let one = self.stream.alloc_zeros::<f32>(1).map_err(cuda_error(op))?;
            // SAFETY: `leak` hands over an allocation of one `f32`, and the new slice claims
            // none of it; dropping the slice frees the allocation.
            return Ok(self.buffer(unsafe { self.stream.upgrade_device_ptr(one.leak(), 0) }));
        }
        let slice = self.stream.alloc_zeros(len).map_err(cuda_error(op))?;
        Ok(self.buffer(slice))
    }

    /// `slice`, just allocated on this device, as a backend buffer.
    fn buffer(&self, slice: CudaSlice<f32>) -> CudaBuffer {
        CudaBuffer::new(slice, &self.recorder)
    }
}

/// Why a host copy is refused while a [`StepGraph`](crate::StepGraph) is being captured: it
/// would be recorded with a pointer to host memory that is gone by the time the graph replays.
const NO_HOST_COPY: &str = "cannot copy between host and GPU inside a captured step; copy new \
                            data into the state's tensors before `run`, and read results after it";

impl Blas {
    fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        const OP: &str = "Cuda::new";
        let handle = CudaBlas::new(stream.clone()).map_err(cuda_error(OP))?;
        let workspace = stream
            .alloc_zeros::<u8>(BLAS_WORKSPACE_BYTES)
            .map_err(cuda_error(OP))?;
        let pointer = workspace.device_ptr(stream).0;
        // SAFETY: the workspace is a live device allocation of `BLAS_WORKSPACE_BYTES` on the
        // handle's stream, and `Blas` keeps it alive as long as the handle. cuBLAS resets the
        // workspace when the stream changes, which never happens after this.
        unsafe {
            cudarc::cublas::sys::cublasSetWorkspace_v2(
                *handle.handle(),
                pointer as *mut std::ffi::c_void,
                BLAS_WORKSPACE_BYTES,
            )
        }
        .result()
        .map_err(cuda_error(OP))?;
        Ok(Self {
            handle,
            _workspace: workspace,
        })
    }
}

/// Raises the release threshold of the device's default memory pool to the maximum, so
/// buffers freed in one training step are reused by the next instead of going back to the
/// driver at every synchronisation.
fn keep_freed_memory(ctx: &CudaContext) -> Result<(), cudarc::driver::DriverError> {
    let mut threshold = u64::MAX;
    // SAFETY: `ctx` has a current context on this thread (set by `CudaContext::new`), the pool
    // is the driver's own for that device, and the release threshold is a `u64` that the
    // driver reads through the pointer during the call.
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device())?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&raw mut threshold).cast(),
        )
    }
}

impl fmt::Debug for Cuda {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cuda")
            .field("ordinal", &self.ordinal)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Cuda {
    fn eq(&self, other: &Self) -> bool {
        self.ordinal == other.ordinal
    }
}

impl Memory for Cuda {
    type Storage = CudaBuffer;

    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn zeros(&self, len: usize) -> Result<CudaBuffer> {
        self.alloc("zeros", len)
    }

    fn upload(&self, data: &[f32]) -> Result<CudaBuffer> {
        self.refuse_host_copy("upload")?;
        if data.is_empty() {
            return self.alloc("upload", 0);
        }
        let slice = self.stream.clone_htod(data).map_err(cuda_error("upload"))?;
        Ok(self.buffer(slice))
    }

    fn upload_into_at(&self, data: &[f32], dst: &mut CudaBuffer, offset: usize) -> Result<()> {
        const OP: &str = "upload_into_at";
        self.refuse_host_copy(OP)?;
        let end = check_fits(OP, data.len(), offset, dst.len())?;
        if data.is_empty() {
            return Ok(());
        }
        let mut range = dst.slice_mut().slice_mut(offset..end);
        self.stream
            .memcpy_htod(data, &mut range)
            .map_err(cuda_error(OP))
    }

    fn download(&self, storage: &CudaBuffer) -> Result<Vec<f32>> {
        self.refuse_host_copy("download")?;
        if storage.is_empty() {
            return Ok(Vec::new());
        }
        self.stream
            .clone_dtoh(&**storage)
            .map_err(cuda_error("download"))
    }

    fn copy(&self, src: &CudaBuffer) -> Result<CudaBuffer> {
        self.recorder
            .record([src], || format!("copy {}", src.len()));
        if src.is_empty() {
            return self.alloc("copy", 0);
        }
        let slice = self.stream.clone_dtod(&**src).map_err(cuda_error("copy"))?;
        Ok(self.buffer(slice))
    }

    fn copy_into(&self, src: &CudaBuffer, dst: &mut CudaBuffer) -> Result<()> {
        expect_len("copy_into", "destination", dst.len(), src.len())?;
        self.recorder
            .record([src, &*dst], || format!("copy_into {}", src.len()));
        if src.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_dtod(&**src, dst.slice_mut())
            .map_err(cuda_error("copy_into"))
    }

    fn fill(&self, dst: &mut CudaBuffer, value: f32) -> Result<()> {
        self.recorder
            .record([&*dst], || format!("fill {} {value:?}", dst.len()));
        unary::cuda::fill(self, dst.slice_mut(), value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::MutexGuard;

    use super::*;

    /// Whether this machine has a usable GPU and the libraries (`cudarc` would panic without
    /// them).
    fn has_device() -> bool {
        // SAFETY: these only try to dlopen the libraries.
        let libraries = unsafe {
            sys::is_culib_present()
                && cudarc::nvrtc::sys::is_culib_present()
                && cudarc::cublas::sys::is_culib_present()
        };
        libraries && CudaContext::device_count().is_ok_and(|count| count > 0)
    }

    #[test]
    fn new_is_an_error_not_a_panic_without_a_device() {
        let result = Cuda::new(0);
        if has_device() {
            println!("a CUDA device is present: checked that `Cuda::new(0)` opens it");
            let device = result.unwrap();
            assert_eq!(device.name(), "cuda:0");
            assert_eq!(Cuda::new(0).unwrap(), device);
        } else {
            let error = result.unwrap_err();
            assert!(matches!(error, Error::Backend { .. }), "{error:?}");
            println!("no CUDA device: `Cuda::new(0)` returned `{error}`");
        }
    }

    #[test]
    fn missing_ordinal_is_an_error() {
        assert!(Cuda::new(usize::MAX).is_err());
    }

    /// GPU 0 and a turn on it, or `None` after saying the test is skipped
    /// ([`skip_without_cuda`](crate::backend::skip_without_cuda)). The tests take turns
    /// because a capture refuses every thread's host copies.
    fn device_or_skip() -> Option<(Cuda, MutexGuard<'static, ()>)> {
        static TURN: Mutex<()> = Mutex::new(());
        if has_device() {
            let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
            Some((Cuda::new(0).unwrap(), turn))
        } else {
            crate::backend::skip_without_cuda(&"no GPU or driver");
            None
        }
    }

    /// Checks that `device` still computes after an error.
    fn assert_still_usable(device: &Cuda) {
        let mut buffer = device.zeros(3).unwrap();
        device.fill(&mut buffer, 2.5).unwrap();
        device.synchronize().unwrap();
        assert_eq!(device.download(&buffer).unwrap(), [2.5; 3]);
    }

    #[test]
    fn out_of_memory_is_an_error_and_the_device_stays_usable() {
        let Some((device, _turn)) = device_or_skip() else {
            return;
        };
        // 4 TiB of f32s, more than any GPU holds.
        let error = device.zeros(1 << 40).unwrap_err().to_string();
        assert!(error.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{error}");
        assert_still_usable(&device);
    }

    #[test]
    fn failed_launch_is_an_error_and_the_device_stays_usable() {
        let Some((device, _turn)) = device_or_skip() else {
            return;
        };
        let mut buffer = device.zeros(4).unwrap();
        let count = 4u64;
        let value = 1.0f32;
        let kernels = device.kernels().unwrap();
        // More threads per block than any GPU allows.
        let config = cudarc::driver::LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (4096, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the driver rejects the configuration before anything runs.
        let result =
            unsafe { kernels.fill(device.stream(), config, buffer.slice_mut(), &count, &value) };
        let error = result.map_err(cuda_error("fill")).unwrap_err().to_string();
        // cudarc's driver errors read `DriverError(CUDA_ERROR_INVALID_VALUE, "invalid argument")`.
        assert!(
            error.starts_with("fill: ") && error.contains("CUDA_ERROR_INVALID_VALUE"),
            "{error}"
        );
        assert_still_usable(&device);
    }

    #[test]
    fn host_copies_inside_a_capture_are_refused() {
        let Some((device, _turn)) = device_or_skip() else {
            return;
        };
        let capture = device.recorder.start_capture().unwrap();
        let refused = device.upload(&[1.0]).unwrap_err().to_string();
        drop(capture);
        assert!(refused.contains("inside a captured step"), "{refused}");
        assert_still_usable(&device);
    }

    #[test]
    fn empty_buffers_round_trip() {
        let Some((device, _turn)) = device_or_skip() else {
            return;
        };
        let empty = device.upload(&[]).unwrap();
        assert_eq!(empty.len(), 0);
        let copied = device.download(&device.copy(&empty).unwrap()).unwrap();
        assert!(copied.is_empty());
        drop(empty);
        assert_still_usable(&device);
    }
}
