//! `--data-parallel`: the engine an example trains with, chosen on the command line.

use declnet::distributed::{Collective, Local, Mpi, Nccl};
use declnet::{Cuda, Error, Result};

/// [`Mpi`] (this process is one rank of an `mpirun` job) with `--data-parallel`, else
/// [`Local`]. Keep it until the end of `main`: dropping it finalises MPI.
///
/// # Errors
/// When MPI cannot start, or this build lacks the `mpi` feature.
pub fn ranks_from_args() -> Result<Box<dyn Collective>> {
    if data_parallel() {
        Ok(Box::new(Mpi::init()?))
    } else {
        Ok(Box::new(Local))
    }
}

/// With `--data-parallel` on a GPU, [`Nccl`] on `device` over the ranks `launcher` started, so
/// gradients are averaged in GPU memory; `None` without the switch, or in a build without the
/// `nccl` feature (`launcher` then averages them through host memory).
///
/// # Errors
/// When NCCL cannot start on some rank.
pub fn nccl_from_args(device: &Cuda, launcher: &dyn Collective) -> Result<Option<Nccl>> {
    if !data_parallel() {
        return Ok(None);
    }
    match Nccl::new(device, launcher) {
        Ok(nccl) => Ok(Some(nccl)),
        Err(Error::NcclNotCompiled) => Ok(None),
        Err(error) => Err(error),
    }
}

fn data_parallel() -> bool {
    std::env::args().any(|arg| arg == "--data-parallel")
}
