//! Launch glue of the unary kernels in `unary.cu`.

use cudarc::driver::CudaSlice;

use super::UnaryOp;
use crate::backend::cuda::{Cuda, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) const SOURCE: &str = include_str!("unary.cu");

/// `op` as `unary.cu`'s op code and scalar parameter.
fn encode(op: UnaryOp) -> (i32, f32) {
    match op {
        UnaryOp::Neg => (0, 0.0),
        UnaryOp::AddScalar(s) => (1, s),
        UnaryOp::MulScalar(s) => (2, s),
        UnaryOp::ClampMin(min) => (3, min),
        UnaryOp::Pow(p) if p == 2.0 => (4, p),
        UnaryOp::Pow(p) => (5, p),
        UnaryOp::Exp => (6, 0.0),
        UnaryOp::Log => (7, 0.0),
        UnaryOp::Sigmoid => (8, 0.0),
        UnaryOp::Tanh => (9, 0.0),
        UnaryOp::Gelu => (10, 0.0),
        UnaryOp::LtScalar(s) => (11, s),
        UnaryOp::GtScalar(s) => (12, s),
    }
}

/// `out[i] = op(x[i])`.
pub(crate) fn unary(
    dev: &Cuda,
    op: UnaryOp,
    x: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    let n = x.len();
    expect_len("unary", "output", out.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let (code, s) = encode(op);
    let count = n as u64;
    let kernels = dev.kernels()?;
    // SAFETY: both buffers hold `n` elements, the only indices the kernel touches.
    unsafe { kernels.unary(dev.stream(), launch_config(n), out, x, &count, &code, &s) }
        .map_err(cuda_error("unary"))
}

/// `x[i] = op(x[i])`.
pub(crate) fn unary_assign(dev: &Cuda, op: UnaryOp, x: &mut CudaSlice<f32>) -> Result<()> {
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let (code, s) = encode(op);
    let count = n as u64;
    let kernels = dev.kernels()?;
    // SAFETY: `x` holds the `n` elements the kernel touches.
    unsafe { kernels.unary_assign(dev.stream(), launch_config(n), x, &count, &code, &s) }
        .map_err(cuda_error("unary_assign"))
}

/// `x[i] = value`.
pub(crate) fn fill(dev: &Cuda, x: &mut CudaSlice<f32>, value: f32) -> Result<()> {
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let count = n as u64;
    let kernels = dev.kernels()?;
    // SAFETY: `x` holds the `n` elements the kernel touches.
    unsafe { kernels.fill(dev.stream(), launch_config(n), x, &count, &value) }
        .map_err(cuda_error("fill"))
}
