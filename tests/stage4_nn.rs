//! Tutorial stage 4 against PyTorch: the sequential `network!` (`Linear`, `ReLU`, `Linear`) with the
//! manual update over `params_mut()` replays fixture `s4_nn` from its initial weights.

mod common;

#[path = "../examples/04_nn.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;

use common::{Fixture, assert_losses_match, on_every_device};
use declnet::prelude::*;

/// Later losses drift with GEMM summation order (faer's differs from PyTorch's) while the loss
/// falls from ~650 to ~2e-5: measured 1.6e-4 relative at worst. About 5x headroom.
const LATE_TOLERANCE: f32 = 2e-3;

on_every_device!(sequential_network_matches_pytorch, check);

fn check<B: Backend>(device: &B) {
    let fixture = Fixture::open("seed_stages.safetensors");
    let (x, y) = fixture.data_on(device);
    let mut net = example::TwoLayerNet::new(device, &mut seeded(0));
    for (field, layer) in [(&mut net.layer0, "linear1"), (&mut net.layer2, "linear2")] {
        field
            .weight
            .set_value(fixture.tensor_on(&format!("s4_nn.init.{layer}.weight"), device))
            .unwrap();
        let bias = field.try_bias_mut().unwrap();
        bias.set_value(fixture.tensor_on(&format!("s4_nn.init.{layer}.bias"), device))
            .unwrap();
    }
    let losses: Vec<f32> = (0..500)
        .map(|_| {
            example::train_step(&mut net, &x, &y, example::LEARNING_RATE)
                .unwrap()
                .item()
        })
        .collect();
    assert_losses_match(
        &losses,
        &fixture.tensor("s4_nn.losses").to_vec(),
        LATE_TOLERANCE,
    );
}

#[test]
fn parameters_have_sequential_state_dict_names() {
    let net = example::TwoLayerNet::new(&Cpu, &mut seeded(0));
    let names: Vec<String> = net
        .params()
        .into_iter()
        .map(|(name, _)| name.into())
        .collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    assert_eq!(net.param_names(), names);
    assert_eq!(example::TwoLayerNet::<Cpu>::NUM_PARAMS, 101_110);
    assert_eq!(net.num_params(), 101_110);
}
