//! Launch glue of the dropout kernel in `dropout.cu`.

use super::{DropoutKernel, DropoutMask};
use crate::backend::cuda::{Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernel's source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("dropout.cu")
}

impl DropoutKernel for Cuda {
    fn dropout(&self, mask: &DropoutMask, x: &CudaBuffer, out: &mut CudaBuffer) -> Result<()> {
        const OP: &str = "dropout";
        self.recorder()
            .record([x, &*out], || format!("dropout {mask:?}"));
        let n = x.len();
        expect_len(OP, "output", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: `out` and `x` hold `n` elements, as checked.
        unsafe {
            kernels.dropout(
                self.stream(),
                launch_config(n),
                out.slice_mut(),
                x,
                &(n as u64),
                &mask.seed,
                &mask.threshold,
                &mask.scale,
            )
        }
        .map_err(cuda_error(OP))
    }
}
