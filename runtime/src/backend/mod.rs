//! The [`Backend`] trait: where tensor storage lives and how kernels run on it.
//!
//! Tensors never touch their storage directly; every op goes through these methods, so a new
//! device (CUDA, on cudarc) is one more implementation and no caller changes. Data reaches the
//! host only through [`Backend::download`].

mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
mod cuda;

pub use cpu::Cpu;
pub(crate) use cuda::CapturedGraph;
pub use cuda::Cuda;
#[cfg(feature = "cuda")]
pub use cuda::CudaBuffer;

use std::fmt;

use crate::error::{Error, Result};
use crate::ops::binary::{BinaryOp, Broadcast};
use crate::ops::loss::{ClassLoss, PointwiseLoss};
use crate::ops::matmul::Gemm;
use crate::ops::optim::OptimStep;
use crate::ops::softmax::{SoftmaxAxis, SoftmaxOp};
use crate::ops::unary::UnaryOp;

/// A device that stores `f32` buffers and runs the kernels tensor ops are made of.
///
/// Buffers are flat and row-major; shapes are the caller's business. Kernels write into buffers
/// the caller allocated, so a training step can reuse its buffers.
pub trait Backend: Clone + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// A buffer of `f32` on this device.
    type Storage: fmt::Debug + Send + Sync;

    /// A short name for messages, like `cpu` or `cuda:0`.
    fn name(&self) -> String;

    /// A buffer of `len` zeros.
    ///
    /// # Errors
    /// When the device cannot allocate it.
    fn zeros(&self, len: usize) -> Result<Self::Storage>;

    /// A buffer holding a copy of `data`.
    ///
    /// # Errors
    /// When the device cannot allocate or copy.
    fn upload(&self, data: &[f32]) -> Result<Self::Storage>;

    /// A buffer made from `data`; the CPU takes ownership without copying.
    ///
    /// # Errors
    /// When the device cannot allocate or copy.
    fn upload_vec(&self, data: Vec<f32>) -> Result<Self::Storage> {
        self.upload(&data)
    }

    /// Overwrites the `data.len()` elements of `dst` from `offset` on with `data` from the
    /// host, in place.
    ///
    /// # Errors
    /// When `dst` is too short or the device cannot copy.
    fn upload_into_at(&self, data: &[f32], dst: &mut Self::Storage, offset: usize) -> Result<()>;

    /// The buffer's contents, copied to the host.
    ///
    /// # Errors
    /// When the device cannot copy.
    fn download(&self, storage: &Self::Storage) -> Result<Vec<f32>>;

    /// A copy of `src`.
    ///
    /// # Errors
    /// When the device cannot allocate or copy.
    fn copy(&self, src: &Self::Storage) -> Result<Self::Storage>;

    /// Copies `src` into `dst`, which has the same length.
    ///
    /// # Errors
    /// When the device cannot copy.
    fn copy_into(&self, src: &Self::Storage, dst: &mut Self::Storage) -> Result<()>;

    /// Sets every element of `dst` to `value`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn fill(&self, dst: &mut Self::Storage, value: f32) -> Result<()>;

    /// `c = alpha * op(a) * op(b) + beta * c`, reading transposed operands in place.
    ///
    /// # Errors
    /// When the kernel fails.
    fn gemm(
        &self,
        gemm: &Gemm,
        a: &Self::Storage,
        b: &Self::Storage,
        c: &mut Self::Storage,
    ) -> Result<()>;

    /// Writes the transpose of the row-major `rows x cols` matrix `src` into `dst`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn transpose(
        &self,
        src: &Self::Storage,
        rows: usize,
        cols: usize,
        dst: &mut Self::Storage,
    ) -> Result<()>;

    /// `out[i] = op(x[i])` for every element.
    ///
    /// # Errors
    /// When the kernel fails.
    fn unary(&self, op: UnaryOp, x: &Self::Storage, out: &mut Self::Storage) -> Result<()>;

    /// `x[i] = op(x[i])` in place.
    ///
    /// # Errors
    /// When the kernel fails.
    fn unary_assign(&self, op: UnaryOp, x: &mut Self::Storage) -> Result<()>;

    /// `out = op(lhs, rhs)` elementwise, with both operands read through `layout`'s
    /// broadcast strides.
    ///
    /// # Errors
    /// When the kernel fails.
    fn binary(
        &self,
        op: BinaryOp,
        lhs: &Self::Storage,
        rhs: &Self::Storage,
        layout: &Broadcast,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `lhs = op(lhs, rhs)` elementwise in place; `lhs` has `layout`'s full shape.
    ///
    /// # Errors
    /// When the kernel fails.
    fn binary_assign(
        &self,
        op: BinaryOp,
        lhs: &mut Self::Storage,
        rhs: &Self::Storage,
        layout: &Broadcast,
    ) -> Result<()>;

    /// Sums `x`, viewed as `[outer, len, inner]`, over its middle axis into `out` (`[outer, inner]`),
    /// overwriting whatever `out` held.
    ///
    /// # Errors
    /// When the kernel fails.
    fn sum_axis(
        &self,
        x: &Self::Storage,
        outer: usize,
        len: usize,
        inner: usize,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `out = op(x)` along `axis`'s middle dimension.
    ///
    /// # Errors
    /// When the kernel fails.
    fn softmax(
        &self,
        op: SoftmaxOp,
        x: &Self::Storage,
        axis: &SoftmaxAxis,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `out` = the gradient through `op` along `axis`'s middle dimension, from the op's output
    /// `y` and that output's gradient `grad`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn softmax_backward(
        &self,
        op: SoftmaxOp,
        y: &Self::Storage,
        grad: &Self::Storage,
        axis: &SoftmaxAxis,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// Per element: `values[i] = l(x[i], t[i])` and `grad[i] = dl/dx` for the loss `op`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn pointwise_loss(
        &self,
        op: PointwiseLoss,
        x: &Self::Storage,
        t: &Self::Storage,
        values: &mut Self::Storage,
        grad: &mut Self::Storage,
    ) -> Result<()>;

    /// Per row of the `[rows, classes]` input `x` (`rows` is `values`' length): the loss `op`
    /// against that row's label into `values`, and its derivative with respect to the row into
    /// `grad`. `labels` holds `rows` class indices as `f32`s (see
    /// [`Labels`](crate::losses::Labels)); a row whose label is not below `classes` gets NaN.
    ///
    /// # Errors
    /// When the kernel fails.
    fn class_loss(
        &self,
        op: ClassLoss,
        x: &Self::Storage,
        labels: &Self::Storage,
        classes: usize,
        values: &mut Self::Storage,
        grad: &mut Self::Storage,
    ) -> Result<()>;

    /// One fused optimizer update of `param` from `grad`, reading and writing the optimizer's
    /// per-parameter `state` buffers (as many as [`OptimStep::buffers`], each as long as
    /// `param`). When [`OptimStep::device_scalars`] has a rule, the update first advances the
    /// parameter's step `scalars` buffer ([`StepScalars`](crate::ops::optim::StepScalars)) by it and reads them from there,
    /// all in one launch.
    ///
    /// # Errors
    /// When the kernel fails, or `state` or `scalars` does not fit `step`.
    fn optim_step(
        &self,
        step: &OptimStep,
        param: &mut Self::Storage,
        grad: &Self::Storage,
        state: &mut [Self::Storage],
        scalars: Option<&mut Self::Storage>,
    ) -> Result<()>;
}

/// Checks that a buffer has the length an op will index it with: kernels trust their
/// lengths, so a short buffer would be written out of bounds.
pub(crate) fn expect_len(op: &'static str, what: &str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::Backend {
            op,
            message: format!("{what} holds {len} elements, expected {expected}"),
        })
    }
}

/// Checks that `len` elements from `offset` fit a buffer of `capacity`, returning where they
/// end.
pub(crate) fn check_fits(
    op: &'static str,
    len: usize,
    offset: usize,
    capacity: usize,
) -> Result<usize> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(end),
        _ => Err(Error::Backend {
            op,
            message: format!("{len} elements from {offset} do not fit a destination of {capacity}"),
        }),
    }
}
