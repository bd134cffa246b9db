//! Launch glue of the layer normalisation kernels in `norm.cu`.

use cudarc::driver::LaunchConfig;

use super::{NormKernel, Rows};
use crate::backend::cuda::{BLOCK, Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("norm.cu")
}

/// One block of [`BLOCK`] threads per row (the kernels' shared arrays are sized for it).
fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl NormKernel for Cuda {
    fn layer_norm(
        &self,
        r: &Rows,
        x: &CudaBuffer,
        weight: Option<&CudaBuffer>,
        bias: Option<&CudaBuffer>,
        y: &mut CudaBuffer,
        mean: &mut CudaBuffer,
        rstd: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "layer_norm";
        let buffers = [x, &*y, &*mean, &*rstd]
            .into_iter()
            .chain(weight)
            .chain(bias);
        self.recorder().record(buffers, || format!("{OP} {r:?}"));
        let n = r.rows * r.len;
        expect_len(OP, "input", x.len(), n)?;
        expect_len(OP, "output", y.len(), n)?;
        expect_len(OP, "mean", mean.len(), r.rows)?;
        expect_len(OP, "rstd", rstd.len(), r.rows)?;
        for vector in weight.into_iter().chain(bias) {
            expect_len(OP, "weight or bias", vector.len(), r.len)?;
        }
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: every buffer's length was checked against `rows` and `len`.
        unsafe {
            kernels.layer_norm(
                self.stream(),
                per_row(r.rows),
                y.slice_mut(),
                mean.slice_mut(),
                rstd.slice_mut(),
                x,
                weight.map(|w| &**w),
                bias.map(|b| &**b),
                &(r.rows as u64),
                &(r.len as u64),
                &r.eps,
            )
        }
        .map_err(cuda_error(OP))
    }

    fn layer_norm_backward(
        &self,
        r: &Rows,
        x: &CudaBuffer,
        grad: &CudaBuffer,
        weight: Option<&CudaBuffer>,
        mean: &CudaBuffer,
        rstd: &CudaBuffer,
        grad_x: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "layer_norm backward";
        let buffers = [x, grad, mean, rstd, &*grad_x].into_iter().chain(weight);
        self.recorder().record(buffers, || format!("{OP} {r:?}"));
        let n = r.rows * r.len;
        for (what, len) in [
            ("input", x.len()),
            ("gradient", grad.len()),
            ("input gradient", grad_x.len()),
        ] {
            expect_len(OP, what, len, n)?;
        }
        expect_len(OP, "mean", mean.len(), r.rows)?;
        expect_len(OP, "rstd", rstd.len(), r.rows)?;
        if let Some(weight) = weight {
            expect_len(OP, "weight", weight.len(), r.len)?;
        }
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: every buffer's length was checked against `rows` and `len`.
        unsafe {
            kernels.layer_norm_backward(
                self.stream(),
                per_row(r.rows),
                grad_x.slice_mut(),
                x,
                grad,
                weight.map(|w| &**w),
                mean,
                rstd,
                &(r.rows as u64),
                &(r.len as u64),
            )
        }
        .map_err(cuda_error(OP))
    }

    fn layer_norm_param_grads(
        &self,
        r: &Rows,
        x: &CudaBuffer,
        grad: &CudaBuffer,
        mean: &CudaBuffer,
        rstd: &CudaBuffer,
        grad_weight: &mut CudaBuffer,
        grad_bias: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "layer_norm parameter gradients";
        let buffers = [x, grad, mean, rstd, &*grad_weight, &*grad_bias];
        self.recorder().record(buffers, || format!("{OP} {r:?}"));
        let n = r.rows * r.len;
        expect_len(OP, "input", x.len(), n)?;
        expect_len(OP, "gradient", grad.len(), n)?;
        expect_len(OP, "mean", mean.len(), r.rows)?;
        expect_len(OP, "rstd", rstd.len(), r.rows)?;
        expect_len(OP, "weight gradient", grad_weight.len(), r.len)?;
        expect_len(OP, "bias gradient", grad_bias.len(), r.len)?;
        if r.len == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: every buffer's length was checked against `rows` and `len`.
        unsafe {
            kernels.layer_norm_param_grads(
                self.stream(),
                launch_config(r.len),
                grad_weight.slice_mut(),
                grad_bias.slice_mut(),
                x,
                grad,
                mean,
                rstd,
                &(r.rows as u64),
                &(r.len as u64),
            )
        }
        .map_err(cuda_error(OP))
    }
}
