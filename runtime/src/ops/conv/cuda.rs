//! Launch glue of the unfolding kernels in `conv.cu`.

use cudarc::driver::DeviceRepr;

use super::{ConvGeometry, ConvKernel};
use crate::backend::cuda::{CValue, Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("conv.cu")
}

/// `conv.cu`'s `Geometry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry([u64; 10]);

// SAFETY: `Geometry` is `repr(C)` plain data, ten `u64`s in the order of the `Geometry` struct
// in `conv.cu`, which has no padding.
unsafe impl DeviceRepr for Geometry {}

// SAFETY: as above.
unsafe impl CValue for Geometry {
    const C_TYPE: &'static str = "Geometry";
}

impl Geometry {
    fn new(g: &ConvGeometry) -> Self {
        Self(
            [
                g.batch,
                g.channels,
                g.height,
                g.width,
                g.kernel,
                g.stride,
                g.padding,
                g.dilation,
                g.out_height,
                g.out_width,
            ]
            .map(|v| v as u64),
        )
    }
}

impl ConvKernel for Cuda {
    fn im2col(
        &self,
        g: &ConvGeometry,
        (x, first): (&CudaBuffer, usize),
        cols: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "im2col";
        self.recorder()
            .record([x, &*cols], || format!("{OP} {g:?} from sample {first}"));
        let n = g.columns_len();
        let samples = g.samples(OP, first, x.len())?;
        expect_len(OP, "columns", cols.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let geometry = Geometry::new(g);
        let kernels = self.kernels()?;
        let (cols, x) = (cols.slice_mut(), x.slice(samples));
        // SAFETY: `cols` holds the `n` entries written and `x` the samples read, checked
        // above.
        unsafe { kernels.im2col(self.stream(), launch_config(n), cols, &x, &geometry) }
            .map_err(cuda_error(OP))
    }

    fn col2im(
        &self,
        g: &ConvGeometry,
        cols: &mut CudaBuffer,
        (x, first): (&mut CudaBuffer, usize),
    ) -> Result<()> {
        const OP: &str = "col2im";
        self.recorder()
            .record([&*cols, &*x], || format!("{OP} {g:?} from sample {first}"));
        let n = g.batch * g.sample_len();
        let samples = g.samples(OP, first, x.len())?;
        expect_len(OP, "columns", cols.len(), g.columns_len())?;
        if n == 0 {
            return Ok(());
        }
        let geometry = Geometry::new(g);
        let kernels = self.kernels()?;
        let mut x = x.slice_mut().slice_mut(samples);
        // SAFETY: `x` holds the `n` elements written and `cols` the entries read, checked
        // above.
        unsafe { kernels.col2im(self.stream(), launch_config(n), &mut x, cols, &geometry) }
            .map_err(cuda_error(OP))
    }
}
