//! [`Cuda`] in a build without the `cuda` feature: the type exists, so code naming it compiles
//! without a `cfg`, but [`Cuda::new`] always fails with [`Error::CudaNotCompiled`] and no value
//! of it can exist.

use std::convert::Infallible;

use super::Backend;
use crate::error::{Error, Result};
use crate::ops::binary::{BinaryOp, Broadcast};
use crate::ops::loss::{ClassLoss, PointwiseLoss};
use crate::ops::matmul::Gemm;
use crate::ops::optim::OptimStep;
use crate::ops::softmax::{SoftmaxAxis, SoftmaxOp};
use crate::ops::unary::UnaryOp;
use crate::step_graph::CaptureFailure;

/// An NVIDIA GPU; this build has no CUDA support (enable the `cuda` feature).
#[derive(Debug, Clone, PartialEq)]
pub struct Cuda {
    never: Infallible,
}

impl Cuda {
    /// Always fails: this build has no CUDA support.
    ///
    /// # Errors
    /// Always [`Error::CudaNotCompiled`].
    pub fn new(ordinal: usize) -> Result<Self> {
        let _ = ordinal;
        Err(Error::CudaNotCompiled)
    }

    /// The device's ordinal.
    #[must_use]
    pub fn ordinal(&self) -> usize {
        match self.never {}
    }

    /// Waits until the GPU has finished every op issued so far.
    ///
    /// # Errors
    /// Never: no value of this type exists.
    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }

    pub(crate) fn trace_step<S>(
        &self,
        _: &mut S,
        _: fn(&mut S) -> Result<()>,
    ) -> Result<Vec<String>> {
        match self.never {}
    }

    pub(crate) fn capture_traced<S>(
        &self,
        _: &mut S,
        _: fn(&mut S) -> Result<()>,
        _: &[String],
    ) -> Result<CapturedGraph, CaptureFailure> {
        match self.never {}
    }
}

/// A captured step; none can exist without the `cuda` feature.
pub(crate) struct CapturedGraph {
    never: Infallible,
}

impl CapturedGraph {
    pub(crate) fn replay(&self) -> Result<()> {
        match self.never {}
    }
}

impl Backend for Cuda {
    type Storage = Infallible;

    fn name(&self) -> String {
        match self.never {}
    }

    fn zeros(&self, _: usize) -> Result<Infallible> {
        match self.never {}
    }

    fn upload(&self, _: &[f32]) -> Result<Infallible> {
        match self.never {}
    }

    fn upload_into_at(&self, _: &[f32], _: &mut Infallible, _: usize) -> Result<()> {
        match self.never {}
    }

    fn download(&self, _: &Infallible) -> Result<Vec<f32>> {
        match self.never {}
    }

    fn copy(&self, _: &Infallible) -> Result<Infallible> {
        match self.never {}
    }

    fn copy_into(&self, _: &Infallible, _: &mut Infallible) -> Result<()> {
        match self.never {}
    }

    fn fill(&self, _: &mut Infallible, _: f32) -> Result<()> {
        match self.never {}
    }

    fn gemm(&self, _: &Gemm, _: &Infallible, _: &Infallible, _: &mut Infallible) -> Result<()> {
        match self.never {}
    }

    fn transpose(&self, _: &Infallible, _: usize, _: usize, _: &mut Infallible) -> Result<()> {
        match self.never {}
    }

    fn unary(&self, _: UnaryOp, _: &Infallible, _: &mut Infallible) -> Result<()> {
        match self.never {}
    }

    fn unary_assign(&self, _: UnaryOp, _: &mut Infallible) -> Result<()> {
        match self.never {}
    }

    fn binary(
        &self,
        _: BinaryOp,
        _: &Infallible,
        _: &Infallible,
        _: &Broadcast,
        _: &mut Infallible,
    ) -> Result<()> {
        match self.never {}
    }

    fn binary_assign(
        &self,
        _: BinaryOp,
        _: &mut Infallible,
        _: &Infallible,
        _: &Broadcast,
    ) -> Result<()> {
        match self.never {}
    }

    fn sum_axis(
        &self,
        _: &Infallible,
        _: usize,
        _: usize,
        _: usize,
        _: &mut Infallible,
    ) -> Result<()> {
        match self.never {}
    }

    fn softmax(
        &self,
        _: SoftmaxOp,
        _: &Infallible,
        _: &SoftmaxAxis,
        _: &mut Infallible,
    ) -> Result<()> {
        match self.never {}
    }

    fn softmax_backward(
        &self,
        _: SoftmaxOp,
        _: &Infallible,
        _: &Infallible,
        _: &SoftmaxAxis,
        _: &mut Infallible,
    ) -> Result<()> {
        match self.never {}
    }

    fn pointwise_loss(
        &self,
        _: PointwiseLoss,
        _: &Infallible,
        _: &Infallible,
        _: &mut Infallible,
        _: &mut Infallible,
    ) -> Result<()> {
        match self.never {}
    }

    fn class_loss(
        &self,
        _: ClassLoss,
        _: &Infallible,
        _: &Infallible,
        _: usize,
        _: &mut Infallible,
        _: &mut Infallible,
    ) -> Result<()> {
        match self.never {}
    }

    fn optim_step(
        &self,
        _: &OptimStep,
        _: &mut Infallible,
        _: &Infallible,
        _: &mut [Infallible],
        _: Option<&mut Infallible>,
    ) -> Result<()> {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_says_how_to_enable_cuda() {
        let error = Cuda::new(0).unwrap_err();
        assert_eq!(error, Error::CudaNotCompiled);
        assert!(error.to_string().contains("--features cuda"), "{error}");
    }
}
