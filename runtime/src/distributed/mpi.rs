//! [`Mpi`]: the collectives over MPI's world communicator (rsmpi, on the system's MPI library).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::{Threading, Universe};
use mpi::topology::{Communicator, SimpleCommunicator};

use super::Collective;
use crate::error::{Error, Result};

/// The most values one MPI call moves, so counts fit MPI's `int` and the scratch buffer of
/// [`Collective::all_reduce_mean`] stays bounded (64 MiB).
const CHUNK_LEN: usize = 1 << 24;

/// The exit status of a job that a panicking rank ends.
const PANIC_EXIT_CODE: i32 = 101;

/// The processes of an MPI job (`mpirun -n 4 ./train`, or Slurm's `srun`), one rank each; a
/// program started without a launcher is a job of one rank.
///
/// Create it once, at the start of `main`, and keep it until the end: dropping it finalises
/// MPI. Only the thread that created it calls MPI (`MPI_THREAD_FUNNELED`); declnet's own
/// threads never do. Ranks that share a machine share its cores: unless `RAYON_NUM_THREADS`
/// is set (or the thread pool already runs), each rank's CPU kernels use the machine's cores
/// divided by the number of ranks on it, at least one, as `torchrun` sets one OpenMP thread.
///
/// A job of several ranks never hangs on one rank's failure:
/// - a panic on any rank aborts the whole job (`MPI_Abort`, exit status 101) once the panic
///   message is printed;
/// - a rank that drops its `Mpi` (returns from `main`, or with an error) waits for the others
///   to do the same, and aborts the job if they do not within the exit timeout
///   ([`Mpi::set_exit_timeout`], 120 s unless set), because they are stuck in a collective it
///   will never join;
/// - a rank that exits without dropping it (`std::process::exit`, a signal) is noticed by the
///   launcher, which ends the job.
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Where an all-reduce writes its sums (MPI's in-place form is not in rsmpi's safe API).
    scratch: RefCell<Vec<f32>>,
    exit_timeout: Duration,
    /// Dropped last, which finalises MPI.
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("exit_timeout", &self.exit_timeout)
            .finish_non_exhaustive()
    }
}

impl Mpi {
    /// Initialises MPI and joins the job's world communicator. In a job of several ranks,
    /// installs a panic hook that aborts the job after the usual panic message.
    ///
    /// # Errors
    /// [`Error::Distributed`] when MPI was initialised before in this process.
    pub fn init() -> Result<Self> {
        let (universe, _) =
            mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| {
                Error::Distributed {
                    op: "Mpi::init",
                    message: "MPI is already initialised in this process".to_owned(),
                }
            })?;
        let world = universe.world();
        let rank = usize::try_from(world.rank()).unwrap_or_default();
        let size = usize::try_from(world.size()).unwrap_or(1);
        if size > 1 {
            abort_job_on_panic(rank);
            share_cores(&world);
        }
        Ok(Self {
            world,
            rank,
            size,
            scratch: RefCell::new(Vec::new()),
            exit_timeout: Duration::from_mins(2),
            _universe: universe,
        })
    }

    /// How long a rank that is done waits for the others before it aborts the job.
    pub fn set_exit_timeout(&mut self, timeout: Duration) {
        self.exit_timeout = timeout;
    }

    fn root(&self, root: usize) -> Result<mpi::Rank> {
        mpi::Rank::try_from(root)
            .ok()
            .filter(|_| root < self.size)
            .ok_or_else(|| Error::Distributed {
                op: "broadcast",
                message: format!("root rank {root} is not in a job of {} ranks", self.size),
            })
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let mut scratch = self.scratch.borrow_mut();
        let size = self.size as f32;
        for chunk in values.chunks_mut(CHUNK_LEN) {
            if scratch.len() < chunk.len() {
                scratch.resize(chunk.len(), 0.0);
            }
            let sums = &mut scratch[..chunk.len()];
            self.world
                .all_reduce_into(&*chunk, sums, SystemOperation::sum());
            for (value, sum) in chunk.iter_mut().zip(sums.iter()) {
                *value = sum / size;
            }
        }
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        let root = self.world.process_at_rank(self.root(root)?);
        for chunk in values.chunks_mut(CHUNK_LEN) {
            root.broadcast_into(chunk);
        }
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut [u8], root: usize) -> Result<()> {
        let root = self.world.process_at_rank(self.root(root)?);
        for chunk in bytes.chunks_mut(4 * CHUNK_LEN) {
            root.broadcast_into(chunk);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}

impl Drop for Mpi {
    /// Waits (polling a non-blocking barrier) until every rank is done, or aborts the job when
    /// the exit timeout passes first; then the universe finalises MPI.
    fn drop(&mut self) {
        if self.size == 1 {
            return;
        }
        let deadline = Instant::now() + self.exit_timeout;
        let mut barrier = self.world.immediate_barrier();
        loop {
            match barrier.test() {
                Ok(_) => return,
                Err(pending) => barrier = pending,
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "declnet: MPI rank {} is done, but other ranks did not finish within {:?}; \
                     they wait in a collective this rank will not join, so the job is aborted",
                    self.rank, self.exit_timeout
                );
                self.world.abort(1);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Gives this rank its share of the machine's cores, unless the user chose a thread count.
fn share_cores(world: &SimpleCommunicator) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let ranks_here = usize::try_from(world.split_shared(world.rank()).size()).unwrap_or(1);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Fails only when the pool already runs: then its size stands, as the user made it.
    let _ = crate::set_num_threads((cores / ranks_here.max(1)).max(1));
}

/// Makes a panic on this rank abort the whole job once the panic message is printed: the
/// other ranks would otherwise wait for it in their next collective forever.
fn abort_job_on_panic(rank: usize) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        eprintln!("declnet: MPI rank {rank} panicked, so the whole job is aborted");
        SimpleCommunicator::world().abort(PANIC_EXIT_CODE);
    }));
}
