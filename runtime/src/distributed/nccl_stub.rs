//! [`Nccl`] in a build without the `nccl` feature: the type exists, so programs that choose
//! an engine at run time compile without a `cfg`, but [`Nccl::new`] always fails with
//! [`Error::NcclNotCompiled`] and no value of it can exist.

use std::convert::Infallible;

use super::{Collective, NcclVersion};
use crate::backend::Cuda;
use crate::error::{Error, Result};

/// NVIDIA's collectives over the GPUs of a job; this build has no NCCL support (enable the
/// `nccl` feature).
#[derive(Debug)]
pub struct Nccl {
    never: Infallible,
}

impl Nccl {
    /// Always fails: this build has no NCCL support.
    ///
    /// # Errors
    /// Always [`Error::NcclNotCompiled`].
    pub fn new(device: &Cuda, launcher: &(impl Collective + ?Sized)) -> Result<Self> {
        let _ = (device, launcher.rank());
        Err(Error::NcclNotCompiled)
    }

    /// Always fails: this build has no NCCL support.
    ///
    /// # Errors
    /// Always [`Error::NcclNotCompiled`].
    pub fn version() -> Result<NcclVersion> {
        Err(Error::NcclNotCompiled)
    }

    /// Never called: no value of this type exists.
    #[must_use]
    pub fn device(&self) -> &Cuda {
        match self.never {}
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        match self.never {}
    }
    fn world_size(&self) -> usize {
        match self.never {}
    }
    fn all_reduce_mean(&self, _: &mut [f32]) -> Result<()> {
        match self.never {}
    }
    fn broadcast(&self, _: &mut [f32], _: usize) -> Result<()> {
        match self.never {}
    }
    fn broadcast_bytes(&self, _: &mut [u8], _: usize) -> Result<()> {
        match self.never {}
    }
    fn barrier(&self) -> Result<()> {
        match self.never {}
    }
}
