//! Launch glue of the permutation kernel in `permute.cu`.

use cudarc::driver::DeviceRepr;

use super::{MAX_RANK, Permutation, PermuteKernel};
use crate::backend::cuda::{CValue, Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernel's source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("permute.cu")
}

/// `permute.cu`'s `Order`: a [`Permutation`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Order {
    dims: [u64; MAX_RANK],
    strides: [u64; MAX_RANK],
    rank: u64,
}

// SAFETY: `Order` is `repr(C)` plain `u64`s without padding, in the field order and types of
// `Order` in `permute.cu`.
unsafe impl DeviceRepr for Order {}

// SAFETY: as above.
unsafe impl CValue for Order {
    const C_TYPE: &'static str = "Order";
}

impl From<&Permutation> for Order {
    fn from(p: &Permutation) -> Self {
        Self {
            dims: p.dims.map(|dim| dim as u64),
            strides: p.strides.map(|stride| stride as u64),
            rank: p.rank as u64,
        }
    }
}

impl PermuteKernel for Cuda {
    fn permute(&self, p: &Permutation, src: &CudaBuffer, dst: &mut CudaBuffer) -> Result<()> {
        const OP: &str = "permute";
        self.recorder()
            .record([src, &*dst], || format!("permute {p:?}"));
        let n: usize = p.dims[..p.rank].iter().product();
        expect_len(OP, "source", src.len(), n)?;
        expect_len(OP, "destination", dst.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: both buffers hold the permutation's `n` elements, as checked.
        unsafe {
            kernels.permute(
                self.stream(),
                launch_config(n),
                dst.slice_mut(),
                src,
                &(n as u64),
                &Order::from(p),
            )
        }
        .map_err(cuda_error(OP))
    }
}
