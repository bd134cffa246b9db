//! Data-parallel training across processes: every rank holds the whole network, trains on its
//! own share of each batch, and averages the gradients with the others before the optimizer
//! steps, like PyTorch's `DistributedDataParallel`.
//!
//! A [`Collective`] is the engine that moves the numbers: [`Local`] for a single process (every
//! operation a no-op), [`Mpi`] for processes started by `mpirun` or Slurm's `srun` (the `mpi`
//! feature), and [`Nccl`] for one process per GPU, averaging gradients in GPU memory (the
//! `nccl` feature). [`DataParallel`] wraps a network: it gives every rank rank 0's weights, checks
//! that every rank declared the same network, and averages gradients, after the backward pass
//! ([`DataParallel::sync_gradients`]) or bucket by bucket while it runs
//! ([`DataParallel::backward_synced`] with a generated network's `backward_params_notify`).
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

mod buckets;
mod data_parallel;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(not(feature = "mpi"))]
#[path = "mpi_stub.rs"]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
#[cfg(not(feature = "nccl"))]
#[path = "nccl_stub.rs"]
mod nccl;
mod optimizer_state;

pub use buckets::{BUCKET_BYTES, FIRST_BUCKET_BYTES, SyncTiming};
pub use data_parallel::DataParallel;
pub use mpi::Mpi;
pub use nccl::Nccl;

use std::any::Any;
use std::time::Instant;

use crate::error::{Error, Result};

/// The operations data-parallel training needs from a communication engine. Every rank must
/// call the same operations in the same order with buffers of the same length; that is the
/// caller's contract, as with MPI and NCCL.
pub trait Collective {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// This process's place among the ranks on its machine, from 0, like PyTorch's
    /// `LOCAL_RANK`: which of the machine's GPUs it should take. 0 unless the engine knows.
    fn local_rank(&self) -> usize {
        0
    }

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

    /// Starts replacing `values` by their mean over the ranks and returns without waiting
    /// where the engine can (a communication thread); [`Collective::wait`] hands them back.
    /// The default averages at once.
    ///
    /// # Errors
    /// When the engine fails.
    fn start_all_reduce_mean(&self, mut values: Vec<f32>) -> Result<Pending> {
        let started = Instant::now();
        self.all_reduce_mean(&mut values)?;
        Ok(Pending::done(values, started))
    }

    /// Waits for a [`Collective::start_all_reduce_mean`] and returns the averaged values.
    ///
    /// # Errors
    /// When the engine fails.
    fn wait(&self, pending: Pending) -> Result<Reduced> {
        pending.wait()
    }

    /// The engine's way of averaging buffers where they live, if it has one: [`Nccl`]'s
    /// averages GPU buffers in GPU memory. [`DataParallel`] then averages gradients with it
    /// instead of through host memory. `None` unless the engine says otherwise.
    fn in_place(&self) -> Option<&dyn InPlaceMean> {
        None
    }
}

/// Averaging in the memory the values live in, without a copy through the host.
pub trait InPlaceMean {
    /// Replaces each of `buffers` by its element-wise mean over the ranks, in place, as one
    /// group of calls. Each buffer is a backend's storage (a tensor's; [`Nccl`] takes
    /// [`Cuda`](crate::Cuda)'s). Every rank passes buffers of the same lengths in the same
    /// order. The work may still be running on the device when this returns; later work on
    /// the same device runs after it.
    ///
    /// # Errors
    /// When a buffer is of a kind or on a device the engine cannot use, or the engine fails.
    fn all_reduce_mean_in_place(&self, buffers: &mut [&mut dyn Any]) -> Result<()>;

    /// Overwrites each of `buffers` on every rank with rank `root`'s, in place, as one group;
    /// as [`InPlaceMean::all_reduce_mean_in_place`] otherwise.
    ///
    /// # Errors
    /// As [`InPlaceMean::all_reduce_mean_in_place`].
    fn broadcast_in_place(&self, buffers: &mut [&mut dyn Any], root: usize) -> Result<()>;

    /// Whether the engine's device is recording a CUDA graph now
    /// ([`StepGraph`](crate::StepGraph)): its work is then recorded to be replayed, and
    /// nothing may pass through host memory.
    fn capturing(&self) -> bool {
        false
    }
}

/// An NCCL version, as [`Nccl::version`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NcclVersion {
    /// The major version.
    pub major: u32,
    /// The minor version.
    pub minor: u32,
    /// The patch level.
    pub patch: u32,
}

impl std::fmt::Display for NcclVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// An all-reduce that [`Collective::start_all_reduce_mean`] started.
#[derive(Debug)]
pub struct Pending(PendingKind);

#[derive(Debug)]
enum PendingKind {
    Done(Reduced),
    #[cfg_attr(
        not(feature = "mpi"),
        allow(dead_code, reason = "made by the MPI engine")
    )]
    Engine(std::sync::mpsc::Receiver<Result<Reduced>>),
}

impl Pending {
    /// An all-reduce that already finished.
    #[must_use]
    pub fn done(values: Vec<f32>, started: Instant) -> Self {
        Self(PendingKind::Done(Reduced {
            values,
            started,
            finished: Instant::now(),
        }))
    }

    fn wait(self) -> Result<Reduced> {
        match self.0 {
            PendingKind::Done(reduced) => Ok(reduced),
            PendingKind::Engine(reply) => reply.recv().map_err(|_| engine_stopped())?,
        }
    }
}

/// The averaged values of an all-reduce, and when the engine worked on it.
#[derive(Debug)]
pub struct Reduced {
    /// The mean over the ranks.
    pub values: Vec<f32>,
    /// When the engine started it.
    pub started: Instant,
    /// When the engine finished it.
    pub finished: Instant,
}

/// The error of a collective whose engine is gone.
fn engine_stopped() -> Error {
    Error::Distributed {
        op: "collective",
        message: "the communication thread stopped".to_owned(),
    }
}

impl<C: Collective + ?Sized> Collective for &C {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world_size(&self) -> usize {
        (**self).world_size()
    }
    fn local_rank(&self) -> usize {
        (**self).local_rank()
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
    fn start_all_reduce_mean(&self, values: Vec<f32>) -> Result<Pending> {
        (**self).start_all_reduce_mean(values)
    }
    fn wait(&self, pending: Pending) -> Result<Reduced> {
        (**self).wait(pending)
    }
    fn in_place(&self) -> Option<&dyn InPlaceMean> {
        (**self).in_place()
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
