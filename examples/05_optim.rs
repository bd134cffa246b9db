//! Stage 5 of "Learning PyTorch with Examples": the same two-layer network, now updated by an
//! optimizer from `declnet::optim` (Adam, like `torch.optim.Adam`) instead of a hand-written
//! loop, with the loss from `declnet::losses` (`MseLoss` with `Reduction::Sum`, like
//! `torch.nn.MSELoss(reduction="sum")`).
//!
//! Run: `cargo run --release --example 05_optim` (add `--features cuda -- --device cuda` for the GPU)
//!
//! Prints `STEP LOSS` every 100 steps; the loss falls from about 650 to about 1e-5 (the last
//! line reads `499 0.0000103…`). `tests/stage5_optim.rs` replays this step from PyTorch's
//! weights and matches PyTorch's losses.

use declnet::prelude::*;

network! {
    /// `Linear(1000, 100)`, `ReLU`, `Linear(100, 10)`, with the layer names of the tutorial's
    /// `TwoLayerNet` (`linear1.weight`, ...).
    pub struct TwoLayerNet {
        linear1: Linear<1000, 100>,
        linear2: Linear<100, 10>,
    }
    fn forward(x: [N, 1000]) -> [N, 10] {
        linear2(linear1(x).clamp_min(0.0))
    }
}

/// The tutorial's learning rate for this stage.
pub const LEARNING_RATE: f64 = 1e-4;

/// Adam with the tutorial's learning rate and PyTorch's other defaults.
#[must_use]
pub fn optimizer<B: Backend>() -> Adam<B> {
    Adam::new(AdamConfig {
        lr: LEARNING_RATE,
        ..AdamConfig::default()
    })
}

/// One step: forward, sum of squared errors, generated backward, `optimizer.step()`, all in
/// the generated `train_step`.
/// Returns the loss before the update,
/// still on the device: reading it waits for the device, so `run` reads it only to print it.
///
/// # Errors
/// When a tensor's shape differs from the network's (`x` must be `[N, 1000]`, `y` `[N, 10]`).
pub fn train_step<B: Backend>(
    net: &mut TwoLayerNet<B>,
    optimizer: &mut Adam<B>,
    x: &Tensor<B>,
    y: &Tensor<B>,
) -> Result<Tensor<B>> {
    net.train_step(x, y, &MseLoss::new(Reduction::Sum), optimizer)
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
    let mut optimizer = optimizer();
    for step in 0..500 {
        let loss = train_step(&mut net, &mut optimizer, &x, &y)?;
        if step % 100 == 99 {
            println!("{step} {}", loss.try_item()?);
        }
    }
    Ok(())
}
