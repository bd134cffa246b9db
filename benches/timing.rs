//! The timer the benchmarks share: the median over samples, each timing a batch of calls.

use std::time::{Duration, Instant};

/// The median time of one call, over `samples` runs of `run_calls(calls)`, which makes `calls`
/// calls (and, for a GPU, waits for them to finish); one unmeasured run warms up first.
pub fn median_time(samples: usize, calls: usize, mut run_calls: impl FnMut(usize)) -> Duration {
    run_calls(calls);
    let calls_u32 = u32::try_from(calls).expect("a sample of fewer than 2^32 calls");
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            run_calls(calls);
            start.elapsed() / calls_u32
        })
        .collect();
    times.sort();
    times[samples / 2]
}

/// The median time of one call of `f`, over `samples` runs of `calls` calls each.
#[allow(
    dead_code,
    reason = "the GPU benchmark times batches that end with a sync instead"
)]
pub fn median_call_time(samples: usize, calls: usize, mut f: impl FnMut()) -> Duration {
    median_time(samples, calls, |calls| {
        for _ in 0..calls {
            f();
        }
    })
}
