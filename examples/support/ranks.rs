//! `--data-parallel`: the engine an example trains with, chosen on the command line.

use declnet::Result;
use declnet::distributed::{Collective, Local, Mpi};

/// [`Mpi`] (this process is one rank of an `mpirun` job) with `--data-parallel`, else
/// [`Local`]. Keep it until the end of `main`: dropping it finalises MPI.
///
/// # Errors
/// When MPI cannot start, or this build lacks the `mpi` feature.
pub fn ranks_from_args() -> Result<Box<dyn Collective>> {
    if std::env::args().any(|arg| arg == "--data-parallel") {
        Ok(Box::new(Mpi::init()?))
    } else {
        Ok(Box::new(Local))
    }
}
