//! Launch glue of the pooling kernels in `pool.cu`.

use cudarc::driver::DeviceRepr;

use super::{Pool2d, PoolGeometry, PoolKernel, PoolKind};
use crate::backend::cuda::{CValue, Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("pool.cu")
}

/// `pool.cu`'s `Window`: the geometry and the pooling.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    planes: u64,
    height: u64,
    width: u64,
    out_height: u64,
    out_width: u64,
    kernel: u64,
    stride: u64,
    padding: u64,
    kind: i32,
    pad: i32,
}

// SAFETY: `Window` is `repr(C)` plain data with no padding bytes (`pad` fills the tail) and the
// same field order and types as `Window` in `pool.cu`.
unsafe impl DeviceRepr for Window {}

// SAFETY: as above.
unsafe impl CValue for Window {
    const C_TYPE: &'static str = "Window";
}

impl Window {
    fn new(pool: &Pool2d, g: &PoolGeometry) -> Self {
        Self {
            planes: g.planes as u64,
            height: g.height as u64,
            width: g.width as u64,
            out_height: g.out_height as u64,
            out_width: g.out_width as u64,
            kernel: pool.kernel as u64,
            stride: pool.stride as u64,
            padding: pool.padding as u64,
            kind: match pool.kind {
                PoolKind::Max => 0,
                PoolKind::Avg => 1,
            },
            pad: 0,
        }
    }
}

impl PoolKernel for Cuda {
    fn pool2d(
        &self,
        pool: &Pool2d,
        geometry: &PoolGeometry,
        x: &CudaBuffer,
        out: &mut CudaBuffer,
        indices: Option<&mut CudaBuffer>,
    ) -> Result<()> {
        const OP: &str = "pool2d";
        let buffers = [x, &*out].into_iter().chain(indices.as_deref());
        self.recorder()
            .record(buffers, || format!("{pool:?} {geometry:?}"));
        let n = geometry.planes * geometry.out_height * geometry.out_width;
        expect_len(
            OP,
            "input",
            x.len(),
            geometry.planes * geometry.height * geometry.width,
        )?;
        expect_len(OP, "output", out.len(), n)?;
        if let Some(indices) = indices.as_deref() {
            expect_len(OP, "indices", indices.len(), n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let window = Window::new(pool, geometry);
        let kernels = self.kernels()?;
        let out = out.slice_mut();
        let indices = indices.map(CudaBuffer::slice_mut);
        // SAFETY: `out` and `indices` hold the `n` outputs written, `x` the planes read; the
        // lengths were checked above.
        unsafe { kernels.pool2d(self.stream(), launch_config(n), out, indices, x, &window) }
            .map_err(cuda_error(OP))
    }

    fn pool2d_backward(
        &self,
        pool: &Pool2d,
        geometry: &PoolGeometry,
        grad_out: &CudaBuffer,
        indices: Option<&CudaBuffer>,
        grad_in: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "pool2d backward";
        let buffers = [grad_out, &*grad_in].into_iter().chain(indices);
        self.recorder()
            .record(buffers, || format!("{pool:?} backward {geometry:?}"));
        let outputs = geometry.planes * geometry.out_height * geometry.out_width;
        let n = geometry.planes * geometry.height * geometry.width;
        expect_len(OP, "output gradient", grad_out.len(), outputs)?;
        expect_len(OP, "input gradient", grad_in.len(), n)?;
        if let Some(indices) = indices {
            expect_len(OP, "indices", indices.len(), outputs)?;
        }
        if n == 0 {
            return Ok(());
        }
        let window = Window::new(pool, geometry);
        let kernels = self.kernels()?;
        let grad_in = grad_in.slice_mut();
        let indices = indices.map(|indices| &**indices);
        // SAFETY: `grad_in` holds the `n` inputs written; `grad_out` and `indices` the outputs
        // read; the lengths were checked above.
        unsafe {
            kernels.pool2d_backward(
                self.stream(),
                launch_config(n),
                grad_in,
                grad_out,
                indices,
                &window,
            )
        }
        .map_err(cuda_error(OP))
    }
}
