//! Stage 1 of "Learning PyTorch with Examples": a two-layer network (1000 -> 100, `ReLU`, 100 -> 10)
//! fitted to random data with plain tensors. The forward pass and the backward pass are both
//! written by hand; later stages let `network!` generate the backward pass.
//!
//! Run: `cargo run --release --example 01_tensors` (add `--features cuda -- --device cuda` for the GPU)
//!
//! Prints `STEP LOSS` every 100 steps, like the tutorial; the loss falls from about 3e7 to
//! below 1e-3 (the last line reads `499 0.000…`). `tests/stage1_tensors.rs` replays this step
//! from PyTorch's weights and matches PyTorch's losses.

use declnet::prelude::*;

/// Batch size, input, hidden and output widths, as in the tutorial.
pub const N: usize = 64;
/// Input width.
pub const D_IN: usize = 1000;
/// Hidden width.
pub const H: usize = 100;
/// Output width.
pub const D_OUT: usize = 10;
/// The tutorial's learning rate for this stage.
pub const LEARNING_RATE: f32 = 1e-6;

/// One training step: forward, squared-error loss, hand-written gradients, and the update
/// `w -= lr * grad`. Returns the loss before the update,
/// still on the device: reading it waits for the device, so `run` reads it only to print it.
pub fn train_step<B: Backend>(
    x: &Tensor<B>,
    y: &Tensor<B>,
    w1: &mut Tensor<B>,
    w2: &mut Tensor<B>,
    learning_rate: f32,
) -> Tensor<B> {
    // Forward: predicted y.
    let h = x.mm(&*w1);
    let h_relu = h.clamp_min(0.0);
    let y_pred = h_relu.mm(&*w2);

    // Loss: sum of squared errors.
    let diff = &y_pred - y;
    let loss = diff.pow(2.0).sum();

    // Backward: gradients of the loss with respect to w1 and w2.
    let grad_y_pred = 2.0 * diff;
    let grad_w2 = h_relu.t().mm(&grad_y_pred);
    let mut grad_h = grad_y_pred.mm(w2.t());
    grad_h.masked_fill_(&h.lt(0.0), 0.0); // grad_h[h < 0] = 0
    let grad_w1 = x.t().mm(&grad_h);

    // Update the weights in place: w -= learning_rate * grad.
    w1.add_scaled_(-learning_rate, &grad_w1);
    w2.add_scaled_(-learning_rate, &grad_w2);
    loss
}

fn main() -> Result<()> {
    match DeviceArg::from_args()? {
        DeviceArg::Cpu => run(&Cpu),
        DeviceArg::Cuda(ordinal) => run(&Cuda::new(ordinal)?),
    }
    Ok(())
}

/// The stage's training run on `device`.
fn run<B: Backend>(device: &B) {
    let rng = &mut seeded(0);

    // Random input and output data, and random weights.
    let x = Tensor::randn([N, D_IN], device, rng);
    let y = Tensor::randn([N, D_OUT], device, rng);
    let mut w1 = Tensor::randn([D_IN, H], device, rng);
    let mut w2 = Tensor::randn([H, D_OUT], device, rng);

    for step in 0..500 {
        let loss = train_step(&x, &y, &mut w1, &mut w2, LEARNING_RATE);
        if step % 100 == 99 {
            println!("{step} {}", loss.item());
        }
    }
}
