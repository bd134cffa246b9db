//! Stage 3 of "Learning PyTorch with Examples": a custom differentiable function. `MyReLU`
//! implements `Function` with its own forward and backward pass (PyTorch's
//! `torch.autograd.Function`), and the network uses it as `MyReLU.apply(..)`; `network!`
//! calls its backward pass inside the generated one.
//!
//! Run: `cargo run --release --example 03_custom_function` (add `--features cuda -- --device cuda` for the GPU)
//!
//! Prints `STEP LOSS` every 100 steps, then a finite-difference check of `MyReLU`'s backward
//! pass; the loss falls from about 3e7 to below 1e-3. `tests/stage3_custom_function.rs`
//! replays it from PyTorch's weights (the maths of stage 2) and matches PyTorch's losses.

use declnet::prelude::*;
use declnet::runtime::function::{Function, gradcheck};

/// `max(x, 0)` with a hand-written backward pass, saving its input like the tutorial's
/// `ctx.save_for_backward(input)`.
pub struct MyReLU;

impl<B: Backend> Function<B> for MyReLU {
    type Saved = Tensor<B>;

    fn forward(&self, input: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
        Ok((input.clamp_min(0.0), input.try_clone()?))
    }

    fn backward(&self, input: &Tensor<B>, grad_output: &Tensor<B>) -> Result<Tensor<B>> {
        let mut grad_input = grad_output.try_clone()?;
        grad_input.try_masked_fill_(&input.lt(0.0), 0.0)?; // grad_input[input < 0] = 0
        Ok(grad_input)
    }
}

network! {
    /// `MyReLU(x w1) w2`, with raw parameters.
    pub struct CustomReluNet {
        w1: Param<[1000, 100]>,
        w2: Param<[100, 10]>,
    }
    fn forward(x: [N, 1000]) -> [N, 10] {
        MyReLU.apply(x.mm(w1)).mm(w2)
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
    net: &mut CustomReluNet<B>,
    x: &Tensor<B>,
    y: &Tensor<B>,
    learning_rate: f32,
) -> Result<Tensor<B>> {
    let (y_pred, tape) = net.forward_train(x)?;
    let diff = y_pred.try_sub(y)?;
    let loss = diff.pow(2.0).try_sum()?;
    net.zero_grad();
    net.backward_params(tape, &(2.0 * diff))?;
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
    let mut net = CustomReluNet::new(device, rng);
    for step in 0..500 {
        let loss = train_step(&mut net, &x, &y, LEARNING_RATE)?;
        if step % 100 == 99 {
            println!("{step} {}", loss.try_item()?);
        }
    }
    let report = gradcheck(&MyReLU, &Tensor::randn([4, 5], device, rng), 1e-3)?;
    println!("MyReLU gradcheck: max error {:.1e}", report.max_error);
    Ok(())
}
