//! [`Cuda`] in a build without the `cuda` feature: the type exists, so code naming it compiles
//! without a `cfg`, but [`Cuda::new`] always fails with [`Error::CudaNotCompiled`] and no value
//! of it can exist.

use std::convert::Infallible;

use super::Memory;
use crate::error::{Error, Result};
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

    /// For the kernel traits' stub implementations beside each op family: no value of this
    /// type exists, so none of them can be called.
    pub(crate) fn unreachable<T>(&self) -> T {
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

impl Memory for Cuda {
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
