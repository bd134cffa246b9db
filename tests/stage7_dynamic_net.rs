//! Tutorial stage 7 against PyTorch: `DynamicNet` (a loop reusing `middle_linear` 0-3 times
//! per step) with SGD and momentum replays fixture `s7_dynamic`, including its recorded
//! repeats. Steps with 0 repeats leave `middle_linear` without a gradient; PyTorch's SGD then
//! neither moves it nor decays its momentum, and neither may we.

mod common;

#[path = "../examples/07_dynamic_net.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;

use common::{Fixture, assert_losses_match, on_every_device};
use declnet::prelude::*;

/// Later losses drift with GEMM summation order while the loss falls from ~650 to ~0.3:
/// measured 1.1e-5 relative at worst (the loss stays large here). About 9x headroom.
const LATE_TOLERANCE: f32 = 1e-4;

on_every_device!(dynamic_net_matches_pytorch, check);

fn check<B: Backend>(device: &B) {
    let fixture = Fixture::open("seed_stages.safetensors");
    let (x, y) = fixture.data_on(device);
    let mut net = example::DynamicNet::new(device, &mut seeded(0));
    fixture.init_params(&mut net, "s7_dynamic");
    let repeats = fixture.i64s("s7_dynamic.repeats");
    assert!(
        repeats.contains(&0),
        "the replay must include steps without the middle layer"
    );
    let mut sgd = example::optimizer();
    let losses: Vec<f32> = repeats
        .iter()
        .map(|&r| {
            let r = usize::try_from(r).unwrap();
            example::train_step(&mut net, &mut sgd, &x, &y, r)
                .unwrap()
                .item()
        })
        .collect();
    assert_losses_match(
        &losses,
        &fixture.tensor("s7_dynamic.losses").to_vec(),
        LATE_TOLERANCE,
    );
}

#[test]
fn zero_repeats_leave_the_middle_layer_without_gradient() {
    let rng = &mut seeded(1);
    let mut net = example::DynamicNet::new(&Cpu, rng);
    let x = Tensor::randn([4, 1000], &Cpu, rng);
    let (out, tape) = net.forward_train(&x, 0).unwrap();
    net.backward_params(tape, &Tensor::ones(out.shape().clone(), &Cpu))
        .unwrap();
    assert!(net.middle_linear.weight.grad().is_none());
    assert!(net.input_linear.weight.grad().is_some());
}

/// `summary()` lists the layers in the order `forward` applies them, the activations it applies
/// as methods, and that the middle layer runs in a loop.
#[test]
fn summary_shows_the_loop_and_the_activations() {
    let summary = example::DynamicNet::<Cpu>::summary();
    println!("{summary}");
    let row = |start: &str| {
        summary
            .lines()
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` row in\n{summary}"))
    };
    assert!(row("middle_linear").contains("Linear<100, 100>, in a loop or branch"));
    assert!(row("input_linear").contains("[N, 100]"));
    let activations = summary
        .lines()
        .filter(|line| line.contains(".clamp_min(0.0)"))
        .count();
    assert_eq!(activations, 2, "{summary}");
    let order: Vec<&str> = summary
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.ends_with("_linear"))
        .collect();
    assert_eq!(order, ["input_linear", "middle_linear", "output_linear"]);
}
