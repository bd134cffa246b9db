//! [`Mpi`] in a build without the `mpi` feature: the type exists, so programs with a
//! `--data-parallel` switch compile without a `cfg`, but [`Mpi::init`] always fails with
//! [`Error::MpiNotCompiled`] and no value of it can exist.

use std::convert::Infallible;
use std::time::Duration;

use super::Collective;
use crate::error::{Error, Result};

/// The processes of an MPI job; this build has no MPI support (enable the `mpi` feature).
#[derive(Debug)]
pub struct Mpi {
    never: Infallible,
}

impl Mpi {
    /// Always fails: this build has no MPI support.
    ///
    /// # Errors
    /// Always [`Error::MpiNotCompiled`].
    pub fn init() -> Result<Self> {
        Err(Error::MpiNotCompiled)
    }

    /// Never called: no value of this type exists.
    pub fn set_exit_timeout(&mut self, timeout: Duration) {
        let _ = timeout;
        match self.never {}
    }
}

impl Collective for Mpi {
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
