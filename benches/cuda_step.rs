//! Training steps on GPU 0:
//! - the tutorial step (N=64, 1000 -> 100 -> 10, MSE sum, SGD) run op by op and replayed as a
//!   captured CUDA graph (`StepGraph`), and the graph's speedup;
//! - a large MLP (batch 4096, three 4096 -> 4096 layers with `ReLU`, MSE, Adam) against the time
//!   of its eight cuBLAS GEMMs alone, the lower bound for any implementation (and replayed as
//!   a graph too, with the capturable Adam).
//!
//! Run: `cargo bench --features cuda --bench cuda_step` (prints `skipped: no CUDA device`
//! without one). Each figure is the median over samples of many steps, each sample ended by
//! `Cuda::synchronize`, so it includes the GPU's work and not just the launches.

mod timing;
#[path = "../tests/shared/two_layer_net.rs"]
mod two_layer_net;

use declnet::losses::{Loss, MseLoss, Reduction};
use declnet::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use declnet::prelude::*;
use timing::median_time;
use two_layer_net::TwoLayerNet;

network! {
    /// Three 4096-wide layers.
    struct BigMlp(x: [N, 4096]) -> [N, 4096] {
        Linear<4096, 4096>,
        ReLU,
        Linear<4096, 4096>,
        ReLU,
        Linear<4096, 4096>,
    }
}

/// Everything the tutorial step touches.
struct Tutorial {
    net: TwoLayerNet<Cuda>,
    sgd: Sgd<Cuda>,
    x: Tensor<Cuda>,
    y: Tensor<Cuda>,
    loss: Tensor<Cuda>,
}

fn tutorial_step(t: &mut Tutorial) -> Result<()> {
    let (y_pred, tape) = t.net.forward_train(&t.x)?;
    let (loss, grad) = MseLoss::new(Reduction::Sum).try_value_and_grad(&y_pred, &t.y)?;
    t.sgd.zero_grad(&mut t.net);
    t.net.backward_params(tape, &grad)?;
    t.sgd.try_step(&mut t.net)?;
    t.loss.try_copy_(&loss)
}

fn tutorial(device: &Cuda) -> Result<()> {
    let rng = &mut seeded(0);
    let state = Tutorial {
        x: Tensor::randn([64, 1000], device, rng),
        y: Tensor::randn([64, 10], device, rng),
        net: TwoLayerNet::new(device, rng),
        // A tiny learning rate keeps the work the same from step to step.
        sgd: Sgd::new(SgdConfig {
            lr: 1e-12,
            ..SgdConfig::default()
        }),
        loss: Tensor::zeros([], device),
    };
    let mut training = StepGraph::new(state, tutorial_step);
    training.capture(device)?;
    let (samples, steps) = (21, 200);
    let eager = median_time(samples, steps, |steps| {
        for _ in 0..steps {
            training.run_eagerly().unwrap();
        }
        device.synchronize().unwrap();
    });
    let graph = median_time(samples, steps, |steps| {
        for _ in 0..steps {
            training.run().unwrap();
        }
        device.synchronize().unwrap();
    });
    println!("cuda tutorial step, eager (median of {samples}x{steps}): {eager:?}");
    println!("cuda tutorial step, CUDA graph:                     {graph:?}");
    println!(
        "cuda tutorial step, graph speedup: {:.2}x",
        eager.as_secs_f64() / graph.as_secs_f64()
    );
    Ok(())
}

/// Everything the large MLP's step touches.
struct Large {
    net: BigMlp<Cuda>,
    adam: Adam<Cuda>,
    x: Tensor<Cuda>,
    y: Tensor<Cuda>,
}

fn large_step(l: &mut Large) -> Result<()> {
    let (y_pred, tape) = l.net.forward_train(&l.x)?;
    let (_, grad) = MseLoss::new(Reduction::Mean).try_value_and_grad(&y_pred, &l.y)?;
    l.adam.zero_grad(&mut l.net);
    l.net.backward_params(tape, &grad)?;
    l.adam.try_step(&mut l.net)
}

const BATCH: usize = 4096;
const WIDTH: usize = 4096;

fn big_mlp(device: &Cuda) -> Result<()> {
    let rng = &mut seeded(0);
    let state = Large {
        x: Tensor::randn([BATCH, WIDTH], device, rng),
        y: Tensor::randn([BATCH, WIDTH], device, rng),
        net: BigMlp::new(device, rng),
        // Capturable, so the same step can also be replayed as a graph.
        adam: Adam::new(AdamConfig {
            lr: 1e-6,
            capturable: true,
            ..AdamConfig::default()
        }),
    };
    let mut training = StepGraph::new(state, large_step);
    training.capture(device)?;
    let (samples, steps) = (11, 5);
    let step_time = median_time(samples, steps, |steps| {
        for _ in 0..steps {
            training.run_eagerly().unwrap();
        }
        device.synchronize().unwrap();
    });
    let graph_time = median_time(samples, steps, |steps| {
        for _ in 0..steps {
            training.run().unwrap();
        }
        device.synchronize().unwrap();
    });
    drop(training);

    // The step's eight products, into buffers allocated once: per layer the forward
    // `h W^T` and the weight gradient `g^T h`, and the input gradient `g W` for the two upper
    // layers (the first layer's input needs none).
    let weight = Tensor::randn([WIDTH, WIDTH], device, rng);
    let activation = Tensor::randn([BATCH, WIDTH], device, rng);
    let mut out = Tensor::zeros([BATCH, WIDTH], device);
    let mut grad_weight = Tensor::zeros([WIDTH, WIDTH], device);
    let gemm_time = median_time(samples, steps, |steps| {
        for _ in 0..steps {
            for _ in 0..3 {
                out.addmm_(&activation, weight.t(), 0.0, 1.0);
                grad_weight.addmm_(activation.t(), &activation, 0.0, 1.0);
            }
            for _ in 0..2 {
                out.addmm_(&activation, &weight, 0.0, 1.0);
            }
        }
        device.synchronize().unwrap();
    });
    let flops = 8.0 * 2.0 * (BATCH * WIDTH * WIDTH) as f64;
    println!("cuda 4096 MLP Adam step (median of {samples}x{steps}): {step_time:?}");
    println!("cuda 4096 MLP Adam step, CUDA graph:             {graph_time:?}");
    println!(
        "cuda 4096 MLP GEMMs only:                        {gemm_time:?} ({:.1} TFLOP/s)",
        flops / gemm_time.as_secs_f64() / 1e12
    );
    println!(
        "cuda 4096 MLP step / GEMMs only: {:.3}",
        step_time.as_secs_f64() / gemm_time.as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    let device = match Cuda::new(0) {
        Ok(device) => device,
        Err(error) => {
            declnet::runtime::backend::skip_without_cuda(&error);
            return Ok(());
        }
    };
    tutorial(&device)?;
    big_mlp(&device)
}
