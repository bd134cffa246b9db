//! [`Nccl`]: NVIDIA's collectives over the GPUs of a job, one process per GPU, averaging
//! gradients in GPU memory. NCCL is loaded at run time, like the rest of CUDA.

use std::any::Any;
use std::ffi::{CStr, c_void};
use std::mem::MaybeUninit;

use cudarc::driver::{CudaSlice, DevicePtrMut, DeviceRepr};
use cudarc::nccl::{result, sys};

use super::{Collective, InPlaceMean, NcclVersion};
use crate::backend::cuda::cuda_error;
use crate::backend::{Cuda, CudaBuffer, Memory};
use crate::error::{Error, Result};

/// The collectives of NVIDIA's NCCL, one process per GPU, like PyTorch's `nccl` backend:
/// [`DataParallel`](super::DataParallel) averages the gradients where they are, in GPU memory,
/// on the device's stream ([`InPlaceMean`]), and needs no copy through the host.
///
/// NCCL (`libnccl.so`) is loaded when [`Nccl::new`] runs. The `nvidia-nccl-cu13` wheel and
/// NVIDIA's `libnccl2` package ship only `libnccl.so.2`, which the loader does not look for:
/// link `libnccl.so -> libnccl.so.2` in a directory on `LD_LIBRARY_PATH`.
///
/// ```no_run
/// use declnet_runtime::Cuda;
/// use declnet_runtime::distributed::{Collective, Mpi, Nccl};
///
/// let launcher = Mpi::init()?; // `mpirun -n 8` on two machines of 4 GPUs
/// let gpu = Cuda::new(launcher.local_rank())?; // one process per GPU
/// let nccl = Nccl::new(&gpu, &launcher)?;
/// println!("NCCL {}, rank {} of {}", Nccl::version()?, nccl.rank(), nccl.world_size());
/// # Ok::<(), declnet_runtime::Error>(())
/// ```
///
/// A data-parallel step on `Nccl` can be captured by a [`StepGraph`](crate::StepGraph): the
/// ranks agree through host memory which parameters have gradients, which a capture cannot
/// do, so the captured step keeps the agreement of the eager step before it (and fails if its
/// gradients differ from that step's on this rank); `BatchNorm`'s running statistics are
/// broadcast in place, and its batch counts only outside captures.
///
/// Limits: every call is issued on the device's one stream, so the GPU runs the all-reduces
/// after the backward pass's kernels, not alongside them. A rank that dies leaves the others
/// waiting inside NCCL: the launcher (`mpirun`, Slurm) must end the job.
#[derive(Debug)]
pub struct Nccl {
    /// The communicator; a raw pointer, which keeps `Nccl` on the thread that made it (NCCL's
    /// communicators are not to be shared between threads).
    comm: sys::ncclComm_t,
    device: Cuda,
    rank: usize,
    world_size: usize,
    local_rank: usize,
}

impl Nccl {
    /// Joins the GPUs of the job that `launcher` spans, this process on `device`: rank 0
    /// makes NCCL's unique id and `launcher` gives it to the others ([`Mpi`](super::Mpi) for
    /// a job started by `mpirun` or `srun`; [`Local`](super::Local) for one process). The
    /// ranks are `launcher`'s, and so is [`Collective::local_rank`], the GPU a rank usually
    /// takes. Every rank must call this.
    ///
    /// Several ranks on one GPU need NCCL 2.30 or later and `NCCL_MULTI_RANK_GPU_ENABLE=1`;
    /// earlier versions refuse ("Duplicate GPU detected").
    ///
    /// # Errors
    /// [`Error::Distributed`] on every rank when a rank cannot load NCCL or rank 0 cannot
    /// make the id; NCCL's error when joining fails. `launcher`'s errors.
    pub fn new(device: &Cuda, launcher: &(impl Collective + ?Sized)) -> Result<Self> {
        const OP: &str = "Nccl::new";
        let (rank, world_size) = (launcher.rank(), launcher.world_size());
        every_rank_has_nccl(launcher)?;
        let id = id_from_rank_0(launcher)?;
        bind(device, OP)?;
        let mut comm = MaybeUninit::uninit();
        let (ranks, this) = (c_int(world_size, OP)?, c_int(rank, OP)?);
        // SAFETY: `comm` is written by NCCL before it is read; the id is rank 0's on every
        // rank, and the device's context is current on this thread, which NCCL joins with.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), ranks, id, this)
                .map_err(|error| nccl_error(OP, &error))?;
            comm.assume_init()
        };
        Ok(Self {
            comm,
            device: device.clone(),
            rank,
            world_size,
            local_rank: launcher.local_rank(),
        })
    }

    /// The version of the NCCL library loaded.
    ///
    /// # Errors
    /// [`Error::Distributed`] when NCCL cannot be loaded.
    pub fn version() -> Result<NcclVersion> {
        const OP: &str = "Nccl::version";
        if !nccl_present() {
            return Err(missing_nccl(OP));
        }
        let code = result::get_nccl_version().map_err(|error| nccl_error(OP, &error))?;
        // Since NCCL 2.9: major * 10000 + minor * 100 + patch.
        let code = u32::try_from(code).unwrap_or(0);
        Ok(NcclVersion {
            major: code / 10_000,
            minor: code / 100 % 100,
            patch: code % 100,
        })
    }

    /// The GPU this rank works on.
    #[must_use]
    pub fn device(&self) -> &Cuda {
        &self.device
    }

    /// Runs `call` with the device address of `buffer` (`len` values) on the device's
    /// stream, then checks NCCL's result.
    fn on_device<T: DeviceRepr>(
        &self,
        op: &'static str,
        buffer: &mut CudaSlice<T>,
        call: impl FnOnce(*mut c_void, usize, sys::cudaStream_t) -> sys::ncclResult_t,
    ) -> Result<()> {
        let len = buffer.len();
        if len == 0 {
            return Ok(());
        }
        bind(&self.device, op)?;
        let stream = self.device.stream();
        let (pointer, _written) = buffer.device_ptr_mut(stream);
        call(
            pointer as *mut c_void,
            len,
            stream.cu_stream() as sys::cudaStream_t,
        )
        .result()
        .map(drop)
        .map_err(|error| nccl_error(op, &error))
    }

    /// Averages `buffer` over the ranks, in place, on the device's stream.
    fn all_reduce_mean_on_device(
        &self,
        op: &'static str,
        buffer: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let comm = self.comm;
        self.on_device(op, buffer, |pointer, len, stream| {
            // SAFETY: `pointer` addresses `len` f32s of a live allocation on the stream, which
            // the caller's `&mut` keeps alive and unshared until the call is queued; in place
            // (send = receive) is allowed by NCCL.
            unsafe {
                sys::ncclAllReduce(
                    pointer,
                    pointer,
                    len,
                    sys::ncclDataType_t::ncclFloat32,
                    sys::ncclRedOp_t::ncclAvg,
                    comm,
                    stream,
                )
            }
        })
    }

    /// `values` from the host to the GPU, through `call` on it, and back.
    fn through_device<T: DeviceRepr + Copy>(
        &self,
        op: &'static str,
        values: &mut [T],
        call: impl FnOnce(&Self, &mut CudaSlice<T>) -> Result<()>,
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.device.refuse_host_copy(op)?;
        let stream = self.device.stream();
        let mut staged = stream.clone_htod(&*values).map_err(cuda_error(op))?;
        call(self, &mut staged)?;
        stream
            .memcpy_dtoh(&staged, values)
            .map_err(cuda_error(op))?;
        stream.synchronize().map_err(cuda_error(op))
    }

    /// Gives every rank rank `root`'s `buffer`, in place.
    fn broadcast_on_device<T: DeviceRepr>(
        &self,
        op: &'static str,
        buffer: &mut CudaSlice<T>,
        kind: sys::ncclDataType_t,
        root: usize,
    ) -> Result<()> {
        let (comm, root) = (self.comm, c_int(root, op)?);
        self.on_device(op, buffer, |pointer, len, stream| {
            // SAFETY: as in `all_reduce_mean_on_device`; `kind` is the buffer's element type.
            unsafe { sys::ncclBroadcast(pointer, pointer, len, kind, root, comm, stream) }
        })
    }

    /// Checks that every one of `buffers` is a [`CudaBuffer`] on this engine's GPU, then runs
    /// `call` on each as one NCCL group.
    fn group(
        &self,
        op: &'static str,
        buffers: &mut [&mut dyn Any],
        mut call: impl FnMut(&mut CudaSlice<f32>) -> Result<()>,
    ) -> Result<()> {
        // Everything is checked before anything is queued.
        for buffer in buffers.iter() {
            let Some(buffer) = buffer.downcast_ref::<CudaBuffer>() else {
                return Err(Error::Distributed {
                    op,
                    message: "NCCL works on GPU buffers; this one is not on a GPU".to_owned(),
                });
            };
            if buffer.stream().context().ordinal() != self.device.ordinal() {
                return Err(Error::Distributed {
                    op,
                    message: format!(
                        "a buffer is on cuda:{}, this rank's NCCL works on {}",
                        buffer.stream().context().ordinal(),
                        self.device.name()
                    ),
                });
            }
        }
        result::group_start().map_err(|error| nccl_error(op, &error))?;
        let mut queued = Ok(());
        for buffer in buffers.iter_mut() {
            if let Some(buffer) = buffer.downcast_mut::<CudaBuffer>() {
                queued = call(buffer.slice_mut());
                if queued.is_err() {
                    break;
                }
            }
        }
        // The group is closed whatever happened inside it.
        let ended = result::group_end()
            .map(drop)
            .map_err(|error| nccl_error(op, &error));
        queued.and(ended)
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    /// The launcher's.
    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()> {
        const OP: &str = "Nccl::all_reduce_mean";
        self.through_device(OP, values, |nccl, buffer| {
            nccl.all_reduce_mean_on_device(OP, buffer)
        })
    }

    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        const OP: &str = "Nccl::broadcast";
        self.through_device(OP, values, |nccl, buffer| {
            nccl.broadcast_on_device(OP, buffer, sys::ncclDataType_t::ncclFloat32, root)
        })
    }

    fn broadcast_bytes(&self, bytes: &mut [u8], root: usize) -> Result<()> {
        const OP: &str = "Nccl::broadcast_bytes";
        self.through_device(OP, bytes, |nccl, buffer| {
            nccl.broadcast_on_device(OP, buffer, sys::ncclDataType_t::ncclUint8, root)
        })
    }

    fn barrier(&self) -> Result<()> {
        self.all_reduce_mean(&mut [0.0])
    }

    fn in_place(&self) -> Option<&dyn InPlaceMean> {
        Some(self)
    }
}

impl InPlaceMean for Nccl {
    /// Averages [`CudaBuffer`]s on this engine's GPU, as one NCCL group.
    fn all_reduce_mean_in_place(&self, buffers: &mut [&mut dyn Any]) -> Result<()> {
        const OP: &str = "Nccl::all_reduce_mean_in_place";
        self.group(OP, buffers, |buffer| {
            self.all_reduce_mean_on_device(OP, buffer)
        })
    }

    /// Broadcasts [`CudaBuffer`]s on this engine's GPU, as one NCCL group.
    fn broadcast_in_place(&self, buffers: &mut [&mut dyn Any], root: usize) -> Result<()> {
        const OP: &str = "Nccl::broadcast_in_place";
        self.group(OP, buffers, |buffer| {
            self.broadcast_on_device(OP, buffer, sys::ncclDataType_t::ncclFloat32, root)
        })
    }

    fn capturing(&self) -> bool {
        self.device.recorder().is_capturing()
    }
}

impl Drop for Nccl {
    /// Lets the work queued on the stream finish, then frees the communicator.
    fn drop(&mut self) {
        let _ = self.device.stream().synchronize();
        // SAFETY: `comm` was made by `comm_init_rank` and is destroyed once, here.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}

/// Whether this process can load `libnccl.so`.
fn nccl_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names and closes it again.
    unsafe { sys::is_culib_present() }
}

fn missing_nccl(op: &'static str) -> Error {
    Error::Distributed {
        op,
        message: "cannot load the NCCL library (libnccl.so); install NCCL and put its lib \
                  directory on LD_LIBRARY_PATH, with a `libnccl.so -> libnccl.so.2` link if \
                  only `libnccl.so.2` is there"
            .to_owned(),
    }
}

/// Fails on every rank unless every rank can load NCCL.
fn every_rank_has_nccl(launcher: &(impl Collective + ?Sized)) -> Result<()> {
    let world = launcher.world_size();
    let mut lacking = vec![0.0; world];
    lacking[launcher.rank()] = if nccl_present() { 0.0 } else { 1.0 };
    launcher.all_reduce_mean(&mut lacking)?;
    let lacking: Vec<usize> = (0..world).filter(|&rank| lacking[rank] > 0.0).collect();
    match lacking.as_slice() {
        [] => Ok(()),
        [only] if *only == launcher.rank() => Err(missing_nccl("Nccl::new")),
        _ => Err(Error::Distributed {
            op: "Nccl::new",
            message: format!("rank(s) {lacking:?} cannot load the NCCL library (libnccl.so)"),
        }),
    }
}

/// Rank 0's new NCCL id, on every rank: one flag byte (1 when rank 0 made one), then its 128
/// bytes.
fn id_from_rank_0(launcher: &(impl Collective + ?Sized)) -> Result<sys::ncclUniqueId> {
    const OP: &str = "Nccl::new";
    const ID_LEN: usize = 128;
    let mut message = [0u8; 1 + ID_LEN];
    let mut made = Ok(());
    if launcher.rank() == 0 {
        match result::get_uniqueid() {
            Ok(id) => {
                message[0] = 1;
                for (byte, &c) in message[1..].iter_mut().zip(&id.internal) {
                    *byte = c.to_ne_bytes()[0];
                }
            }
            Err(error) => made = Err(nccl_error(OP, &error)),
        }
    }
    launcher.broadcast_bytes(&mut message, 0)?;
    made?;
    if message[0] != 1 {
        return Err(Error::Distributed {
            op: OP,
            message: "rank 0 could not make NCCL's unique id".to_owned(),
        });
    }
    let mut internal = [0; ID_LEN];
    for (c, &byte) in internal.iter_mut().zip(&message[1..]) {
        *c = std::ffi::c_char::from_ne_bytes([byte]);
    }
    Ok(sys::ncclUniqueId { internal })
}

/// Makes `device`'s context current on this thread: NCCL works on the current device.
fn bind(device: &Cuda, op: &'static str) -> Result<()> {
    device
        .stream()
        .context()
        .bind_to_thread()
        .map_err(cuda_error(op))
}

fn c_int(value: usize, op: &'static str) -> Result<i32> {
    i32::try_from(value).map_err(|_| Error::Distributed {
        op,
        message: format!("{value} ranks are more than NCCL counts"),
    })
}

/// NCCL's error, with its own description of it.
fn nccl_error(op: &'static str, error: &result::NcclError) -> Error {
    // SAFETY: NCCL returns a static, NUL-terminated string for every result code.
    let text = unsafe { CStr::from_ptr(sys::ncclGetErrorString(error.0)) };
    Error::Distributed {
        op,
        message: format!("NCCL: {:?}: {}", error.0, text.to_string_lossy()),
    }
}
