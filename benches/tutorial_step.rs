//! The generated training step of the tutorial network (N=64, 1000 -> 100 -> 10, MSE sum,
//! SGD), against the time of its five matrix products alone, the lower bound for any
//! implementation. Also counts the heap allocations one steady-state step makes.
//!
//! Run: `cargo bench --bench tutorial_step`. Prints the median step time, the median GEMM-only
//! time, their ratio (target <= 1.1), and allocations and bytes per step.

mod timing;
#[path = "../tests/shared/two_layer_net.rs"]
mod two_layer_net;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use declnet::losses::{Loss, MseLoss, Reduction};
use declnet::optim::{Sgd, SgdConfig};
use declnet::prelude::*;
use timing::median_call_time;
use two_layer_net::TwoLayerNet;

/// The system allocator, counting calls and bytes.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Samples per measurement; the median is reported.
const SAMPLES: usize = 31;
/// Calls timed together in one sample.
const CALLS_PER_SAMPLE: usize = 50;

fn main() {
    let rng = &mut seeded(0);
    let x = Tensor::randn([64, 1000], &Cpu, rng);
    let y = Tensor::randn([64, 10], &Cpu, rng);
    let mut net = TwoLayerNet::new(&Cpu, rng);
    let loss_fn = MseLoss::new(Reduction::Sum);
    // A tiny learning rate keeps the weights (and so the work) the same from step to step.
    let mut sgd = Sgd::new(SgdConfig {
        lr: 1e-12,
        ..SgdConfig::default()
    });
    let mut step = || {
        let (y_pred, tape) = net.forward_train(&x).unwrap();
        let (loss, grad) = loss_fn.value_and_grad(&y_pred, &y);
        sgd.zero_grad(&mut net);
        net.backward_params(tape, &grad).unwrap();
        sgd.step(&mut net);
        black_box(loss);
    };
    let step_time = median_call_time(SAMPLES, CALLS_PER_SAMPLE, &mut step);
    let (allocations, bytes) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    step();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let bytes = BYTES.load(Ordering::Relaxed) - bytes;

    // The same five products with the same operand layouts, into buffers allocated once:
    // h = x W1^T, y = h W2^T, dW2 = dy^T h, dh = dy W2, dW1 = dh^T x.
    let (w1, w2) = (
        net.linear1.weight.value().clone(),
        net.linear2.weight.value().clone(),
    );
    let mut h = Tensor::zeros([64, 100], &Cpu);
    let mut out = Tensor::zeros([64, 10], &Cpu);
    let mut grad_w2 = Tensor::zeros([10, 100], &Cpu);
    let mut grad_h = Tensor::zeros([64, 100], &Cpu);
    let mut grad_w1 = Tensor::zeros([100, 1000], &Cpu);
    let gemms = median_call_time(SAMPLES, CALLS_PER_SAMPLE, || {
        h.addmm_(&x, w1.t(), 0.0, 1.0);
        out.addmm_(&h, w2.t(), 0.0, 1.0);
        grad_w2.addmm_(out.t(), &h, 0.0, 1.0);
        grad_h.addmm_(&out, &w2, 0.0, 1.0);
        grad_w1.addmm_(grad_h.t(), &x, 0.0, 1.0);
        black_box((&h, &out, &grad_w2, &grad_h, &grad_w1));
    });

    println!("cpu tutorial step (median of {SAMPLES}x{CALLS_PER_SAMPLE}): {step_time:?}");
    println!("cpu tutorial GEMMs only:                   {gemms:?}");
    println!(
        "cpu tutorial step / GEMMs only: {:.3} (target <= 1.1)",
        step_time.as_secs_f64() / gemms.as_secs_f64()
    );
    println!("cpu tutorial step allocations: {allocations} ({bytes} bytes)");
}
