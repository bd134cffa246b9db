//! Launch glue of the softmax kernels in `softmax.cu`.

use cudarc::driver::CudaSlice;

use super::{CausalScores, SoftmaxAxis, SoftmaxKernel, SoftmaxOp};
use crate::backend::cuda::{Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("softmax.cu")
}

fn code(op: SoftmaxOp) -> i32 {
    match op {
        SoftmaxOp::Softmax => 0,
        SoftmaxOp::LogSoftmax => 1,
    }
}

/// Checks that every buffer holds the axis's elements (the kernels trust it) and returns the
/// launch's dims, or `None` when there is nothing to compute.
fn checked_dims(
    op: &'static str,
    axis: &SoftmaxAxis,
    buffers: &[(&str, usize)],
) -> Result<Option<[u64; 3]>> {
    for &(what, len) in buffers {
        expect_len(op, what, len, axis.numel())?;
    }
    Ok((axis.numel() > 0).then(|| [axis.outer, axis.len, axis.inner].map(|d| d as u64)))
}

/// `out = op(x)` along the axis.
pub(crate) fn softmax(
    dev: &Cuda,
    op: SoftmaxOp,
    x: &CudaSlice<f32>,
    axis: &SoftmaxAxis,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "softmax";
    let buffers = [("input", x.len()), ("output", out.len())];
    let Some([outer, len, inner]) = checked_dims(OP, axis, &buffers)? else {
        return Ok(());
    };
    let op = code(op);
    let kernels = dev.kernels()?;
    let config = launch_config(axis.outer * axis.inner);
    // SAFETY: both buffers hold `outer * len * inner` elements (checked), the only indices
    // the kernel touches.
    unsafe { kernels.softmax(dev.stream(), config, out, x, &outer, &len, &inner, &op) }
        .map_err(cuda_error(OP))
}

/// `out` = the gradient through `op` along the axis, from its output `y` and the output's
/// gradient `g`.
pub(crate) fn softmax_backward(
    dev: &Cuda,
    op: SoftmaxOp,
    y: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    axis: &SoftmaxAxis,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "softmax_backward";
    let buffers = [
        ("output", y.len()),
        ("gradient", g.len()),
        ("result", out.len()),
    ];
    let Some([outer, len, inner]) = checked_dims(OP, axis, &buffers)? else {
        return Ok(());
    };
    let op = code(op);
    let kernels = dev.kernels()?;
    let config = launch_config(axis.outer * axis.inner);
    // SAFETY: all three buffers hold `outer * len * inner` elements (checked), the only
    // indices the kernel touches.
    unsafe { kernels.softmax_backward(dev.stream(), config, out, y, g, &outer, &len, &inner, &op) }
        .map_err(cuda_error(OP))
}

/// `out` = the causal softmax of `x`.
pub(crate) fn causal_softmax(
    dev: &Cuda,
    x: &CudaSlice<f32>,
    scores: &CausalScores,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "causal_softmax";
    let buffers = [("input", x.len()), ("output", out.len())];
    let Some([rows, size, _]) = checked_dims(OP, &scores.axis, &buffers)? else {
        return Ok(());
    };
    let scale = scores.scale;
    let kernels = dev.kernels()?;
    let config = launch_config(scores.axis.outer);
    // SAFETY: both buffers hold `rows` rows of `size` (checked), the only indices the kernel
    // touches.
    unsafe { kernels.causal_softmax(dev.stream(), config, out, x, &rows, &size, &scale) }
        .map_err(cuda_error(OP))
}

/// `out` = the gradient through the causal softmax, from its output `y` and the output's
/// gradient `g`.
pub(crate) fn causal_softmax_backward(
    dev: &Cuda,
    y: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    scores: &CausalScores,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "causal_softmax_backward";
    let buffers = [
        ("output", y.len()),
        ("gradient", g.len()),
        ("result", out.len()),
    ];
    let Some([rows, size, _]) = checked_dims(OP, &scores.axis, &buffers)? else {
        return Ok(());
    };
    let scale = scores.scale;
    let kernels = dev.kernels()?;
    let config = launch_config(scores.axis.outer);
    // SAFETY: all three buffers hold `rows` rows of `size` (checked), the only indices the
    // kernel touches.
    unsafe {
        kernels.causal_softmax_backward(dev.stream(), config, out, y, g, &rows, &size, &scale)
    }
    .map_err(cuda_error(OP))
}

impl SoftmaxKernel for Cuda {
    fn softmax(
        &self,
        op: SoftmaxOp,
        x: &CudaBuffer,
        axis: &SoftmaxAxis,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder()
            .record([x, &*out], || format!("{op:?} {axis:?}"));
        self::softmax(self, op, x, axis, out.slice_mut())
    }

    fn softmax_backward(
        &self,
        op: SoftmaxOp,
        y: &CudaBuffer,
        grad: &CudaBuffer,
        axis: &SoftmaxAxis,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder()
            .record([y, grad, &*out], || format!("{op:?} backward {axis:?}"));
        self::softmax_backward(self, op, y, grad, axis, out.slice_mut())
    }

    fn causal_softmax(
        &self,
        x: &CudaBuffer,
        scores: &CausalScores,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder()
            .record([x, &*out], || format!("causal softmax {scores:?}"));
        self::causal_softmax(self, x, scores, out.slice_mut())
    }

    fn causal_softmax_backward(
        &self,
        y: &CudaBuffer,
        grad: &CudaBuffer,
        scores: &CausalScores,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder().record([y, grad, &*out], || {
            format!("causal softmax backward {scores:?}")
        });
        self::causal_softmax_backward(self, y, grad, scores, out.slice_mut())
    }
}
