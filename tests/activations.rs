//! Elementwise layers and methods of `network!`, `Flatten` and pooling, against PyTorch (`tests/fixtures/ops.safetensors`:
//! each op's output and input gradient for a random upstream gradient), on every device.

mod common;

use common::{Fixture, max_rel_diff, on_every_device};
use declnet::prelude::*;

/// Outputs and gradients must match PyTorch to this relative error (with values below 1
/// compared absolutely): both compute in f32, and `exp`, `erf` and `tanh` differ by an ulp or
/// two between implementations (measured on the CPU: at most 2.1e-7, GELU's gradient).
const TOLERANCE: f32 = 1e-6;

network! {
    struct ReluLayer(x: [B, 7]) -> [B, 7] { ReLU }
}
network! {
    struct SigmoidLayer(x: [B, 7]) -> [B, 7] { Sigmoid }
}
network! {
    struct TanhLayer(x: [B, 7]) -> [B, 7] { Tanh }
}
network! {
    struct GeluLayer(x: [B, 7]) -> [B, 7] { GELU }
}
network! {
    struct SiluLayer(x: [B, 7]) -> [B, 7] { SiLU }
}
network! {
    /// PyTorch's default slope, 0.01, is the fixture's.
    struct LeakyReluLayer(x: [B, 7]) -> [B, 7] { LeakyReLU }
}
network! {
    struct FlattenLayer(x: [B, 3, 4, 4]) -> [B, 48] { Flatten }
}
network! {
    struct MaxPool(x: [B, 3, 8, 8]) -> [B, 3, 4, 4] { MaxPool2d<2> }
}
network! {
    struct MaxPoolK3S2(x: [B, 3, 9, 9]) -> [B, 3, 4, 4] { MaxPool2d<3, 2> }
}
network! {
    struct AvgPool(x: [B, 3, 8, 8]) -> [B, 3, 4, 4] { AvgPool2d<2> }
}
network! {
    struct Exp {}
    fn forward(x: [B, 7]) -> [B, 7] {
        x.exp()
    }
}
network! {
    struct Log {}
    fn forward(x: [B, 7]) -> [B, 7] {
        log(x)
    }
}
network! {
    struct Square {}
    fn forward(x: [B, 7]) -> [B, 7] {
        x.pow(2.0)
    }
}

/// Runs network type `$net` forward and backward on fixture entry `$name` and compares both
/// with PyTorch's.
macro_rules! compare {
    ($net:ident, $name:literal, $device:expr, $fixture:expr) => {{
        let fixture = $fixture;
        let device = $device;
        let net = &mut $net::new(device, &mut seeded(0));
        let x = fixture.tensor_on(concat!($name, ".in0"), device);
        let grad_out = fixture.tensor_on(concat!($name, ".grad_out"), device);
        let (y, tape) = net.forward_train(&x).unwrap();
        let grad = net.backward(tape, &grad_out).unwrap();
        let out = fixture.tensor(concat!($name, ".out"));
        let grad_in = fixture.tensor(concat!($name, ".grad_in0"));
        let value_diff = max_rel_diff(&y.to_vec(), &out.to_vec(), 1.0);
        let grad_diff = max_rel_diff(&grad.to_vec(), &grad_in.to_vec(), 1.0);
        println!("{}: value {value_diff:e}, gradient {grad_diff:e}", $name);
        assert!(
            value_diff <= TOLERANCE,
            "{} value differs by {value_diff:e}",
            $name
        );
        assert!(
            grad_diff <= TOLERANCE,
            "{} gradient differs by {grad_diff:e}",
            $name
        );
    }};
}

on_every_device!(elementwise_ops_match_pytorch, elementwise_ops);

fn elementwise_ops<B: Backend>(device: &B) {
    let fixture = &Fixture::open("ops.safetensors");
    compare!(ReluLayer, "relu", device, fixture);
    compare!(SigmoidLayer, "sigmoid", device, fixture);
    compare!(TanhLayer, "tanh", device, fixture);
    compare!(GeluLayer, "gelu", device, fixture);
    compare!(SiluLayer, "silu", device, fixture);
    compare!(LeakyReluLayer, "leaky_relu", device, fixture);
    compare!(Exp, "exp", device, fixture);
    compare!(Log, "log", device, fixture);
    compare!(Square, "pow2", device, fixture);
    compare!(FlattenLayer, "flatten", device, fixture);
    compare!(MaxPool, "max_pool2d", device, fixture);
    compare!(MaxPoolK3S2, "max_pool2d_k3s2", device, fixture);
    compare!(AvgPool, "avg_pool2d", device, fixture);
}
