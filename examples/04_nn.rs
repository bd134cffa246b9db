//! Stage 4 of "Learning PyTorch with Examples": the network as a sequence of layers
//! (`nn.Sequential` in PyTorch), declared with `network!`. The shapes of the chain are checked
//! when this file compiles; the update is still written by hand, over `params_mut()`.
//!
//! Run: `cargo run --release --example 04_nn` (add `--features cuda -- --device cuda` for the GPU)
//!
//! Prints `STEP LOSS` every 100 steps; the loss falls from about 650 to below 1e-4.
//! `tests/stage4_nn.rs` replays it from PyTorch's weights and matches PyTorch's losses.

use declnet::losses::{Loss, MseLoss, Reduction};
use declnet::prelude::*;

network! {
    /// `Linear(1000, 100)`, `ReLU`, `Linear(100, 10)`; parameters named like PyTorch's
    /// `nn.Sequential`: `0.weight`, `0.bias`, `2.weight`, `2.bias`.
    pub struct TwoLayerNet(x: [N, 1000]) -> [N, 10] {
        Linear<1000, 100>, ReLU, Linear<100, 10>
    }
}

/// The tutorial's learning rate for this stage.
pub const LEARNING_RATE: f32 = 1e-4;

/// One step: forward, `MseLoss` with `Reduction::Sum`, generated backward, then
/// `p -= lr * p.grad` for every parameter. Returns the loss before the update,
/// still on the device: reading it waits for the device, so `run` reads it only to print it.
///
/// # Errors
/// When a tensor's shape differs from the network's (`x` must be `[N, 1000]`, `y` `[N, 10]`).
pub fn train_step<B: Backend>(
    net: &mut TwoLayerNet<B>,
    x: &Tensor<B>,
    y: &Tensor<B>,
    learning_rate: f32,
) -> Result<Tensor<B>> {
    let (y_pred, tape) = net.forward_train(x)?;
    let (loss, grad) = MseLoss::new(Reduction::Sum).try_value_and_grad(&y_pred, y)?;
    net.zero_grad();
    net.backward_params(tape, &grad)?;
    for (_, param) in net.params_mut() {
        let (value, grad) = param.value_and_grad_mut();
        if let Some(grad) = grad {
            value.try_add_scaled_(-learning_rate, grad)?;
        }
    }
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
    let mut net = TwoLayerNet::new(device, rng);
    print!("{}", TwoLayerNet::<B>::summary());
    for step in 0..500 {
        let loss = train_step(&mut net, &x, &y, LEARNING_RATE)?;
        if step % 100 == 99 {
            println!("{step} {}", loss.try_item()?);
        }
    }
    Ok(())
}
