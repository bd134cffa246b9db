//! Stage 2 of "Learning PyTorch with Examples": the same two-layer network as stage 1, but the
//! backward pass is generated. `network!` declares two raw parameters and the forward
//! expression; `backward_params` fills each parameter's gradient.
//!
//! Run: `cargo run --release --example 02_autograd` (add `--features cuda -- --device cuda` for the GPU)
//!
//! Prints `STEP LOSS` every 100 steps; the loss falls from about 3e7 to below 1e-3.
//! `tests/stage2_autograd.rs` replays it from PyTorch's weights and matches PyTorch's losses.

use declnet::prelude::*;

network! {
    /// `relu(x w1) w2`, with raw parameters like the tutorial's `w1`, `w2`.
    pub struct RawNet {
        w1: Param<[1000, 100]>,
        w2: Param<[100, 10]>,
    }
    fn forward(x: [N, 1000]) -> [N, 10] {
        x.mm(w1).clamp_min(0.0).mm(w2)
    }
}

/// The tutorial's learning rate for this stage.
pub const LEARNING_RATE: f32 = 1e-6;

/// One step: forward, sum of squared errors, generated backward, `w -= lr * grad` by hand.
/// Returns the loss before the update,
/// still on the device: reading it waits for the device, so `run` reads it only to print it.
///
/// # Errors
/// When a tensor's shape differs from the network's (`x` must be `[N, 1000]`, `y` `[N, 10]`).
pub fn train_step<B: Backend>(
    net: &mut RawNet<B>,
    x: &Tensor<B>,
    y: &Tensor<B>,
    learning_rate: f32,
) -> Result<Tensor<B>> {
    let (y_pred, tape) = net.forward_train(x)?;
    let diff = y_pred.try_sub(y)?;
    let loss = diff.pow(2.0).sum();
    net.backward_params(tape, &(2.0 * diff))?;
    net.visit_params_mut(&mut |_, param| {
        let (value, grad) = param.value_and_grad_mut();
        if let Some(grad) = grad {
            value.add_scaled_(-learning_rate, grad);
        }
    });
    net.zero_grad();
    Ok(loss)
}

fn main() -> Result<()> {
    match DeviceArg::from_args()? {
        DeviceArg::Cpu => run(&Cpu),
        DeviceArg::Cuda(ordinal) => run(&Cuda::new(ordinal)?),
    }
}

/// The stage's training run on `device`.
fn run<B: Backend>(device: &B) -> Result<()> {
    let rng = &mut seeded(0);
    let x = Tensor::randn([64, 1000], device, rng);
    let y = Tensor::randn([64, 10], device, rng);
    let mut net = RawNet::new(device, rng);
    for step in 0..500 {
        let loss = train_step(&mut net, &x, &y, LEARNING_RATE)?;
        if step % 100 == 99 {
            println!("{step} {}", loss.try_item()?);
        }
    }
    Ok(())
}
