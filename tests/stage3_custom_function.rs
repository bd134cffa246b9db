//! Tutorial stage 3 against PyTorch: the network using the custom `MyReLU` function computes
//! what stage 2 computes, so it replays fixture `s2_autograd`; and `MyReLU`'s hand-written
//! backward pass passes a finite-difference check.

mod common;

#[path = "../examples/03_custom_function.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;

use common::{Fixture, assert_losses_match, on_every_device};
use declnet::prelude::*;
use declnet::runtime::function::gradcheck;

/// As in stage 2 (the same maths): measured 7.6e-3 relative at the end of a fall from 3e7
/// to 1e-4, from GEMM summation order. 2.5x headroom.
const LATE_TOLERANCE: f32 = 2e-2;

on_every_device!(custom_function_network_matches_pytorch, check);

fn check<B: Backend>(device: &B) {
    let fixture = Fixture::open("seed_stages.safetensors");
    let (x, y) = fixture.data_on(device);
    let mut net = example::CustomReluNet::new(device, &mut seeded(0));
    net.w1
        .set_value(fixture.tensor_on("s1_tensor.w1_init", device))
        .unwrap();
    net.w2
        .set_value(fixture.tensor_on("s1_tensor.w2_init", device))
        .unwrap();
    let losses: Vec<f32> = (0..500)
        .map(|_| {
            example::train_step(&mut net, &x, &y, example::LEARNING_RATE)
                .unwrap()
                .item()
        })
        .collect();
    assert_losses_match(
        &losses,
        &fixture.tensor("s2_autograd.losses").to_vec(),
        LATE_TOLERANCE,
    );
}

#[test]
fn my_relu_backward_passes_gradcheck() {
    // Inputs away from the kink at 0, where finite differences are not defined.
    let x = Tensor::from_vec(vec![-1.2, -0.4, 0.3, 0.9, 2.0, -3.0], [2, 3], &Cpu);
    let report = gradcheck(&example::MyReLU, &x, 1e-3).unwrap();
    assert!(report.max_error < 1e-3, "{report:?}");
}
