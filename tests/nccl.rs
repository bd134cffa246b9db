//! NCCL (`--features nccl`) on one GPU, as a job of one rank: its collectives, data-parallel
//! training steps that average gradients (and broadcast `BatchNorm`'s buffers) in GPU memory
//! against the same steps on the CPU with [`Local`], and a step captured as a CUDA graph
//! against eager ones. The CPU halves run everywhere.
//!
//! Without a device the tests write `skipped: no CUDA device (<why>)`, without NCCL (a build
//! without the feature, or no `libnccl.so` to load) `skipped: no NCCL (<why>)`, and pass.

mod common;
#[path = "shared/two_layer_net.rs"]
mod two_layer_net;

use std::any::Any;
use std::sync::{Mutex, MutexGuard, PoisonError};

use common::cuda_or_skip;
use declnet::distributed::{Collective, DataParallel, Local, Nccl};
use declnet::losses::{Loss, MseLoss, Reduction};
use declnet::optim::{Sgd, SgdConfig};
use declnet::prelude::*;
use declnet::runtime::Buffer;
use two_layer_net::TwoLayerNet;

/// One test at a time on the GPU: a capture records every op issued to the device's stream.
fn gpu_turn() -> MutexGuard<'static, ()> {
    static GPU: Mutex<()> = Mutex::new(());
    GPU.lock().unwrap_or_else(PoisonError::into_inner)
}

/// GPU 0 and a one-rank NCCL communicator on it, or `None` after saying why not.
fn nccl_or_skip() -> Option<(Cuda, Nccl)> {
    let cuda = cuda_or_skip()?;
    match Nccl::new(&cuda, &Local) {
        Ok(nccl) => Some((cuda, nccl)),
        Err(error) => {
            eprintln!("skipped: no NCCL ({error})");
            None
        }
    }
}

#[test]
fn one_rank_collectives_keep_the_values() {
    let _turn = gpu_turn();
    let Some((_cuda, nccl)) = nccl_or_skip() else {
        return;
    };
    // Straight to stderr, past the test harness's capture, so the GPU check's log shows it.
    let version = format!("NCCL version {}\n", Nccl::version().unwrap());
    std::io::Write::write_all(&mut std::io::stderr(), version.as_bytes()).unwrap();
    assert_eq!((nccl.rank(), nccl.world_size()), (0, 1));
    let mut values = vec![1.5, -2.0, 3.25];
    nccl.all_reduce_mean(&mut values).unwrap();
    assert_eq!(values, [1.5, -2.0, 3.25]);
    nccl.broadcast(&mut values, 0).unwrap();
    assert_eq!(values, [1.5, -2.0, 3.25]);
    let mut bytes = *b"declnet";
    nccl.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(&bytes, b"declnet");
    nccl.barrier().unwrap();
    let mut host: Vec<f32> = vec![1.0];
    let error = nccl
        .in_place()
        .unwrap()
        .all_reduce_mean_in_place(&mut [&mut host as &mut dyn Any])
        .unwrap_err();
    assert!(error.to_string().contains("not on a GPU"), "{error}");
}

/// Three SGD-with-momentum steps of the tutorial network, gradients averaged by `engine`
/// after each backward pass, `linear2.bias` left without a gradient: the losses, the
/// prediction and the trained weights.
fn data_parallel_steps<B: Backend>(dev: &B, engine: impl Collective) -> Vec<(String, Vec<f32>)> {
    // Weights and batch are drawn on the host, so both devices get the same.
    let mut net = DataParallel::new(TwoLayerNet::new(dev, &mut seeded(0)), engine).unwrap();
    let x = Tensor::randn([32, 1000], dev, &mut seeded(7));
    let y = Tensor::randn([32, 10], dev, &mut seeded(8));
    let mut optimizer: Sgd<B> = Sgd::new(SgdConfig {
        lr: 1e-5,
        momentum: 0.9,
        ..SgdConfig::default()
    });
    let mut losses = Vec::new();
    for _ in 0..3 {
        let (y_pred, tape) = net.forward_train(&x).unwrap();
        let (loss, grad) = MseLoss::new(Reduction::Sum)
            .try_value_and_grad(&y_pred, &y)
            .unwrap();
        optimizer.zero_grad(&mut net);
        net.backward_params(tape, &grad).unwrap();
        net.linear2.bias.as_mut().unwrap().zero_grad();
        net.sync_gradients().unwrap();
        assert!(net.linear2.bias.as_ref().unwrap().grad().is_none());
        optimizer.try_step(&mut net).unwrap();
        losses.push(loss.item());
    }
    let mut outputs = vec![
        ("losses".to_owned(), losses),
        ("prediction".to_owned(), net.forward(&x).unwrap().to_vec()),
    ];
    net.visit_params(&mut |name, param| outputs.push((name.to_owned(), param.value().to_vec())));
    outputs
}

network! {
    /// A small CNN with `BatchNorm`, whose running statistics and batch count are broadcast
    /// from rank 0 after every step.
    pub struct SmallCnn(x: [N, 1, 8, 8]) -> [N, 10] {
        conv: Conv2d<1, 4, 3, padding = 1>, bn: BatchNorm2d<4>, ReLU, MaxPool2d<2>,
        Flatten, fc: Linear<64, 10>
    }
}

/// Two SGD steps of [`SmallCnn`], gradients averaged by `engine`: the trained weights, the
/// running statistics and the batch count.
fn cnn_steps<B: Backend>(dev: &B, engine: impl Collective) -> Vec<(String, Vec<f32>)> {
    let mut net = DataParallel::new(SmallCnn::new(dev, &mut seeded(3)), engine).unwrap();
    let x = Tensor::randn([16, 1, 8, 8], dev, &mut seeded(4));
    let y = Tensor::randn([16, 10], dev, &mut seeded(5));
    let mut optimizer: Sgd<B> = Sgd::new(SgdConfig {
        lr: 1e-2,
        ..SgdConfig::default()
    });
    for _ in 0..2 {
        let (y_pred, tape) = net.forward_train(&x).unwrap();
        let (_, grad) = MseLoss::new(Reduction::Mean)
            .try_value_and_grad(&y_pred, &y)
            .unwrap();
        optimizer.zero_grad(&mut net);
        net.backward_params(tape, &grad).unwrap();
        net.sync_gradients().unwrap();
        optimizer.try_step(&mut net).unwrap();
    }
    let mut outputs = Vec::new();
    net.visit_params(&mut |name, param| outputs.push((name.to_owned(), param.value().to_vec())));
    net.visit_buffers(&mut |name, buffer| {
        let values = match buffer {
            Buffer::Tensor(tensor) => tensor.to_vec(),
            Buffer::Count(count) => vec![count as f32],
        };
        outputs.push((name.to_owned(), values));
    });
    outputs
}

#[test]
fn one_rank_cnn_with_batch_norm_matches_the_cpu() {
    let _turn = gpu_turn();
    // The CPU's run first, so that a build without a GPU runs half the test.
    let expected = cnn_steps(&Cpu, Local);
    let Some((cuda, nccl)) = nccl_or_skip() else {
        return;
    };
    assert_close(&expected, &cnn_steps(&cuda, nccl));
}

/// Each named output of the NCCL run against the CPU's, to 1e-4 of the largest magnitude.
fn assert_close(expected: &[(String, Vec<f32>)], found: &[(String, Vec<f32>)]) {
    assert_eq!(expected.len(), found.len());
    for ((name, expected), (found_name, found)) in expected.iter().zip(found) {
        assert_eq!(name, found_name);
        let peak = expected.iter().fold(1.0f32, |peak, e| peak.max(e.abs()));
        for (e, f) in expected.iter().zip(found) {
            assert!((e - f).abs() <= 1e-4 * peak, "{name}: cpu {e}, nccl {f}");
        }
    }
}

#[test]
fn one_rank_data_parallel_step_matches_the_cpu() {
    let _turn = gpu_turn();
    let expected = data_parallel_steps(&Cpu, Local);
    let Some((cuda, nccl)) = nccl_or_skip() else {
        return;
    };
    assert_close(&expected, &data_parallel_steps(&cuda, nccl));
}

/// Everything a captured data-parallel step touches.
struct Training<C> {
    net: DataParallel<TwoLayerNet<Cuda>, C, Cuda>,
    optimizer: Sgd<Cuda>,
    x: Tensor<Cuda>,
    y: Tensor<Cuda>,
    loss: Tensor<Cuda>,
}

impl<C: Collective> Training<C> {
    fn new(device: &Cuda, engine: C) -> Self {
        let rng = &mut seeded(0);
        Self {
            x: Tensor::randn([64, 1000], device, rng),
            y: Tensor::randn([64, 10], device, rng),
            net: DataParallel::new(TwoLayerNet::new(device, rng), engine).unwrap(),
            optimizer: Sgd::new(SgdConfig {
                lr: 1e-5,
                ..SgdConfig::default()
            }),
            loss: Tensor::zeros([], device),
        }
    }
}

fn step<C: Collective>(training: &mut Training<C>) -> declnet::Result<()> {
    training.net.zero_grad();
    let (y_pred, tape) = training.net.forward_train(&training.x)?;
    let (loss, grad) = MseLoss::new(Reduction::Sum).try_value_and_grad(&y_pred, &training.y)?;
    training.net.backward_params(tape, &grad)?;
    training.net.sync_gradients()?;
    training.optimizer.try_step(&mut training.net)?;
    training.loss.try_copy_(&loss)
}

#[test]
fn captured_data_parallel_step_replays_the_eager_one() {
    let _turn = gpu_turn();
    let Some((cuda, nccl)) = nccl_or_skip() else {
        return;
    };
    let mut eager = Training::new(&cuda, Local);
    let mut graph = StepGraph::new(Training::new(&cuda, nccl), step);
    // One step eagerly (the ranks agree which gradients exist), then the next recorded.
    graph.capture(&cuda).unwrap();
    step(&mut eager).unwrap();
    step(&mut eager).unwrap();
    for _ in 0..5 {
        step(&mut eager).unwrap();
        graph.run().unwrap();
        let (expected, found) = (eager.loss.item(), graph.state().loss.item());
        assert!(
            (expected - found).abs() <= 1e-5 * expected.abs(),
            "loss: eager {expected}, graph {found}"
        );
    }
    let (expected, found) = (weights(&eager.net), weights(&graph.state().net));
    for (e, f) in expected.iter().zip(&found) {
        assert!(
            (e - f).abs() <= 1e-5 * e.abs().max(1.0),
            "weights: eager {e}, graph {f}"
        );
    }
}

/// Every parameter's values, in visiting order.
fn weights(net: &impl Module<Cuda>) -> Vec<f32> {
    let mut values = Vec::new();
    net.visit_params(&mut |_, param| values.extend(param.value().to_vec()));
    values
}
