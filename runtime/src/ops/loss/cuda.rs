//! Launch glue of the loss kernels in `loss.cu`.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{ClassLoss, PointwiseLoss};
use crate::backend::cuda::{Cuda, cuda_error, expect_len, launch_config};
use crate::error::{Error, Result};

/// The kernels' source, compiled by the backend.
pub(crate) const SOURCE: &str = include_str!("loss.cu");

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
    let mut launch = dev.stream().launch_builder(&dev.kernels()?.pointwise_loss);
    launch
        .arg(values)
        .arg(grad)
        .arg(x)
        .arg(t)
        .arg(&count)
        .arg(&code)
        .arg(&beta);
    // SAFETY: the arguments match `pointwise_loss_f32`'s parameters; all four buffers hold the
    // `n` elements the kernel touches.
    unsafe { launch.launch(launch_config(n)) }.map_err(cuda_error(OP))?;
    Ok(())
}

/// Per row `r` of the `[labels.len(), classes]` input: `values[r]` and `grad[r, ..]` of `op`
/// against `labels[r]`.
pub(crate) fn class_loss(
    dev: &Cuda,
    op: ClassLoss,
    x: &CudaSlice<f32>,
    labels: &[usize],
    classes: usize,
    values: &mut CudaSlice<f32>,
    grad: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "class_loss";
    let rows = labels.len();
    expect_len(OP, "input", x.len(), rows * classes)?;
    expect_len(OP, "values", values.len(), rows)?;
    expect_len(OP, "grad", grad.len(), rows * classes)?;
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(Error::LabelOutOfRange {
            op: OP,
            index,
            label,
            classes,
        });
    }
    if rows == 0 {
        return Ok(());
    }
    let (code, smoothing) = match op {
        ClassLoss::CrossEntropy { label_smoothing } => (0i32, label_smoothing),
        ClassLoss::Nll => (1, 0.0f32),
    };
    dev.check_host_copy(OP)?;
    let labels: Vec<u64> = labels.iter().map(|&label| label as u64).collect();
    let labels = dev.stream().clone_htod(&labels).map_err(cuda_error(OP))?;
    let (rows, classes) = (rows as u64, classes as u64);
    let mut launch = dev.stream().launch_builder(&dev.kernels()?.class_loss);
    launch
        .arg(values)
        .arg(grad)
        .arg(x)
        .arg(&labels)
        .arg(&rows)
        .arg(&classes)
        .arg(&code)
        .arg(&smoothing);
    // SAFETY: the arguments match `class_loss_f32`'s parameters; `x` and `grad` hold
    // `rows * classes` elements, `values` and `labels` `rows`, and every label is below
    // `classes` (checked above), so every index the kernel touches is in bounds.
    unsafe { launch.launch(launch_config(rows as usize)) }.map_err(cuda_error(OP))?;
    Ok(())
}
