//! One tutorial stage-1 training step (N=64, 1000 -> 100 -> 10, hand-written backward) against
//! the time of its five matrix products alone, the lower bound for any implementation.
//!
//! Run: `cargo bench --bench stage1_step`. Prints the median step time, the median GEMM-only
//! time, their ratio (target <= 1.15) and the GFLOP/s faer reaches on these shapes.

mod timing;

#[path = "../examples/01_tensors.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;

use std::hint::black_box;

use declnet::prelude::*;
use example::{D_IN, D_OUT, H, N};
use timing::median_call_time;

/// Samples per measurement; the median of them is reported.
const SAMPLES: usize = 31;
/// Calls timed together in one sample.
const CALLS_PER_SAMPLE: usize = 50;

fn main() {
    let rng = &mut seeded(0);
    let x = Tensor::randn([N, D_IN], &Cpu, rng);
    let y = Tensor::randn([N, D_OUT], &Cpu, rng);
    let mut w1 = Tensor::randn([D_IN, H], &Cpu, rng);
    let mut w2 = Tensor::randn([H, D_OUT], &Cpu, rng);

    // A tiny learning rate keeps the weights (and so the work) the same from call to call.
    let step = median_call_time(SAMPLES, CALLS_PER_SAMPLE, || {
        black_box(example::train_step(&x, &y, &mut w1, &mut w2, 1e-12));
    });

    // The same five products, with the same operand layouts, into buffers allocated once.
    let mut h = Tensor::zeros([N, H], &Cpu);
    let mut y_pred = Tensor::zeros([N, D_OUT], &Cpu);
    let mut grad_w2 = Tensor::zeros([H, D_OUT], &Cpu);
    let mut grad_h = Tensor::zeros([N, H], &Cpu);
    let mut grad_w1 = Tensor::zeros([D_IN, H], &Cpu);
    let gemms = median_call_time(SAMPLES, CALLS_PER_SAMPLE, || {
        h.addmm_(&x, &w1, 0.0, 1.0);
        y_pred.addmm_(&h, &w2, 0.0, 1.0);
        grad_w2.addmm_(h.t(), &y_pred, 0.0, 1.0);
        grad_h.addmm_(&y_pred, w2.t(), 0.0, 1.0);
        grad_w1.addmm_(x.t(), &grad_h, 0.0, 1.0);
        black_box((&h, &y_pred, &grad_w2, &grad_h, &grad_w1));
    });

    let flops = 2 * (N * D_IN * H + N * H * D_OUT + H * N * D_OUT + N * D_OUT * H + D_IN * N * H);
    let gflops = flops as f64 / gemms.as_secs_f64() / 1e9;
    println!("cpu stage1 step (median of {SAMPLES}x{CALLS_PER_SAMPLE}): {step:?}");
    println!("cpu stage1 GEMMs only:                   {gemms:?} ({gflops:.1} GFLOP/s)");
    println!(
        "cpu stage1 step / GEMMs only: {:.3} (target <= 1.15)",
        step.as_secs_f64() / gemms.as_secs_f64()
    );
}
