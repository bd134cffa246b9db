//! Launch glue of the unary kernels in `unary.cu`, whose op `switch`es come from the table in
//! `mod.rs`.

use std::sync::LazyLock;

use super::{UnaryKernel, UnaryOp};
use crate::backend::cuda::{Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;
use crate::ops::elementwise::{Saved, cuda_switch};

/// `unary.cu` with the table's forward and backward functions in place of its marker line.
static SOURCE: LazyLock<String> = LazyLock::new(|| {
    let rows = UnaryOp::cuda_rows();
    let functions =
        cuda_switch("unary_forward", &rows, 0) + &cuda_switch("unary_backward", &rows, 1);
    include_str!("unary.cu").replace("// @table@\n", &functions)
});

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    &SOURCE
}

impl UnaryKernel for Cuda {
    fn unary(&self, op: UnaryOp, x: &CudaBuffer, out: &mut CudaBuffer) -> Result<()> {
        self.recorder()
            .record([x, &*out], || format!("{op:?} {}", x.len()));
        let n = x.len();
        expect_len("unary", "output", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let (code, [s0, s1]) = op.encode();
        let count = n as u64;
        let kernels = self.kernels()?;
        let out = out.slice_mut();
        // SAFETY: both buffers hold `n` elements, the only indices the kernel touches.
        unsafe {
            kernels.unary(
                self.stream(),
                launch_config(n),
                out,
                x,
                &count,
                &code,
                &s0,
                &s1,
            )
        }
        .map_err(cuda_error("unary"))
    }

    fn unary_assign(&self, op: UnaryOp, x: &mut CudaBuffer) -> Result<()> {
        self.recorder()
            .record([&*x], || format!("{op:?} in place {}", x.len()));
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let (code, [s0, s1]) = op.encode();
        let count = n as u64;
        let kernels = self.kernels()?;
        let x = x.slice_mut();
        // SAFETY: `x` holds the `n` elements the kernel touches.
        unsafe { kernels.unary_assign(self.stream(), launch_config(n), x, &count, &code, &s0, &s1) }
            .map_err(cuda_error("unary_assign"))
    }

    fn unary_with_derivative(
        &self,
        op: UnaryOp,
        x: &CudaBuffer,
        out: &mut CudaBuffer,
        derivative: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder().record([x, &*out, &*derivative], || {
            format!("{op:?} with derivative {}", x.len())
        });
        let n = x.len();
        expect_len("unary_with_derivative", "output", out.len(), n)?;
        expect_len("unary_with_derivative", "derivative", derivative.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let (code, [s0, s1]) = op.encode();
        let (count, from_output) = (n as u64, i32::from(op.saves() == Saved::Output));
        let kernels = self.kernels()?;
        let (out, derivative) = (out.slice_mut(), derivative.slice_mut());
        // SAFETY: the three buffers hold `n` elements, the only indices the kernel touches.
        unsafe {
            kernels.unary_with_derivative(
                self.stream(),
                launch_config(n),
                out,
                derivative,
                x,
                &count,
                &code,
                &s0,
                &s1,
                &from_output,
            )
        }
        .map_err(cuda_error("unary_with_derivative"))
    }

    fn unary_assign_with_derivative(
        &self,
        op: UnaryOp,
        x: &mut CudaBuffer,
        derivative: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder().record([&*x, &*derivative], || {
            format!("{op:?} with derivative in place {}", x.len())
        });
        let n = x.len();
        expect_len(
            "unary_assign_with_derivative",
            "derivative",
            derivative.len(),
            n,
        )?;
        if n == 0 {
            return Ok(());
        }
        let (code, [s0, s1]) = op.encode();
        let (count, from_output) = (n as u64, i32::from(op.saves() == Saved::Output));
        let kernels = self.kernels()?;
        let (x, derivative) = (x.slice_mut(), derivative.slice_mut());
        // SAFETY: both buffers hold `n` elements, the only indices the kernel touches.
        unsafe {
            kernels.unary_assign_with_derivative(
                self.stream(),
                launch_config(n),
                x,
                derivative,
                &count,
                &code,
                &s0,
                &s1,
                &from_output,
            )
        }
        .map_err(cuda_error("unary_assign_with_derivative"))
    }

    fn unary_backward(
        &self,
        op: UnaryOp,
        grad: &CudaBuffer,
        saved: &CudaBuffer,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder().record([grad, saved, &*out], || {
            format!("{op:?} backward {}", grad.len())
        });
        let n = grad.len();
        expect_len("unary_backward", "saved value", saved.len(), n)?;
        expect_len("unary_backward", "output", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let (code, [s0, s1]) = op.encode();
        let count = n as u64;
        let kernels = self.kernels()?;
        let out = out.slice_mut();
        // SAFETY: the three buffers hold `n` elements, the only indices the kernel touches.
        unsafe {
            kernels.unary_backward(
                self.stream(),
                launch_config(n),
                out,
                grad,
                saved,
                &count,
                &code,
                &s0,
                &s1,
            )
        }
        .map_err(cuda_error("unary_backward"))
    }

    fn unary_backward_assign(
        &self,
        op: UnaryOp,
        grad: &mut CudaBuffer,
        saved: &CudaBuffer,
    ) -> Result<()> {
        self.recorder().record([&*grad, saved], || {
            format!("{op:?} backward in place {}", grad.len())
        });
        let n = grad.len();
        expect_len("unary_backward_assign", "saved value", saved.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let (code, [s0, s1]) = op.encode();
        let count = n as u64;
        let kernels = self.kernels()?;
        let grad = grad.slice_mut();
        // SAFETY: both buffers hold `n` elements, the only indices the kernel touches.
        unsafe {
            kernels.unary_backward_assign(
                self.stream(),
                launch_config(n),
                grad,
                saved,
                &count,
                &code,
                &s0,
                &s1,
            )
        }
        .map_err(cuda_error("unary_backward_assign"))
    }
}

/// `x[i] = value`.
pub(crate) fn fill(dev: &Cuda, x: &mut cudarc::driver::CudaSlice<f32>, value: f32) -> Result<()> {
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
