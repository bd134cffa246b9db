//! Stage 7 of "Learning PyTorch with Examples": a network whose depth is chosen at run time.
//! Each step reuses `middle_linear` a random number of times (0 to 3): the loop's trip count is
//! an argument of `forward`, the generated backward replays the recorded iterations in
//! reverse, and the shared layer's gradients add up. SGD with momentum 0.9.
//!
//! Run: `cargo run --release --example 07_dynamic_net` (add `--features cuda -- --device cuda` for the GPU)
//!
//! Prints `STEP LOSS` every 100 steps; the loss falls from about 650 to below 1. A step with 0
//! repeats leaves `middle_linear` without a gradient, and SGD then leaves it (and its momentum)
//! alone, as PyTorch does. `tests/stage7_dynamic_net.rs` replays PyTorch's repeats.

use declnet::prelude::*;
use declnet::runtime::rand::RngExt;

network! {
    /// The tutorial's `DynamicNet`, with the random choice of depth made by the caller.
    pub struct DynamicNet {
        input_linear: Linear<1000, 100>,
        middle_linear: Linear<100, 100>,
        output_linear: Linear<100, 10>,
    }
    fn forward(x: [N, 1000], repeats: usize) -> [N, 10] {
        let mut h = input_linear(x).clamp_min(0.0);
        for _ in 0..repeats {
            h = middle_linear(h).clamp_min(0.0);
        }
        output_linear(h)
    }
}

/// The tutorial's optimizer for this stage: SGD, lr 1e-4, momentum 0.9.
#[must_use]
pub fn optimizer<B: Backend>() -> Sgd<B> {
    Sgd::new(SgdConfig {
        lr: 1e-4,
        momentum: 0.9,
        ..SgdConfig::default()
    })
}

/// One step with `repeats` uses of the middle layer: forward, MSE (sum), generated backward,
/// SGD. Returns the loss before the update,
/// still on the device: reading it waits for the device, so `run` reads it only to print it.
///
/// # Errors
/// When a tensor's shape differs from the network's (`x` must be `[N, 1000]`, `y` `[N, 10]`).
pub fn train_step<B: Backend>(
    net: &mut DynamicNet<B>,
    optimizer: &mut Sgd<B>,
    x: &Tensor<B>,
    y: &Tensor<B>,
    repeats: usize,
) -> Result<Tensor<B>> {
    net.train_step(x, repeats, y, &MseLoss::new(Reduction::Sum), optimizer)
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
    let mut net = DynamicNet::new(device, rng);
    let mut sgd = optimizer();
    for step in 0..500 {
        let repeats = rng.random_range(0..4);
        let loss = train_step(&mut net, &mut sgd, &x, &y, repeats)?;
        if step % 100 == 99 {
            println!("{step} {}", loss.try_item()?);
        }
    }
    Ok(())
}
