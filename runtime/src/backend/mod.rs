//! The [`Backend`] trait: where tensor storage lives ([`Memory`]) and the kernels of every op
//! family that run on it.
//!
//! Tensors never touch their storage directly; every op goes through these traits, so a new
//! device (CUDA, on cudarc) is one more implementation and no caller changes. Data reaches the
//! host only through [`Memory::download`].

mod buffer_pool;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
mod cuda;
pub(crate) mod warm_pool;

pub use cpu::{Cpu, num_threads, set_num_threads};
pub(crate) use cuda::CapturedGraph;
pub use cuda::Cuda;
#[cfg(feature = "cuda")]
pub use cuda::CudaBuffer;

use std::fmt;

use crate::error::{Error, Result};
use crate::ops::binary::BinaryKernel;
use crate::ops::channel::ChannelKernel;
use crate::ops::conv::ConvKernel;
use crate::ops::dropout::DropoutKernel;
use crate::ops::index::IndexKernel;
use crate::ops::loss::LossKernel;
use crate::ops::matmul::MatmulKernel;
use crate::ops::norm::NormKernel;
use crate::ops::optim::OptimKernel;
use crate::ops::permute::PermuteKernel;
use crate::ops::pool::PoolKernel;
use crate::ops::reduce::ReduceKernel;
use crate::ops::softmax::SoftmaxKernel;
use crate::ops::unary::UnaryKernel;

/// Declares [`Backend`] as [`Memory`] plus the listed kernel traits and implements it for every
/// type that has them all, so the list is written once.
macro_rules! backend {
    ($(#[$doc:meta])* $($kernel:ident),* $(,)?) => {
        $(#[$doc])*
        pub trait Backend: Memory $(+ $kernel)* {}

        impl<D: Memory $(+ $kernel)*> Backend for D {}
    };
}

backend! {
    /// A device that stores `f32` buffers and runs the kernels of every op family: its
    /// [`Memory`] plus one kernel trait per family, each declared in that family's
    /// `ops/<family>/mod.rs` and implemented beside it (`cpu.rs`, `cuda.rs`). Implemented for
    /// every type that has them all; a new family adds its trait to this list and nothing else.
    UnaryKernel,
    BinaryKernel,
    ReduceKernel,
    MatmulKernel,
    SoftmaxKernel,
    LossKernel,
    OptimKernel,
    PoolKernel,
    ConvKernel,
    ChannelKernel,
    DropoutKernel,
    IndexKernel,
    NormKernel,
    PermuteKernel,
}

/// Where a device's buffers live: allocation and copies between buffers and the host.
///
/// Buffers are flat and row-major; shapes are the caller's business. Kernels write into buffers
/// the caller allocated, so a training step can reuse its buffers.
pub trait Memory: Clone + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// A buffer of `f32` on this device.
    type Storage: fmt::Debug + Send + Sync + 'static;

    /// A short name for messages, like `cpu` or `cuda:0`.
    fn name(&self) -> String;

    /// A buffer of `len` zeros.
    ///
    /// # Errors
    /// When the device cannot allocate it.
    fn zeros(&self, len: usize) -> Result<Self::Storage>;

    /// A buffer of `len` elements for a kernel that writes every one: its values are
    /// unspecified (a reused buffer's). The default is [`Memory::zeros`].
    ///
    /// # Errors
    /// When the device cannot allocate it.
    fn empty(&self, len: usize) -> Result<Self::Storage> {
        self.zeros(len)
    }

    /// A buffer holding a copy of `data`.
    ///
    /// # Errors
    /// When the device cannot allocate or copy.
    fn upload(&self, data: &[f32]) -> Result<Self::Storage>;

    /// A buffer made from `data`; the CPU takes ownership without copying.
    ///
    /// # Errors
    /// When the device cannot allocate or copy.
    fn upload_vec(&self, data: Vec<f32>) -> Result<Self::Storage> {
        self.upload(&data)
    }

    /// Overwrites the `data.len()` elements of `dst` from `offset` on with `data` from the
    /// host, in place.
    ///
    /// # Errors
    /// When `dst` is too short or the device cannot copy.
    fn upload_into_at(&self, data: &[f32], dst: &mut Self::Storage, offset: usize) -> Result<()>;

    /// The buffer's contents, copied to the host.
    ///
    /// # Errors
    /// When the device cannot copy.
    fn download(&self, storage: &Self::Storage) -> Result<Vec<f32>>;

    /// Copies the buffer's contents into `dst` on the host, which has the same length. The
    /// default goes through [`download`](Self::download); the CPU copies without allocating.
    ///
    /// # Errors
    /// When the lengths differ or the device cannot copy.
    fn download_into(&self, storage: &Self::Storage, dst: &mut [f32]) -> Result<()> {
        let values = self.download(storage)?;
        expect_len("download_into", "destination", dst.len(), values.len())?;
        dst.copy_from_slice(&values);
        Ok(())
    }

    /// A copy of `src`.
    ///
    /// # Errors
    /// When the device cannot allocate or copy.
    fn copy(&self, src: &Self::Storage) -> Result<Self::Storage>;

    /// Copies `src` into `dst`, which has the same length.
    ///
    /// # Errors
    /// When the device cannot copy.
    fn copy_into(&self, src: &Self::Storage, dst: &mut Self::Storage) -> Result<()>;

    /// Sets every element of `dst` to `value`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn fill(&self, dst: &mut Self::Storage, value: f32) -> Result<()>;

    /// Takes back the buffer of a tensor being dropped, to hand out again; the default drops
    /// it. What it leaves in `storage` is dropped.
    fn recycle(&self, storage: &mut Self::Storage) {
        let _ = storage;
    }
}

/// The environment variable that turns a test's "no CUDA device" skip into a failure: a GPU
/// host sets `DECLNET_REQUIRE_CUDA=1`, so a broken CUDA path cannot pass as skipped.
pub const REQUIRE_CUDA_VAR: &str = "DECLNET_REQUIRE_CUDA";

/// Says that a test needing a GPU is skipped because of `why`, on stderr in one uncaptured
/// write (so the skip shows in the log of a passing run); or, with
/// [`REQUIRE_CUDA_VAR`]` = 1`, fails the test.
///
/// # Panics
/// When [`REQUIRE_CUDA_VAR`] is `1`.
#[doc(hidden)]
pub fn skip_without_cuda(why: &dyn fmt::Display) {
    let required = std::env::var(REQUIRE_CUDA_VAR).is_ok_and(|value| value == "1");
    assert!(
        !required,
        "{REQUIRE_CUDA_VAR}=1, but the test would be skipped: {why}"
    );
    let line = format!("skipped: no CUDA device ({why})\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// Checks that a buffer has the length an op will index it with: kernels trust their
/// lengths, so a short buffer would be written out of bounds.
pub(crate) fn expect_len(op: &'static str, what: &str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::Backend {
            op,
            message: format!("{what} holds {len} elements, expected {expected}"),
        })
    }
}

/// Checks that `len` elements from `offset` fit a buffer of `capacity`, returning where they
/// end.
pub(crate) fn check_fits(
    op: &'static str,
    len: usize,
    offset: usize,
    capacity: usize,
) -> Result<usize> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(end),
        _ => Err(Error::Backend {
            op,
            message: format!("{len} elements from {offset} do not fit a destination of {capacity}"),
        }),
    }
}
