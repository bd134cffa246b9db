//! Launch glue of the axis sums in `reduce.cu`.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::ReduceKernel;
use crate::backend::cuda::{BLOCK, Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("reduce.cu")
}

/// Sums `x`, viewed as `[outer, len, inner]`, over the middle axis into `out` (`[outer, inner]`).
pub(crate) fn sum_axis(
    dev: &Cuda,
    x: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "sum_axis";
    expect_len(OP, "input", x.len(), outer * len * inner)?;
    let n = outer * inner;
    expect_len(OP, "output", out.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    if len == 0 {
        return dev.stream().memset_zeros(out).map_err(cuda_error(OP));
    }
    let kernels = dev.kernels()?;
    let (outer, len, inner) = (outer as u64, len as u64, inner as u64);
    if inner == 1 {
        let config = LaunchConfig {
            grid_dim: (n.min(65_535) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `x` holds `outer * len` elements and `out` `outer`, as checked; the block
        // has the `BLOCK` threads the kernel's shared array is sized for.
        unsafe { kernels.sum_rows(dev.stream(), config, out, x, &outer, &len) }
            .map_err(cuda_error(OP))?;
    } else {
        let config = launch_config(n);
        // SAFETY: `x` holds `outer * len * inner` elements and `out` `outer * inner`, as
        // checked.
        unsafe { kernels.sum_strided(dev.stream(), config, out, x, &outer, &len, &inner) }
            .map_err(cuda_error(OP))?;
    }
    Ok(())
}

impl ReduceKernel for Cuda {
    fn sum_axis(
        &self,
        x: &CudaBuffer,
        outer: usize,
        len: usize,
        inner: usize,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder()
            .record([x, &*out], || format!("sum_axis {outer}x{len}x{inner}"));
        self::sum_axis(self, x, outer, len, inner, out.slice_mut())
    }
}
