//! `Conv2d` in `network!` against PyTorch (`tests/fixtures/ops.safetensors`: `F.conv2d` with a
//! 3x3 kernel, plain and with stride 2 and padding 1): the output and the gradients of the
//! input, the weight and the bias, on every device. And what `network!` rewrites around
//! convolutions: a `ReLU` before a max pooling runs after it, computing the same.

mod common;

use common::{Fixture, max_rel_diff, on_every_device};
use declnet::prelude::*;

/// PyTorch's CPU convolution sums in another order (oneDNN); measured at most 1.2e-6 (the
/// plain convolution's input and weight gradients), with values below 1 compared absolutely.
const TOLERANCE: f32 = 2e-6;

network! {
    struct Plain(x: [B, 3, 9, 9]) -> [B, 4, 7, 7] { conv: Conv2d<3, 4, 3> }
}
network! {
    struct Strided(x: [B, 3, 9, 9]) -> [B, 4, 5, 5] { conv: Conv2d<3, 4, 3, stride = 2, padding = 1> }
}

/// Loads fixture `name`'s weight and bias into `conv.weight` / `conv.bias` of `net`, runs it
/// forward and backward, and compares everything with PyTorch.
fn compare<B: Backend, N: Module<B>>(
    name: &str,
    net: &mut N,
    device: &B,
    run: impl Fn(&mut N, &Tensor<B>, &Tensor<B>) -> (Tensor<B>, Tensor<B>),
) {
    let fixture = Fixture::open("ops.safetensors");
    let tensor = |key: &str| fixture.tensor_on(&format!("{name}.{key}"), device);
    net.visit_params_mut(&mut |param_name, param| {
        let key = if param_name.ends_with("weight") {
            "in1"
        } else {
            "in2"
        };
        param.set_value(tensor(key)).unwrap();
    });
    net.zero_grad();
    let (y, grad_x) = run(net, &tensor("in0"), &tensor("grad_out"));
    let mut checks = vec![
        ("output", y.to_vec(), tensor("out").to_vec()),
        (
            "input gradient",
            grad_x.to_vec(),
            tensor("grad_in0").to_vec(),
        ),
    ];
    net.visit_params(&mut |param_name, param| {
        let key = if param_name.ends_with("weight") {
            "grad_in1"
        } else {
            "grad_in2"
        };
        checks.push((
            if key == "grad_in1" {
                "weight gradient"
            } else {
                "bias gradient"
            },
            param.grad().unwrap().to_vec(),
            tensor(key).to_vec(),
        ));
    });
    for (what, actual, expected) in checks {
        let diff = max_rel_diff(&actual, &expected, 1.0);
        println!("{name} {what}: {diff:e}");
        assert!(diff <= TOLERANCE, "{name} {what} differs by {diff:e}");
    }
}

on_every_device!(conv2d_matches_pytorch, conv2d);

fn conv2d<B: Backend>(device: &B) {
    let run = |net: &mut Plain<B>, x: &Tensor<B>, g: &Tensor<B>| {
        let (y, tape) = net.forward_train(x).unwrap();
        (y, net.backward(tape, g).unwrap())
    };
    compare(
        "conv2d",
        &mut Plain::new(device, &mut seeded(0)),
        device,
        run,
    );
    let run = |net: &mut Strided<B>, x: &Tensor<B>, g: &Tensor<B>| {
        let (y, tape) = net.forward_train(x).unwrap();
        (y, net.backward(tape, g).unwrap())
    };
    compare(
        "conv2d_s2_p1",
        &mut Strided::new(device, &mut seeded(0)),
        device,
        run,
    );
}

network! {
    struct GlobalPool(x: [B, 3, 6, 6]) -> [B, 4] {
        conv: Conv2d<3, 4, 3, padding = 1>, AdaptiveAvgPool2d<1, 1>, Flatten
    }
}

/// `AdaptiveAvgPool2d<1, 1>` is the mean of each channel's feature map, forward and backward.
#[test]
fn adaptive_average_pooling_is_the_mean_of_each_map() {
    let mut net = GlobalPool::new(&Cpu, &mut seeded(0));
    let x = Tensor::randn([2, 3, 6, 6], &Cpu, &mut seeded(1));
    let features = net.conv.forward(&x).unwrap();
    let means = features
        .try_sum_dim(3, false)
        .unwrap()
        .try_sum_dim(2, false)
        .unwrap();
    let expected: Vec<f32> = means.to_vec().iter().map(|v| v / 36.0).collect();
    let (y, tape) = net.forward_train(&x).unwrap();
    assert!(max_rel_diff(&y.to_vec(), &expected, 1.0) < 1e-6);
    assert!(GlobalPool::<Cpu>::summary().contains("AdaptiveAvgPool2d<1, 1>"));
    // Each map element gets 1/36 of its channel's output gradient.
    let g = Tensor::ones([2, 4], &Cpu);
    let grad_x = net.backward(tape, &g).unwrap();
    let conv_grad = net
        .conv
        .backward(&x, &Tensor::full([2, 4, 6, 6], 1.0 / 36.0, &Cpu), true);
    let conv_grad = conv_grad.unwrap().unwrap();
    assert!(max_rel_diff(&grad_x.to_vec(), &conv_grad.to_vec(), 1.0) < 1e-6);
}

network! {
    /// A `ReLU` read only by a max pooling: `network!` pools first.
    struct ReluThenPool(x: [B, 2, 6, 6]) -> [B, 2, 3, 3] { ReLU, MaxPool2d<2> }
}
network! {
    /// The same `ReLU` read twice, so applied first as declared: twice the output.
    struct ReluReadTwice { pool: MaxPool2d<2> }
    fn forward(x: [B, 2, 6, 6]) -> [B, 2, 3, 3] {
        let h = x.relu();
        pool(h) + pool(h)
    }
}

/// Pooling before the `ReLU` computes what the declared order does, bit for bit, gradient
/// included: windows all negative, with a zero maximum, with tied maxima, and mixed. And
/// `summary()` shows the declared order.
#[test]
fn relu_then_max_pool_is_the_declared_order() {
    let rng = &mut seeded(7);
    let mut x = Tensor::randn([3, 2, 6, 6], &Cpu, rng).to_vec();
    // The first three windows: all negative, a zero maximum (tied), a positive one (tied).
    let windows = [
        [-1.0, -2.0, -0.25, -3.0],
        [0.0, -1.0, 0.0, -4.0],
        [1.5, 1.5, 1.5, -1.0],
    ];
    for (w, [upper_left, upper_right, lower_left, lower_right]) in windows.into_iter().enumerate() {
        (x[2 * w], x[2 * w + 1]) = (upper_left, upper_right);
        (x[6 + 2 * w], x[7 + 2 * w]) = (lower_left, lower_right);
    }
    let x = Tensor::from_vec(x, [3, 2, 6, 6], &Cpu);
    let (mut pooled, mut twice) = (ReluThenPool::new(&Cpu, rng), ReluReadTwice::new(&Cpu, rng));
    let grad_out = Tensor::randn([3, 2, 3, 3], &Cpu, rng);
    let (y, tape) = pooled.forward_train(&x).unwrap();
    let grad_x = pooled.backward(tape, &grad_out).unwrap();
    let (y2, tape) = twice.forward_train(&x).unwrap();
    let grad_x2 = twice.backward(tape, &grad_out).unwrap();
    let doubled = |t: &Tensor<Cpu>| t.to_vec().iter().map(|v| 2.0 * v).collect::<Vec<f32>>();
    assert_eq!(doubled(&y), y2.to_vec());
    assert_eq!(doubled(&grad_x), grad_x2.to_vec());
    assert!(grad_x.to_vec().iter().any(|&g| g != 0.0));
    let summary = ReluThenPool::<Cpu>::summary();
    let relu = summary.find("ReLU").unwrap();
    assert!(relu < summary.find("MaxPool2d<2>").unwrap(), "{summary}");
    assert!(summary[relu..].contains("[B, 2, 6, 6]"), "{summary}");
}
