//! Data-parallel training across processes: every rank holds the whole network, trains on its
//! own share of each batch, and averages the gradients with the others before the optimizer
//! steps, like PyTorch's `DistributedDataParallel`.
//!
//! A [`Collective`] is the engine that moves the numbers: [`Local`] for a single process (every
//! operation a no-op) and [`Mpi`] for processes started by `mpirun` or Slurm's `srun` (the `mpi`
//! feature). [`DataParallel`] wraps a network: it gives every rank rank 0's weights, checks
//! that every rank declared the same network, and averages gradients on
//! [`DataParallel::sync_gradients`].
//!
//! ```
//! use declnet_runtime::distributed::{DataParallel, Local};
//! use declnet_runtime::layers::Linear;
//! use declnet_runtime::rng::seeded;
//! use declnet_runtime::{Cpu, Tensor};
//!
//! let net = Linear::<Cpu>::new(4, 2, true, &Cpu, &mut seeded(0));
//! let mut net = DataParallel::new(net, Local)?; // one rank: nothing to exchange
//! let x = Tensor::ones([3, 4], &Cpu);
//! let y = net.forward(&x)?;
//! net.backward(&x, &Tensor::ones([3, 2], &Cpu), false)?;
//! net.sync_gradients()?; // the gradients' mean over the ranks
//! assert!(net.is_main());
//! # Ok::<(), declnet_runtime::Error>(())
//! ```

mod data_parallel;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(not(feature = "mpi"))]
#[path = "mpi_stub.rs"]
mod mpi;

pub use data_parallel::DataParallel;
pub use mpi::Mpi;

use crate::error::Result;

/// The operations data-parallel training needs from a communication engine. Every rank must
/// call the same operations in the same order with buffers of the same length; that is the
/// caller's contract, as with MPI and NCCL.
pub trait Collective {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// Replaces `values` by their element-wise mean over the ranks.
    ///
    /// # Errors
    /// When the engine fails.
    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()>;

    /// Overwrites `values` on every rank with those of rank `root`.
    ///
    /// # Errors
    /// When the engine fails.
    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()>;

    /// Overwrites `bytes` on every rank with those of rank `root`.
    ///
    /// # Errors
    /// When the engine fails.
    fn broadcast_bytes(&self, bytes: &mut [u8], root: usize) -> Result<()>;

    /// Returns once every rank has called it.
    ///
    /// # Errors
    /// When the engine fails.
    fn barrier(&self) -> Result<()>;
}

impl<C: Collective + ?Sized> Collective for &C {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world_size(&self) -> usize {
        (**self).world_size()
    }
    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()> {
        (**self).all_reduce_mean(values)
    }
    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        (**self).broadcast(values, root)
    }
    fn broadcast_bytes(&self, bytes: &mut [u8], root: usize) -> Result<()> {
        (**self).broadcast_bytes(bytes, root)
    }
    fn barrier(&self) -> Result<()> {
        (**self).barrier()
    }
}

/// One process alone: rank 0 of 1, every operation leaves its buffer as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_mean(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: &mut [f32], _: usize) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _: &mut [u8], _: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
