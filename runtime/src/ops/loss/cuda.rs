//! Launch glue of the loss kernels in `loss.cu`.

use cudarc::driver::CudaSlice;

use super::{ClassLoss, LossKernel, PointwiseLoss};
use crate::backend::cuda::{Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("loss.cu")
}

/// `values[i] = l(x[i], t[i])`, `grad[i] = dl/dx (x[i], t[i])`.
pub(crate) fn pointwise_loss(
    dev: &Cuda,
    op: PointwiseLoss,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    values: &mut CudaSlice<f32>,
    grad: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "pointwise_loss";
    let n = x.len();
    expect_len(OP, "target", t.len(), n)?;
    expect_len(OP, "values", values.len(), n)?;
    expect_len(OP, "grad", grad.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let (code, beta) = match op {
        PointwiseLoss::Squared => (0i32, 0.0f32),
        PointwiseLoss::Absolute => (1, 0.0),
        PointwiseLoss::SmoothL1 { beta } => (2, beta),
        PointwiseLoss::BceWithLogits => (3, 0.0),
    };
    let count = n as u64;
    let kernels = dev.kernels()?;
    // SAFETY: all four buffers hold the `n` elements the kernel touches.
    unsafe {
        kernels.pointwise_loss(
            dev.stream(),
            launch_config(n),
            values,
            grad,
            x,
            t,
            &count,
            &code,
            &beta,
        )
    }
    .map_err(cuda_error(OP))
}

/// Per row of the `[rows, classes]` input `x`: the loss `op` against the row's label (an
/// `f32` class index; NaN for the row when it is not below `classes`).
pub(crate) fn class_loss(
    dev: &Cuda,
    op: ClassLoss,
    x: &CudaSlice<f32>,
    labels: &CudaSlice<f32>,
    classes: usize,
    values: &mut CudaSlice<f32>,
    grad: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "class_loss";
    let rows = values.len();
    expect_len(OP, "labels", labels.len(), rows)?;
    expect_len(OP, "input", x.len(), rows * classes)?;
    expect_len(OP, "grad", grad.len(), rows * classes)?;
    if rows == 0 {
        return Ok(());
    }
    let (code, smoothing) = match op {
        ClassLoss::CrossEntropy { label_smoothing } => (0i32, label_smoothing),
        ClassLoss::Nll => (1, 0.0f32),
    };
    let (rows, classes) = (rows as u64, classes as u64);
    let kernels = dev.kernels()?;
    let config = launch_config(values.len());
    // SAFETY: `x` and `grad` hold `rows * classes` elements and `values` and `labels` `rows`
    // (checked), and the kernel reads a row's `x` at its label only after checking the label
    // is below `classes`.
    unsafe {
        kernels.class_loss(
            dev.stream(),
            config,
            values,
            grad,
            x,
            labels,
            &rows,
            &classes,
            &code,
            &smoothing,
        )
    }
    .map_err(cuda_error(OP))
}

impl LossKernel for Cuda {
    fn pointwise_loss(
        &self,
        op: PointwiseLoss,
        x: &CudaBuffer,
        t: &CudaBuffer,
        values: &mut CudaBuffer,
        grad: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder()
            .record([x, t, &*values, &*grad], || format!("{op:?} {}", x.len()));
        self::pointwise_loss(self, op, x, t, values.slice_mut(), grad.slice_mut())
    }

    fn class_loss(
        &self,
        op: ClassLoss,
        x: &CudaBuffer,
        labels: &CudaBuffer,
        classes: usize,
        values: &mut CudaBuffer,
        grad: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder().record([x, labels, &*values, &*grad], || {
            format!("{op:?} {} {classes}", labels.len())
        });
        self::class_loss(
            self,
            op,
            x,
            labels,
            classes,
            values.slice_mut(),
            grad.slice_mut(),
        )
    }
}
