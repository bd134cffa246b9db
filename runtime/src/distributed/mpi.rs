//! [`Mpi`]: the collectives over MPI's world communicator (rsmpi, on the system's MPI
//! library), run by a communication thread so that all-reduces overlap computation.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Threading;
use mpi::topology::{Communicator, SimpleCommunicator};

use super::{Collective, Pending, PendingKind, Reduced, engine_stopped};
use crate::error::{Error, Result};

/// The most values one MPI call moves, so counts fit MPI's `int` and the sums buffer of an
/// all-reduce stays bounded (64 MiB).
const CHUNK_LEN: usize = 1 << 24;

/// The exit status of a job that a panicking rank ends.
const PANIC_EXIT_CODE: i32 = 101;

/// The processes of an MPI job (`mpirun -n 4 ./train`, or Slurm's `srun`), one rank each; a
/// program started without a launcher is a job of one rank.
///
/// Create it once, at the start of `main`, and keep it until the end: dropping it finalises
/// MPI. Every MPI call runs on one communication thread that `init` starts (it initialises
/// MPI with `MPI_THREAD_FUNNELED`), in the order the calls were made; so
/// [`Collective::start_all_reduce_mean`] returns at once and the all-reduce proceeds while
/// the caller computes. Ranks that share a machine share its cores: unless
/// `RAYON_NUM_THREADS` is set (or the thread pool already runs), each rank's CPU kernels use
/// the machine's cores divided by the number of ranks on it, at least one, as `torchrun`
/// sets one OpenMP thread.
///
/// A job of several ranks never hangs on one rank's failure:
/// - a panic on any rank ends its process (exit status 101) once the panic message is
///   printed, and the launcher then ends the job;
/// - a rank that drops its `Mpi` (returns from `main`, or with an error) waits for the others
///   to do the same, and aborts the job if they do not within the exit timeout
///   ([`Mpi::set_exit_timeout`], 2 minutes unless set), because they are stuck in a
///   collective it will never join;
/// - a rank that exits without dropping it (`std::process::exit`, a signal) is noticed by the
///   launcher, which ends the job.
#[derive(Debug)]
pub struct Mpi {
    rank: usize,
    size: usize,
    local_rank: usize,
    jobs: Sender<Job>,
    engine: Option<JoinHandle<()>>,
    exit_timeout: Duration,
}

/// What the communication thread is asked to do; each job answers on its own channel.
enum Job {
    AllReduceMean(Vec<f32>, Sender<Result<Reduced>>),
    Broadcast(Vec<f32>, mpi::Rank, Sender<Vec<f32>>),
    BroadcastBytes(Vec<u8>, mpi::Rank, Sender<Vec<u8>>),
    Barrier(Sender<()>),
    /// Wait for every rank to finish, at most this long, then finalise.
    Finish(Duration),
}

/// What the communication thread reports once MPI is initialised.
struct Joined {
    rank: usize,
    size: usize,
    ranks_on_this_machine: usize,
    local_rank: usize,
}

impl Mpi {
    /// Starts the communication thread, which initialises MPI and joins the job's world
    /// communicator. In a job of several ranks, installs a panic hook that ends the process
    /// after the usual panic message.
    ///
    /// # Errors
    /// [`Error::Distributed`] when MPI was initialised before in this process.
    pub fn init() -> Result<Self> {
        let (jobs, queue) = channel();
        let (report, joined) = channel();
        let engine = std::thread::Builder::new()
            .name("declnet-mpi".to_owned())
            .spawn(move || run_engine(&report, &queue))
            .map_err(|error| Error::Distributed {
                op: "Mpi::init",
                message: format!("cannot start the communication thread: {error}"),
            })?;
        let joined = joined.recv().map_err(|_| engine_stopped())??;
        if joined.size > 1 {
            end_process_on_panic(joined.rank);
            share_cores(joined.ranks_on_this_machine);
        }
        Ok(Self {
            rank: joined.rank,
            size: joined.size,
            local_rank: joined.local_rank,
            jobs,
            engine: Some(engine),
            exit_timeout: Duration::from_mins(2),
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

    /// Queues `job` made with a fresh reply channel, and waits for the reply.
    fn ask<T>(&self, job: impl FnOnce(Sender<T>) -> Job) -> Result<T> {
        let (reply, answer) = channel();
        self.jobs.send(job(reply)).map_err(|_| engine_stopped())?;
        answer.recv().map_err(|_| engine_stopped())
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    /// Its place among the job's ranks that share its machine's memory.
    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let pending = self.start_all_reduce_mean(values.to_vec())?;
        values.copy_from_slice(&self.wait(pending)?.values);
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        let root = self.root(root)?;
        let received = self.ask(|reply| Job::Broadcast(values.to_vec(), root, reply))?;
        values.copy_from_slice(&received);
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut [u8], root: usize) -> Result<()> {
        let root = self.root(root)?;
        let received = self.ask(|reply| Job::BroadcastBytes(bytes.to_vec(), root, reply))?;
        bytes.copy_from_slice(&received);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.ask(Job::Barrier)
    }

    fn start_all_reduce_mean(&self, values: Vec<f32>) -> Result<Pending> {
        if self.size == 1 {
            return Ok(Pending::done(values, Instant::now()));
        }
        let (reply, answer) = channel();
        self.jobs
            .send(Job::AllReduceMean(values, reply))
            .map_err(|_| engine_stopped())?;
        Ok(Pending(PendingKind::Engine(answer)))
    }
}

impl Drop for Mpi {
    /// Lets the communication thread wait for the other ranks (or abort the job after the
    /// exit timeout) and finalise MPI.
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::Finish(self.exit_timeout));
        if let Some(engine) = self.engine.take() {
            let _ = engine.join();
        }
    }
}

/// The communication thread: initialises MPI, reports, runs jobs in order until `Finish`
/// (or until its `Mpi` is gone), then finalises.
fn run_engine(report: &Sender<Result<Joined>>, queue: &Receiver<Job>) {
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
        let _ = report.send(Err(Error::Distributed {
            op: "Mpi::init",
            message: "MPI is already initialised in this process".to_owned(),
        }));
        return;
    };
    let world = universe.world();
    let rank = world.rank();
    let size = world.size();
    let machine = world.split_shared(rank);
    let joined = Joined {
        rank: usize::try_from(rank).unwrap_or_default(),
        size: usize::try_from(size).unwrap_or(1),
        ranks_on_this_machine: usize::try_from(machine.size()).unwrap_or(1),
        local_rank: usize::try_from(machine.rank()).unwrap_or_default(),
    };
    if report.send(Ok(joined)).is_err() {
        return;
    }
    let mut sums = Vec::new();
    while let Ok(job) = queue.recv() {
        match job {
            Job::AllReduceMean(mut values, reply) => {
                let started = Instant::now();
                all_reduce_mean(&world, &mut values, &mut sums);
                let _ = reply.send(Ok(Reduced {
                    values,
                    started,
                    finished: Instant::now(),
                }));
            }
            Job::Broadcast(mut values, root, reply) => {
                let root = world.process_at_rank(root);
                for chunk in values.chunks_mut(CHUNK_LEN) {
                    root.broadcast_into(chunk);
                }
                let _ = reply.send(values);
            }
            Job::BroadcastBytes(mut bytes, root, reply) => {
                let root = world.process_at_rank(root);
                for chunk in bytes.chunks_mut(4 * CHUNK_LEN) {
                    root.broadcast_into(chunk);
                }
                let _ = reply.send(bytes);
            }
            Job::Barrier(reply) => {
                world.barrier();
                let _ = reply.send(());
            }
            Job::Finish(timeout) => {
                wait_for_every_rank(&world, timeout);
                break;
            }
        }
    }
    // `universe` drops here, which finalises MPI.
}

/// Replaces `values` by their mean over the ranks, summing into `sums` chunk by chunk.
fn all_reduce_mean(world: &SimpleCommunicator, values: &mut [f32], sums: &mut Vec<f32>) {
    let size = world.size() as f32;
    for chunk in values.chunks_mut(CHUNK_LEN) {
        if sums.len() < chunk.len() {
            sums.resize(chunk.len(), 0.0);
        }
        let sums = &mut sums[..chunk.len()];
        world.all_reduce_into(&*chunk, sums, SystemOperation::sum());
        for (value, sum) in chunk.iter_mut().zip(sums.iter()) {
            *value = sum / size;
        }
    }
}

/// Polls a non-blocking barrier until every rank is done, or aborts the job once `timeout`
/// passes: the others then wait in a collective this rank will never join.
fn wait_for_every_rank(world: &SimpleCommunicator, timeout: Duration) {
    if world.size() == 1 {
        return;
    }
    let deadline = Instant::now() + timeout;
    let mut barrier = world.immediate_barrier();
    loop {
        match barrier.test() {
            Ok(_) => return,
            Err(pending) => barrier = pending,
        }
        if Instant::now() >= deadline {
            eprintln!(
                "declnet: MPI rank {} is done, but other ranks did not finish within \
                 {timeout:?}; they wait in a collective this rank will not join, so the job \
                 is aborted",
                world.rank()
            );
            world.abort(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Gives this rank its share of the machine's cores, unless the user chose a thread count.
fn share_cores(ranks_on_this_machine: usize) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Fails only when the pool already runs: then its size stands, as the user made it.
    let _ = crate::set_num_threads((cores / ranks_on_this_machine.max(1)).max(1));
}

/// Makes a panic on this rank end its process once the panic message is printed, so that the
/// launcher ends the job: the other ranks would otherwise wait for this one in their next
/// collective forever. (The process exits without finalising MPI, which the launcher takes
/// as a failed rank.)
fn end_process_on_panic(rank: usize) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        eprintln!("declnet: MPI rank {rank} panicked, so the whole job is aborted");
        std::process::exit(PANIC_EXIT_CODE);
    }));
}
