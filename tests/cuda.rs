//! The CUDA backend against the CPU: every `Backend` method on the same inputs, and a
//! `network!` training step, must agree to [`RTOL`].
//!
//! Each test opens `Cuda::new(0)` first; without a device (or without the `cuda` feature) it
//! writes `skipped: no CUDA device (<why>)` to stderr, uncaptured, and passes, so CI runs them on every build and a GPU
//! host runs them for real.

mod common;
#[path = "shared/two_layer_net.rs"]
mod two_layer_net;

use common::cuda_or_skip;
use declnet::losses::{Loss, MseLoss, Reduction};
use declnet::optim::{Sgd, SgdConfig};
use declnet::prelude::*;
use declnet::runtime::layers::{BatchNorm, BatchNormConfig, BatchNormKind, Conv2d, Conv2dConfig};
use declnet::runtime::network::Layer;
use declnet::runtime::ops::binary::{BinaryOp, Broadcast};
use declnet::runtime::ops::dropout::DropoutMask;
use declnet::runtime::ops::elementwise::{Operand, Saved};
use declnet::runtime::ops::index::Indices;
use declnet::runtime::ops::loss::{ClassLoss, PointwiseLoss};
use declnet::runtime::ops::matmul::Gemm;
use declnet::runtime::ops::optim::{DeviceHyper, OptimStep, STEP_SCALARS_LEN, StepScalars};
use declnet::runtime::ops::pool::Pool2d;
use declnet::runtime::ops::unary::UnaryOp;
use two_layer_net::TwoLayerNet;

/// Largest difference allowed, relative to the larger of the CPU's value and the largest
/// finite magnitude in the same output (and at least 1): sums of many terms (GEMM, reductions)
/// round differently in cuBLAS's order, so an entry near zero is only as exact as the terms
/// it cancelled. The elementwise kernels compute the CPU's formulas in the same order and
/// differ only where CUDA's `expf`/`erff`/`powf` are a few ulp off.
const RTOL: f32 = 1e-4;

/// Named results of one case, compared name by name.
type Outputs = Vec<(String, Vec<f32>)>;

/// Runs `case` on the CPU and on the GPU and compares every output.
macro_rules! parity_test {
    ($name:ident, $case:ident) => {
        #[test]
        fn $name() {
            let Some(cuda) = cuda_or_skip() else {
                return;
            };
            assert_same(&$case(&Cpu), &$case(&cuda));
        }
    };
}

fn assert_same(cpu: &Outputs, cuda: &Outputs) {
    assert_eq!(cpu.len(), cuda.len());
    for ((name, expected), (cuda_name, actual)) in cpu.iter().zip(cuda) {
        assert_eq!(name, cuda_name);
        assert_eq!(expected.len(), actual.len(), "{name}: lengths differ");
        let peak = expected
            .iter()
            .filter(|e| e.is_finite())
            .fold(1.0f32, |peak, e| peak.max(e.abs()));
        for (i, (&e, &a)) in expected.iter().zip(actual).enumerate() {
            let same = a == e // infinities too
                || (e.is_nan() && a.is_nan())
                || (a - e).abs() <= RTOL * e.abs().max(peak);
            assert!(same, "{name}[{i}]: cuda {a}, cpu {e}");
        }
    }
}

/// `n` values in `[-3, 3)` from a fixed sequence (an LCG), different per `seed`.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005) ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
        })
        .collect()
}

fn unary_case<B: Backend>(dev: &B) -> Outputs {
    let x = data(1000, 1);
    let positive: Vec<f32> = x.iter().map(|v| v.abs() + 0.1).collect();
    // Every op of the table, and the other branches of those that have them.
    let extra = [
        UnaryOp::ClampMin(-0.5),
        UnaryOp::Pow(2.0),
        UnaryOp::Pow(0.5),
    ];
    let grad = data(1000, 2);
    let mut outputs = Outputs::new();
    for &op in UnaryOp::EXAMPLES.iter().chain(&extra) {
        let input = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Pow(0.5)) {
            &positive
        } else {
            &x
        };
        let src = dev.upload(input).unwrap();
        let mut out = dev.zeros(input.len()).unwrap();
        dev.unary(op, &src, &mut out).unwrap();
        outputs.push((format!("{op:?}"), dev.download(&out).unwrap()));
        let mut in_place = dev.upload(input).unwrap();
        dev.unary_assign(op, &mut in_place).unwrap();
        outputs.push((format!("{op:?} in place"), dev.download(&in_place).unwrap()));
        let (mut with_derivative, mut derivative) = (
            dev.zeros(input.len()).unwrap(),
            dev.zeros(input.len()).unwrap(),
        );
        dev.unary_with_derivative(op, &src, &mut with_derivative, &mut derivative)
            .unwrap();
        outputs.push((
            format!("{op:?} with derivative"),
            dev.download(&with_derivative).unwrap(),
        ));
        outputs.push((
            format!("{op:?} derivative"),
            dev.download(&derivative).unwrap(),
        ));
        let mut in_place = dev.upload(input).unwrap();
        dev.unary_assign_with_derivative(op, &mut in_place, &mut derivative)
            .unwrap();
        outputs.push((
            format!("{op:?} in place with derivative"),
            dev.download(&in_place).unwrap(),
        ));
        outputs.push((
            format!("{op:?} derivative in place"),
            dev.download(&derivative).unwrap(),
        ));
        let saved = match op.saves() {
            Saved::Input => src,
            Saved::Output => out,
        };
        let g = dev.upload(&grad).unwrap();
        let mut backward = dev.zeros(grad.len()).unwrap();
        dev.unary_backward(op, &g, &saved, &mut backward).unwrap();
        outputs.push((format!("{op:?} backward"), dev.download(&backward).unwrap()));
        let mut g = dev.upload(&grad).unwrap();
        dev.unary_backward_assign(op, &mut g, &saved).unwrap();
        outputs.push((
            format!("{op:?} backward in place"),
            dev.download(&g).unwrap(),
        ));
    }
    let mut filled = dev.zeros(37).unwrap();
    dev.fill(&mut filled, 2.5).unwrap();
    outputs.push(("fill".into(), dev.download(&filled).unwrap()));
    let src = dev.upload(&x).unwrap();
    outputs.push((
        "copy".into(),
        dev.download(&dev.copy(&src).unwrap()).unwrap(),
    ));
    let mut dst = dev.zeros(x.len()).unwrap();
    dev.copy_into(&src, &mut dst).unwrap();
    outputs.push(("copy_into".into(), dev.download(&dst).unwrap()));
    let mut written = dev.zeros(x.len()).unwrap();
    dev.upload_into_at(&x, &mut written, 0).unwrap();
    dev.upload_into_at(&x[..3], &mut written, 5).unwrap();
    assert!(
        dev.upload_into_at(&x, &mut written, 1).is_err(),
        "past the end"
    );
    outputs.push(("upload_into".into(), dev.download(&written).unwrap()));
    outputs.push((
        "empty".into(),
        dev.download(&dev.zeros(0).unwrap()).unwrap(),
    ));
    outputs
}

fn binary_case<B: Backend>(dev: &B) -> Outputs {
    // (lhs, rhs): same shape, a bias row, both sides broadcast, a scalar-like operand, rank 6.
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[4, 5], &[4, 5]),
        (&[64, 10], &[10]),
        (&[3, 1, 5], &[4, 1]),
        (&[2, 3, 4], &[1]),
        (&[2, 1, 3, 1, 2, 2], &[1, 2, 1, 3, 1, 2]),
    ];
    let mut outputs = Outputs::new();
    for (seed, (lhs_dims, rhs_dims)) in shapes.into_iter().enumerate() {
        let (lhs_shape, rhs_shape) = (Shape::from(lhs_dims), Shape::from(rhs_dims));
        let layout = Broadcast::new("parity", &lhs_shape, &rhs_shape).unwrap();
        let lhs_data = data(lhs_shape.numel(), 10 + seed as u64);
        let mut rhs_data = data(rhs_shape.numel(), 20 + seed as u64);
        // Some exact zeros, so `MaskedFill` takes both branches.
        rhs_data.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        let lhs = dev.upload(&lhs_data).unwrap();
        let rhs = dev.upload(&rhs_data).unwrap();
        for &op in BinaryOp::EXAMPLES {
            let name = format!("{op:?} {lhs_shape} {rhs_shape}");
            let mut out = dev.zeros(layout.shape.numel()).unwrap();
            dev.binary(op, &lhs, &rhs, &layout, &mut out).unwrap();
            outputs.push((name.clone(), dev.download(&out).unwrap()));
            for wrt in [Operand::Lhs, Operand::Rhs] {
                let mut partial = dev.zeros(layout.shape.numel()).unwrap();
                dev.binary_partial(op, wrt, &lhs, &rhs, &layout, &mut partial)
                    .unwrap();
                outputs.push((
                    format!("{name} d/d{wrt:?}"),
                    dev.download(&partial).unwrap(),
                ));
            }
            if layout.shape == lhs_shape {
                let mut in_place = dev.copy(&lhs).unwrap();
                dev.binary_assign(op, &mut in_place, &rhs, &layout).unwrap();
                outputs.push((format!("{name} in place"), dev.download(&in_place).unwrap()));
            }
        }
    }
    outputs
}

fn gemm_case<B: Backend>(dev: &B) -> Outputs {
    let mut outputs = Outputs::new();
    for (m, n, k) in [(7, 5, 9), (64, 100, 1000), (1, 3, 1)] {
        let a = dev.upload(&data(m * k, 31)).unwrap();
        let b = dev.upload(&data(k * n, 32)).unwrap();
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            for (alpha, beta) in [(1.0, 0.0), (0.5, 2.0)] {
                let gemm = Gemm {
                    m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    alpha,
                    beta,
                };
                let mut c = dev.upload(&data(m * n, 33)).unwrap();
                dev.gemm(&gemm, &a, &b, &mut c).unwrap();
                outputs.push((format!("{gemm:?}"), dev.download(&c).unwrap()));
            }
        }
    }
    outputs
}

fn reduce_case<B: Backend>(dev: &B) -> Outputs {
    let mut outputs = Outputs::new();
    for (outer, len, inner) in [
        (1, 1000, 1),
        (64, 10, 1),
        (1, 64, 10),
        (3, 7, 5),
        (2, 0, 3),
        (1, 100_000, 1),
    ] {
        let x = dev.upload(&data(outer * len * inner, 41)).unwrap();
        let mut out = dev.zeros(outer * inner).unwrap();
        dev.sum_axis(&x, outer, len, inner, &mut out).unwrap();
        outputs.push((
            format!("sum_axis {outer}x{len}x{inner}"),
            dev.download(&out).unwrap(),
        ));
    }
    for (rows, cols) in [(7, 5), (64, 100), (1, 9)] {
        let src = dev.upload(&data(rows * cols, 42)).unwrap();
        let mut dst = dev.zeros(rows * cols).unwrap();
        dev.transpose(&src, rows, cols, &mut dst).unwrap();
        outputs.push((
            format!("transpose {rows}x{cols}"),
            dev.download(&dst).unwrap(),
        ));
    }
    outputs
}

fn loss_case<B: Backend>(dev: &B) -> Outputs {
    let mut outputs = Outputs::new();
    let n = 1000;
    let x = dev.upload(&data(n, 51)).unwrap();
    let target = dev.upload(&data(n, 52)).unwrap();
    let probabilities: Vec<f32> = data(n, 53).iter().map(|v| (v + 3.0) / 6.0).collect();
    let probabilities = dev.upload(&probabilities).unwrap();
    for op in [
        PointwiseLoss::Squared,
        PointwiseLoss::Absolute,
        PointwiseLoss::SmoothL1 { beta: 1.0 },
        PointwiseLoss::SmoothL1 { beta: 0.0 },
        PointwiseLoss::BceWithLogits,
    ] {
        let t = if op == PointwiseLoss::BceWithLogits {
            &probabilities
        } else {
            &target
        };
        let mut values = dev.zeros(n).unwrap();
        let mut grad = dev.zeros(n).unwrap();
        dev.pointwise_loss(op, &x, t, &mut values, &mut grad)
            .unwrap();
        outputs.push((format!("{op:?} values"), dev.download(&values).unwrap()));
        outputs.push((format!("{op:?} grad"), dev.download(&grad).unwrap()));
    }
    let (rows, classes) = (64, 10);
    let mut logits = data(rows * classes, 54);
    logits[3] = 80.0; // a large logit: log-sum-exp must not overflow
    let x = dev.upload(&logits).unwrap();
    // Class indices as the kernels read them; the last row's is out of range (NaN row).
    let mut labels: Vec<f32> = (0..rows).map(|r| ((r * 7) % classes) as f32).collect();
    labels[rows - 1] = classes as f32;
    let labels = dev.upload(&labels).unwrap();
    for op in [
        ClassLoss::CrossEntropy {
            label_smoothing: 0.0,
        },
        ClassLoss::CrossEntropy {
            label_smoothing: 0.1,
        },
        ClassLoss::Nll,
    ] {
        let mut values = dev.zeros(rows).unwrap();
        let mut grad = dev.zeros(rows * classes).unwrap();
        dev.class_loss(op, &x, &labels, classes, &mut values, &mut grad)
            .unwrap();
        outputs.push((format!("{op:?} values"), dev.download(&values).unwrap()));
        outputs.push((format!("{op:?} grad"), dev.download(&grad).unwrap()));
    }
    outputs
}

/// Each optimizer configuration as it would step at `step` (1-based), PyTorch's bias
/// corrections included.
fn optim_steps(step: i32) -> Vec<OptimStep> {
    let lr = 0.01f32;
    let adam =
        |decay_factor: f32, weight_decay: f32, amsgrad: bool, maximize: bool| OptimStep::Adam {
            decay_factor,
            weight_decay,
            one_minus_beta1: 0.1,
            beta2: 0.999,
            one_minus_beta2: 0.001,
            eps: 1e-8,
            bias_correction2_sqrt: (1.0 - 0.999f32.powi(step)).sqrt(),
            neg_step_size: -lr / (1.0 - 0.9f32.powi(step)),
            amsgrad,
            maximize,
            device_scalars: None,
        };
    let sgd = |weight_decay: f32, momentum: f32, nesterov: bool, maximize: bool| OptimStep::Sgd {
        lr,
        weight_decay,
        momentum,
        one_minus_dampening: 0.9,
        nesterov,
        maximize,
        first: step == 1,
    };
    let rmsprop = |weight_decay: f32, momentum: f32, centered: bool| OptimStep::RmsProp {
        lr,
        alpha: 0.99,
        one_minus_alpha: 0.01,
        eps: 1e-8,
        weight_decay,
        momentum,
        centered,
        maximize: false,
    };
    vec![
        sgd(0.0, 0.0, false, false),
        sgd(0.01, 0.9, true, false),
        sgd(0.0, 0.9, false, true),
        adam(1.0, 0.01, false, false),
        adam(1.0 - lr * 0.01, 0.0, true, true),
        OptimStep::Adadelta {
            lr: 1.0,
            rho: 0.9,
            one_minus_rho: 0.1,
            eps: 1e-6,
            weight_decay: 0.01,
            maximize: false,
        },
        OptimStep::Adagrad {
            neg_clr: -lr / (1.0 + (step - 1) as f32 * 0.01),
            weight_decay: 0.0,
            eps: 1e-10,
            maximize: true,
        },
        rmsprop(0.0, 0.0, false),
        rmsprop(0.01, 0.9, true),
        rmsprop(0.0, 0.0, true),
    ]
}

fn optim_case<B: Backend>(dev: &B) -> Outputs {
    let n = 1000;
    let mut outputs = Outputs::new();
    for (config, first) in optim_steps(1).into_iter().enumerate() {
        let mut param = dev.upload(&data(n, 61)).unwrap();
        let mut state: Vec<B::Storage> = (0..first.buffers())
            .map(|_| dev.zeros(n).unwrap())
            .collect();
        for step in 1u8..=3 {
            let grad = dev.upload(&data(n, 62 + u64::from(step))).unwrap();
            let rule = optim_steps(i32::from(step))[config];
            dev.optim_step(&rule, &mut param, &grad, &mut state, None)
                .unwrap();
        }
        outputs.push((format!("{first:?} param"), dev.download(&param).unwrap()));
        for (i, buffer) in state.iter().enumerate() {
            outputs.push((
                format!("{first:?} state {i}"),
                dev.download(buffer).unwrap(),
            ));
        }
        // Too few state buffers is an error on every backend, not an out-of-bounds write.
        if first.buffers() > 0 {
            let grad = dev.upload(&data(n, 62)).unwrap();
            assert!(
                dev.optim_step(&first, &mut param, &grad, &mut [], None)
                    .is_err()
            );
        }
    }
    outputs.extend(device_scalars_case(dev));
    outputs
}

/// Three `AdamW` (amsgrad) steps with the scalars computed on the device from its own step
/// count, learning rate and beta1, the learning rate changed before the last: the parameter,
/// the state and the scalars buffer.
fn device_scalars_case<B: Backend>(dev: &B) -> Outputs {
    let n = 1000;
    let rule = StepScalars::Adam {
        beta2: 0.999,
        decoupled_weight_decay: 0.01,
    };
    let step = OptimStep::Adam {
        decay_factor: f32::NAN, // computed on the device instead, like the three below
        weight_decay: 0.0,
        one_minus_beta1: f32::NAN,
        beta2: 0.999,
        one_minus_beta2: 0.001,
        eps: 1e-8,
        bias_correction2_sqrt: f32::NAN,
        neg_step_size: f32::NAN,
        amsgrad: true,
        maximize: false,
        device_scalars: Some(rule),
    };
    let hyper = |lr| DeviceHyper { lr, beta1: 0.9 }.to_words();
    let mut param = dev.upload(&data(n, 91)).unwrap();
    let mut state: Vec<B::Storage> = (0..3).map(|_| dev.zeros(n).unwrap()).collect();
    let mut initial = [0.0; STEP_SCALARS_LEN];
    initial[DeviceHyper::OFFSET..].copy_from_slice(&hyper(0.01));
    let mut scalars = dev.upload(&initial).unwrap();
    for seed in 92..95 {
        if seed == 94 {
            dev.upload_into_at(&hyper(0.003), &mut scalars, DeviceHyper::OFFSET)
                .unwrap();
        }
        let grad = dev.upload(&data(n, seed)).unwrap();
        dev.optim_step(&step, &mut param, &grad, &mut state, Some(&mut scalars))
            .unwrap();
    }
    // Without its scalars buffer the step is an error, not a read of nothing.
    let grad = dev.upload(&data(n, 95)).unwrap();
    assert!(
        dev.optim_step(&step, &mut param, &grad, &mut state, None)
            .is_err()
    );
    let counts = dev.download(&scalars).unwrap();
    assert_eq!(
        (counts[0], counts[1]),
        (3.0, 0.0),
        "three steps, and the kernel's block count back at zero"
    );
    // An empty parameter's step still counts.
    let mut empty_scalars = dev.upload(&initial).unwrap();
    let (mut empty, no_grad) = (dev.zeros(0).unwrap(), dev.zeros(0).unwrap());
    let mut empty_state: Vec<B::Storage> = (0..3).map(|_| dev.zeros(0).unwrap()).collect();
    dev.optim_step(
        &step,
        &mut empty,
        &no_grad,
        &mut empty_state,
        Some(&mut empty_scalars),
    )
    .unwrap();
    assert_eq!(dev.download(&empty_scalars).unwrap()[0], 1.0);
    let mut outputs = vec![
        (
            "device scalars param".to_owned(),
            dev.download(&param).unwrap(),
        ),
        ("device scalars".to_owned(), dev.download(&scalars).unwrap()),
    ];
    for (i, buffer) in state.iter().enumerate() {
        outputs.push((
            format!("device scalars state {i}"),
            dev.download(buffer).unwrap(),
        ));
    }
    outputs
}

/// Softmax and log-softmax over every dim of a 3-D tensor, forward and backward, plus a row
/// with a huge entry that a kernel without the max shift would overflow on; the causal
/// softmax of attention scores.
fn softmax_case<B: Backend>(dev: &B) -> Outputs {
    let mut values = data(5 * 7 * 3, 81);
    values[4] = 300.0;
    let x = Tensor::from_vec(values, [5, 7, 3], dev);
    let g = Tensor::from_vec(data(5 * 7 * 3, 82), [5, 7, 3], dev);
    let mut outputs = Outputs::new();
    for dim in 0..3 {
        let (y, log_y) = (x.softmax(dim), x.log_softmax(dim));
        let grad = g.softmax_backward(&y, dim).unwrap();
        let log_grad = g.log_softmax_backward(&log_y, dim).unwrap();
        outputs.push((format!("softmax {dim}"), y.to_vec()));
        outputs.push((format!("log_softmax {dim}"), log_y.to_vec()));
        outputs.push((format!("softmax_backward {dim}"), grad.to_vec()));
        outputs.push((format!("log_softmax_backward {dim}"), log_grad.to_vec()));
    }
    // Attention's causal softmax of [2, 3, 5, 5] scores, a huge score among them.
    let mut values = data(2 * 3 * 5 * 5, 83);
    values[7] = 900.0;
    let scores = Tensor::from_vec(values, [2, 3, 5, 5], dev);
    let g = Tensor::from_vec(data(2 * 3 * 5 * 5, 84), [2, 3, 5, 5], dev);
    let y = scores.try_causal_softmax(0.5).unwrap();
    let grad = g.try_causal_softmax_backward(&y, 0.5).unwrap();
    outputs.push(("causal_softmax".to_owned(), y.to_vec()));
    outputs.push(("causal_softmax_backward".to_owned(), grad.to_vec()));
    outputs
}

fn pool_case<B: Backend>(dev: &B) -> Outputs {
    let x = Tensor::from_vec(data(2 * 3 * 9 * 7, 91), [2, 3, 9, 7], dev);
    let mut outputs = Outputs::new();
    for pool in [
        Pool2d::max(2, 2, 0),
        Pool2d::max(3, 2, 1),
        Pool2d::avg(3, 1, 1),
        Pool2d::avg(2, 2, 0),
    ] {
        let (y, indices) = x.try_pool2d_with_indices(&pool).unwrap();
        let g = Tensor::from_vec(data(y.numel(), 92), y.shape().clone(), dev);
        let grad = g
            .try_pool2d_backward(&pool, indices.as_ref(), x.shape())
            .unwrap();
        outputs.push((format!("{pool:?}"), y.to_vec()));
        if let Some(indices) = indices {
            outputs.push((format!("{pool:?} indices"), indices.to_vec()));
        }
        outputs.push((format!("{pool:?} backward"), grad.to_vec()));
    }
    outputs
}

fn conv_case<B: Backend>(dev: &B) -> Outputs {
    let mut outputs = Outputs::new();
    let strided_dilated_grouped = Conv2dConfig {
        stride: 2,
        padding: 1,
        dilation: 2,
        groups: 2,
        bias: false,
    };
    let stem = Conv2dConfig {
        stride: 2,
        padding: 3,
        ..Conv2dConfig::default()
    };
    // The last, a ResNet-style stem, over a batch whose columns (460 K elements a sample, 17 M
    // in all) are unfolded two samples at a time.
    let cases = [
        (Conv2dConfig::default(), (4, 6, 3), [3, 4, 9, 8]),
        (strided_dilated_grouped, (4, 6, 3), [3, 4, 9, 8]),
        (stem, (3, 4, 7), [37, 3, 112, 112]),
    ];
    for (seed, (config, (channels, out, kernel), dims)) in cases.into_iter().enumerate() {
        let mut conv = Conv2d::new(channels, out, kernel, config, dev, &mut seeded(seed as u64));
        let x = Tensor::from_vec(data(dims.iter().product(), 93), dims, dev);
        let y = conv.forward(&x).unwrap();
        let g = Tensor::from_vec(data(y.numel(), 94), y.shape().clone(), dev);
        let grad_x = conv.backward(&x, &g, true).unwrap().unwrap();
        outputs.push((format!("{config:?} output"), y.to_vec()));
        outputs.push((format!("{config:?} input gradient"), grad_x.to_vec()));
        conv.visit_params(&mut |name, param| {
            outputs.push((
                format!("{config:?} {name} gradient"),
                param.grad().unwrap().to_vec(),
            ));
        });
    }
    outputs
}

/// Batch normalisation (both modes), layer normalisation and dropout: the channel and row
/// kernels and the dropout mask, which is the same hash on both devices.
fn norm_and_dropout_case<B: Backend>(dev: &B) -> Outputs {
    let mut outputs = Outputs::new();
    let x = Tensor::from_vec(data(3 * 5 * 4 * 3, 95), [3, 5, 4, 3], dev);
    let g = Tensor::from_vec(data(x.numel(), 96), x.shape().clone(), dev);
    let mut bn = BatchNorm::new(BatchNormKind::TwoD, 5, BatchNormConfig::default(), dev);
    for training in [true, false] {
        bn.set_training(training);
        let (y, tape) = bn.layer_forward_train(&x).unwrap();
        let grad_x = bn
            .layer_backward(Some(&x), tape, &g, true)
            .unwrap()
            .unwrap();
        let (mean, var) = bn.running_stats().unwrap();
        outputs.push((format!("training {training} output"), y.to_vec()));
        outputs.push((
            format!("training {training} input gradient"),
            grad_x.to_vec(),
        ));
        outputs.push((format!("training {training} running mean"), mean.to_vec()));
        outputs.push((format!("training {training} running var"), var.to_vec()));
    }
    let weight = Tensor::from_vec(data(12, 98), [12], dev);
    let rows = Tensor::from_vec(data(5 * 3 * 12, 99), [5, 3, 12], dev);
    let (y, stats) = rows.try_layer_norm(Some(&weight), None, 1e-5).unwrap();
    let g = Tensor::from_vec(data(y.numel(), 100), y.shape().clone(), dev);
    let grad = g
        .try_layer_norm_backward(&rows, &stats, Some(&weight))
        .unwrap();
    outputs.push(("layer_norm".to_owned(), y.to_vec()));
    outputs.push(("layer_norm rstd".to_owned(), stats.rstd.to_vec()));
    outputs.push(("layer_norm backward".to_owned(), grad.to_vec()));
    let (grad_weight, grad_bias) = g.try_layer_norm_param_grads(&rows, &stats).unwrap();
    outputs.push((
        "layer_norm weight gradient".to_owned(),
        grad_weight.to_vec(),
    ));
    outputs.push(("layer_norm bias gradient".to_owned(), grad_bias.to_vec()));
    let mask = DropoutMask::new(0.3, 1234).unwrap();
    outputs.push(("dropout".to_owned(), x.try_dropout(&mask).unwrap().to_vec()));
    outputs
}

/// Extremes with their indices, narrow and its gradient, cat, `index_select` and
/// `index_add_` (distinct indices: with repeats the GPU adds in no fixed order), `eq`,
/// `permute` and batched products with transposed operands.
fn index_case<B: Backend>(dev: &B) -> Outputs {
    let x = Tensor::from_vec(data(3 * 7 * 5, 97), [3, 7, 5], dev);
    let mut outputs = Outputs::new();
    for dim in 0..3 {
        let (max, argmax) = x.try_max_dim(dim).unwrap();
        let (min, argmin) = x.try_min_dim(dim).unwrap();
        outputs.push((format!("max {dim}"), max.to_vec()));
        outputs.push((format!("argmax {dim}"), argmax.as_tensor().to_vec()));
        outputs.push((format!("min {dim}"), min.to_vec()));
        outputs.push((format!("argmin {dim}"), argmin.as_tensor().to_vec()));
    }
    let narrow = x.try_narrow(1, 2, 4).unwrap();
    let back = narrow.try_narrow_backward(x.shape(), 1, 2).unwrap();
    let cat = Tensor::try_cat(&[&x, &narrow], 1).unwrap();
    let rows = Indices::new(&[4, 0, 6], dev).unwrap();
    let picked = x.try_index_select(1, &rows).unwrap();
    let mut added = Tensor::zeros([3, 7, 5], dev);
    added.try_index_add_(1, &rows, &picked).unwrap();
    let eq = x.try_eq(&added).unwrap();
    let permuted = x.try_permute(&[2, 0, 1]).unwrap();
    let scores = x.try_matmul_with(&x, (false, true)).unwrap();
    let grams = x.try_matmul_with(&x, (true, false)).unwrap();
    let mut causal = x.try_matmul_with(&x, (false, true)).unwrap();
    causal.try_causal_fill_(-7.0).unwrap();
    for (name, tensor) in [
        ("narrow", narrow),
        ("narrow backward", back),
        ("cat", cat),
        ("index_select", picked),
        ("index_add_", added),
        ("eq", eq),
        ("permute", permuted),
        ("batched x x^T", scores),
        ("batched x^T x", grams),
        ("causal fill", causal),
    ] {
        outputs.push((name.to_owned(), tensor.to_vec()));
    }
    outputs
}

/// Three SGD-with-momentum steps of the generated network from the same initial weights: the
/// losses, the prediction and the trained weights. (Not Adam: its first step moves every
/// weight by `lr * sign(grad)`, so a gradient within rounding of zero could flip a weight by
/// `2 lr` between two correct backends.)
fn network_case<B: Backend>(dev: &B) -> Outputs {
    let mut init = Vec::new();
    TwoLayerNet::new(&Cpu, &mut seeded(0)).visit_params(&mut |name, param| {
        let value = param.value();
        init.push((name.to_owned(), value.to_vec(), value.dims().to_vec()));
    });
    let mut net = TwoLayerNet::new(dev, &mut seeded(1));
    net.visit_params_mut(&mut |name, param| {
        let (_, value, dims) = init.iter().find(|(n, ..)| n == name).unwrap();
        param
            .set_value(Tensor::from_vec(value.clone(), dims.clone(), dev))
            .unwrap();
    });
    let x = Tensor::from_vec(data(64 * 1000, 71), [64, 1000], dev);
    let y = Tensor::from_vec(data(64 * 10, 72), [64, 10], dev);
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

parity_test!(softmax_and_its_gradient_match_cpu, softmax_case);
parity_test!(unary_ops_match_cpu, unary_case);
parity_test!(pooling_matches_cpu, pool_case);
parity_test!(convolution_matches_cpu, conv_case);
parity_test!(batch_norm_and_dropout_match_cpu, norm_and_dropout_case);
parity_test!(indexing_matches_cpu, index_case);
parity_test!(broadcast_binary_ops_match_cpu, binary_case);
parity_test!(gemm_with_every_transpose_matches_cpu, gemm_case);
parity_test!(sum_axis_and_transpose_match_cpu, reduce_case);
parity_test!(losses_match_cpu, loss_case);
parity_test!(optimizer_steps_match_cpu, optim_case);
parity_test!(two_layer_net_training_step_matches_cpu, network_case);

/// The device step scalars' own checks (the count, the kernel's block count, an empty
/// parameter), which the parity test makes on the GPU, made on the CPU with no GPU.
#[test]
fn device_step_scalars_count_on_the_cpu() {
    device_scalars_case(&Cpu);
}

#[test]
fn cuda_new_is_an_error_not_a_panic_without_a_device() {
    match Cuda::new(0) {
        Ok(device) => println!("CUDA device present: {}", device.name()),
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains("--features cuda") || message.contains("CUDA"),
                "{message}"
            );
            println!("Cuda::new(0): {message}");
        }
    }
}

/// With `DECLNET_REQUIRE_CUDA=1` a test that would skip for want of a device fails: this
/// binary's own unary parity test, run again with the variable set, must fail here (where it
/// skips) and pass on a GPU host.
#[test]
fn require_cuda_turns_a_skip_into_a_failure() {
    let run = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "unary_ops_match_cpu", "--test-threads=1"])
        .env("DECLNET_REQUIRE_CUDA", "1")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stdout) + String::from_utf8_lossy(&run.stderr);
    assert!(
        log.contains("1 passed") || log.contains("1 failed"),
        "ran one test:\n{log}"
    );
    assert_eq!(
        run.status.success(),
        Cuda::new(0).is_ok(),
        "without a device the test fails, with one it passes:\n{log}"
    );
    if !run.status.success() {
        assert!(log.contains("DECLNET_REQUIRE_CUDA=1"), "{log}");
    }
}
