//! Keeps the pool's threads looking for work between a training step's parallel kernels.
//!
//! A rayon thread that finds no work sleeps after a few microseconds, and waking it takes
//! 15-25 us on a virtual machine, whose idle core halts: about as long as a small kernel's
//! parts run, so a kernel in two parts was no faster than in one (the tutorial's Adam update,
//! 47 us in one part, took 62 in three). So when the thread that started the pool (the
//! program's main thread, see [`set_caller`]) hands work to it, the pool's other threads run
//! [`look_for_work`] until its kernels have left them idle for [`WINDOW`]: they take a job as
//! soon as it is queued, and yield their core to any other runnable thread meanwhile (the same
//! update: 33 us).
//! Other threads' kernels leave the pool as rayon runs it.
//!
//! While they look, they beat a heartbeat. When another program keeps their cores busy, the
//! yield hands each core to it for a whole time slice, so the heartbeat goes stale; work
//! handed over then would wait for the slice to end, and the caller runs it itself instead
//! (see [`hand_off`]). A looking thread whose yield took a time slice sleeps for
//! [`BACK_OFF`], lest it take turns with the caller on one core (the scheduler may put both
//! there, beside a busy program on the other); its heartbeat keeps the caller alone
//! meanwhile. It sleeps rather than stops: starting the threads again would allocate.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long the threads keep looking after the caller's last parallel kernel: far longer than
/// the gaps between a step's parallel kernels, so that they never stop (and restarting them,
/// which allocates, never happens) in a training loop, and short enough to go unnoticed after
/// the last step.
const WINDOW: Duration = Duration::from_millis(10);

/// The pool index of the thread whose kernels keep the pool warm; `usize::MAX` for none.
static CALLER: AtomicUsize = AtomicUsize::new(usize::MAX);

/// When the caller last started or finished a parallel kernel, in nanoseconds since [`START`].
static LAST_KERNEL: AtomicU64 = AtomicU64::new(0);

/// The parallel kernels the caller is running (a kernel's nested parts count too): while
/// there are any, the looking threads keep looking, however long they take.
static CALLER_KERNELS: AtomicUsize = AtomicUsize::new(0);

/// The pool's threads, other than the caller's, that run (or are about to run)
/// [`look_for_work`].
static LOOKING: AtomicUsize = AtomicUsize::new(0);

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When a looking thread last looked for work, in nanoseconds since [`START`]; on a cache
/// line of its own, as the looking threads write it all the time.
static HEARTBEAT: Heartbeat = Heartbeat(AtomicU64::new(0));

#[repr(align(64))]
struct Heartbeat(AtomicU64);

/// A heartbeat older than this says that no looking thread is running: a few times the
/// loop's round, far below a time slice.
const STALE: Duration = Duration::from_micros(50);

/// A yield that kept a looking thread off its core this long means another thread wants
/// that core for a time slice (0.75 ms or more): shorter gaps, of 0.1-0.4 ms now and then on
/// an idle virtual machine, are the host's.
const TAKEN: Duration = Duration::from_micros(500);

/// How long a looking thread that lost its core for a time slice keeps off it; then it looks
/// again, and keeps off again if the core is still taken.
const BACK_OFF: Duration = Duration::from_millis(20);

/// Makes the calling thread, one of the pool's, the one whose kernels keep the pool warm.
pub(crate) fn set_caller() {
    if let Some(index) = rayon::current_thread_index() {
        CALLER.store(index, Ordering::Relaxed);
    }
}

fn nanos_since_start() -> u64 {
    u64::try_from(START.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn on_caller() -> bool {
    let caller = CALLER.load(Ordering::Relaxed);
    caller != usize::MAX && rayon::current_thread_index() == Some(caller)
}

/// A parallel kernel the caller runs, from [`Kernel::start`] until it drops; nothing on other
/// threads.
pub(crate) struct Kernel {
    on_caller: bool,
}

impl Kernel {
    /// Marks the start of a kernel that may hand work to the pool (before [`hand_off`]).
    pub(crate) fn start() -> Self {
        let on_caller = on_caller();
        if on_caller {
            CALLER_KERNELS.fetch_add(1, Ordering::AcqRel);
        }
        Self { on_caller }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if self.on_caller {
            LAST_KERNEL.store(nanos_since_start(), Ordering::Relaxed);
            CALLER_KERNELS.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Called when a kernel is about to hand work to the pool; says whether to. From the
/// caller's thread, keeps the pool's other threads looking for work for the next [`WINDOW`]
/// (starting them if they stopped), and answers no when they are looking but none has for
/// [`STALE`]: another program holds their cores, and the caller had better run the work
/// itself than wait for their time slices (the MLP bench step beside a busy process: 8.8-10
/// ms, its one-thread time, against 11-15 ms when handed over). Other threads always hand
/// over.
pub(crate) fn hand_off() -> bool {
    if !on_caller() {
        return true;
    }
    let caller = CALLER.load(Ordering::Relaxed);
    let now = nanos_since_start();
    LAST_KERNEL.store(now, Ordering::Relaxed);
    if LOOKING.load(Ordering::Acquire) > 0 {
        return now.saturating_sub(HEARTBEAT.0.load(Ordering::Relaxed)) < nanos(STALE);
    }
    let others = rayon::current_num_threads() - 1;
    if LOOKING
        .compare_exchange(0, others, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        // The caller's own copy runs whenever it next waits for the pool, and does nothing.
        rayon::spawn_broadcast(move |context| {
            if context.index() != caller {
                look_for_work();
                LOOKING.fetch_sub(1, Ordering::AcqRel);
            }
        });
    }
    true
}

/// Says that this thread is running: called as it looks for work, and as it finishes a part
/// handed to it, so that the caller, which goes on as soon as that part is done, does not
/// find the heartbeat of before the part. Does nothing on the caller's thread.
pub(crate) fn beat() {
    if rayon::current_thread_index() != Some(CALLER.load(Ordering::Relaxed)) {
        HEARTBEAT.0.store(nanos_since_start(), Ordering::Relaxed);
    }
}

/// Runs the pool's jobs as they are queued, until the caller has run no parallel kernel for
/// [`WINDOW`] (one that it runs for longer, as a map over 100 MiB does, keeps this thread
/// looking); sleeps for [`BACK_OFF`] after a yield that gave this thread's core away for
/// longer than [`TAKEN`].
fn look_for_work() {
    loop {
        beat();
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            continue;
        }
        let now = nanos_since_start();
        let idle = now.saturating_sub(LAST_KERNEL.load(Ordering::Relaxed)) > nanos(WINDOW);
        if idle && CALLER_KERNELS.load(Ordering::Acquire) == 0 {
            return;
        }
        std::thread::yield_now();
        if nanos_since_start().saturating_sub(now) > nanos(TAKEN) {
            std::thread::sleep(BACK_OFF);
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernels handed to a warm pool still run, its threads look as long as a kernel runs and
    /// stop once the window has passed after it (rather than spinning for ever), and work goes
    /// only to threads that run.
    #[test]
    fn the_threads_stop_looking_after_the_window() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .use_current_thread()
            .build()
            .unwrap();
        set_caller();
        assert_eq!(
            Some(CALLER.load(Ordering::Relaxed)),
            rayon::current_thread_index()
        );
        assert!(hand_off(), "the pool's threads were not looking yet");
        let parts = pool.install(|| rayon::join(|| 1, || 2));
        assert_eq!(parts, (1, 2));
        // While the caller runs a kernel, however long, they keep looking.
        let kernel = Kernel::start();
        std::thread::sleep(3 * WINDOW);
        assert!(
            LOOKING.load(Ordering::Acquire) > 0,
            "the threads stopped looking during a kernel"
        );
        drop(kernel);
        let deadline = Instant::now() + Duration::from_secs(30);
        while LOOKING.load(Ordering::Acquire) != 0 {
            assert!(
                Instant::now() < deadline,
                "the pool's threads are still looking"
            );
            std::thread::sleep(WINDOW);
        }
        // A thread meant to be looking, whose heartbeat is stale (another program holds its
        // core): the caller keeps the work, and its own beats do not count; a fresh one:
        // the work is handed over.
        LOOKING.store(1, Ordering::Release);
        HEARTBEAT.0.store(0, Ordering::Relaxed);
        beat();
        assert!(!hand_off(), "work handed to a thread that is not running");
        HEARTBEAT.0.store(nanos_since_start(), Ordering::Relaxed);
        assert!(hand_off(), "work kept from a thread that is looking for it");
        LOOKING.store(0, Ordering::Release);
        CALLER.store(usize::MAX, Ordering::Relaxed);
    }
}
