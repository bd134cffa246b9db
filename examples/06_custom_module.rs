//! Stage 6 of "Learning PyTorch with Examples": a custom module with named layers and a
//! forward body (PyTorch's `TwoLayerNet(nn.Module)`), trained with `MseLoss` (sum) and plain
//! SGD from `declnet::optim`, then saved in PyTorch's `state_dict` layout and loaded back.
//!
//! Run: `cargo run --release --example 06_custom_module` (add `--features cuda -- --device cuda` for
//! the GPU, and `--graph` to replay the training step as one captured CUDA graph)
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
    let graph = std::env::args().any(|arg| arg == "--graph");
    match DeviceArg::from_args()? {
        DeviceArg::Cpu if graph => Err(Error::Usage(
            "`--graph` captures a CUDA graph and needs `--device cuda`".to_owned(),
        )),
        DeviceArg::Cpu => run(&Cpu),
        DeviceArg::Cuda(ordinal) if graph => run_graph(&Cuda::new(ordinal)?),
        DeviceArg::Cuda(ordinal) => run(&Cuda::new(ordinal)?),
    }
}

/// Everything a training step reads and writes.
struct Training<B: Backend> {
    net: TwoLayerNet<B>,
    sgd: Sgd<B>,
    x: Tensor<B>,
    y: Tensor<B>,
}

impl<B: Backend> Training<B> {
    /// The data and the network, drawn from seed 0 (the same on every device).
    fn new(device: &B) -> Self {
        let rng = &mut seeded(0);
        let x = Tensor::randn([64, 1000], device, rng);
        let y = Tensor::randn([64, 10], device, rng);
        let net = TwoLayerNet::new(device, rng);
        Self {
            net,
            sgd: optimizer(),
            x,
            y,
        }
    }
}

/// The stage's training run on `device`.
fn run<B: Backend>(device: &B) -> Result<()> {
    let mut training = Training::new(device);
    for step in 0..500 {
        let Training { net, sgd, x, y } = &mut training;
        let loss = train_step(net, sgd, x, y)?;
        if step % 100 == 99 {
            println!("{step} {}", loss.try_item()?);
        }
    }
    save_and_reload(device, &training)
}

/// The same run with the training step captured once as a CUDA graph and replayed: one launch
/// per step instead of one per op. Prints the same losses.
fn run_graph(device: &Cuda) -> Result<()> {
    /// The training state and the last step's loss, written in place so the graph can.
    struct Captured {
        training: Training<Cuda>,
        loss: Tensor<Cuda>,
    }
    fn step(captured: &mut Captured) -> Result<()> {
        let Training { net, sgd, x, y } = &mut captured.training;
        let loss = train_step(net, sgd, x, y)?;
        captured.loss.try_copy_(&loss)
    }
    let captured = Captured {
        training: Training::new(device),
        loss: Tensor::zeros([], device),
    };
    let mut graph = StepGraph::new(captured, step);
    // Runs step 0 eagerly and records step 1, which runs at the first `run`.
    graph.capture(device)?;
    for step in 1..500 {
        graph.run()?;
        if step % 100 == 99 {
            println!("{step} {}", graph.state().loss.try_item()?);
        }
    }
    save_and_reload(device, &graph.into_state().training)
}

/// Saves the trained network and its optimizer state, and loads both back.
fn save_and_reload<B: Backend>(device: &B, training: &Training<B>) -> Result<()> {
    let Training { net, sgd, x, .. } = training;

    // Save in PyTorch's layout (`linear1.weight` is [100, 1000]) and load into a fresh network.
    let path = std::env::temp_dir().join("declnet_two_layer_net.safetensors");
    net.save(&path)?;
    let loaded = TwoLayerNet::load(device, &path)?;
    let same = loaded.forward(x)?.to_vec() == net.forward(x)?.to_vec();
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
