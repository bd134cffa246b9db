//! Stage 6 of "Learning PyTorch with Examples": a custom module with named layers and a
//! forward body (PyTorch's `TwoLayerNet(nn.Module)`), trained with `MseLoss` (sum) and plain
//! SGD from `declnet::optim`, then saved in PyTorch's `state_dict` layout and loaded back.
//!
//! Run: `cargo run --release --example 06_custom_module` (add `--features cuda -- --device cuda` for the GPU)
//!
//! Prints `STEP LOSS` every 100 steps (the loss falls from about 650 to below 1e-4), then where
//! the weights and the optimizer's state (what resuming needs) were saved.
//! `tests/stage6_custom_module.rs` matches PyTorch's losses and resumes a run from files.

use declnet::losses::{Loss, MseLoss, Reduction};
use declnet::optim::{Optimizer, OptimizerState, Sgd, SgdConfig, UpdateRule};
use declnet::prelude::*;

network! {
    /// The tutorial's `TwoLayerNet`: `linear2(linear1(x).clamp(min=0))`.
    pub struct TwoLayerNet {
        linear1: Linear<1000, 100>,
        linear2: Linear<100, 10>,
    }
    fn forward(x: [N, 1000]) -> [N, 10] {
        let h_relu = linear1(x).clamp_min(0.0);
        linear2(h_relu)
    }
}

/// The tutorial's learning rate for this stage.
pub const LEARNING_RATE: f64 = 1e-4;

/// Plain SGD (no momentum) with the tutorial's learning rate, like
/// `torch.optim.SGD(model.parameters(), lr=1e-4)`.
#[must_use]
pub fn optimizer<B: Backend>() -> Sgd<B> {
    Sgd::new(SgdConfig {
        lr: LEARNING_RATE,
        ..SgdConfig::default()
    })
}

/// One step of any optimizer on the sum of squared errors; returns the loss before the
/// update, still on the device (reading it waits for the device).
///
/// # Errors
/// When a tensor's shape differs from the network's (`x` must be `[N, 1000]`, `y` `[N, 10]`).
pub fn train_step<R: UpdateRule, B: Backend>(
    net: &mut TwoLayerNet<B>,
    optimizer: &mut Optimizer<R, B>,
    x: &Tensor<B>,
    y: &Tensor<B>,
) -> Result<Tensor<B>> {
    let (y_pred, tape) = net.forward_train(x)?;
    let (loss, grad) = MseLoss::new(Reduction::Sum).try_value_and_grad(&y_pred, y)?;
    optimizer.zero_grad(net);
    net.backward_params(tape, &grad)?;
    optimizer.try_step(net)?;
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
    let mut sgd = optimizer();
    for step in 0..500 {
        let loss = train_step(&mut net, &mut sgd, &x, &y)?;
        if step % 100 == 99 {
            println!("{step} {}", loss.try_item()?);
        }
    }

    // Save in PyTorch's layout (`linear1.weight` is [100, 1000]) and load into a fresh network.
    let path = std::env::temp_dir().join("declnet_two_layer_net.safetensors");
    net.save(&path)?;
    let loaded = TwoLayerNet::load(device, &path)?;
    let same = loaded.forward(&x)?.to_vec() == net.forward(&x)?.to_vec();
    println!(
        "saved to {} and loaded back: outputs identical: {same}",
        path.display()
    );

    // To resume training later, keep the optimizer's state too (momentum buffers, step counts).
    let state_path = std::env::temp_dir().join("declnet_two_layer_net_sgd.safetensors");
    sgd.state().save(&state_path)?;
    let mut resumed = optimizer();
    resumed.try_load_state(&loaded, &OptimizerState::load(&state_path, device)?)?;
    println!(
        "optimizer state saved to {} and restored: lr {}",
        state_path.display(),
        resumed.lr()
    );
    Ok(())
}
