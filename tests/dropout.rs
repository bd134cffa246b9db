//! `Dropout` in `network!` and train/eval mode: training-mode passes drop with masks from the
//! network's seed, backward uses the forward pass's mask, and `eval()` reaches nested networks.

use declnet::prelude::*;

network! {
    struct Regularised(x: [N, 6]) -> [N, 3] {
        fc1: Linear<6, 16>, ReLU, drop: Dropout<0.5>, fc2: Linear<16, 3>
    }
}

network! {
    struct Outer(x: [N, 6]) -> [N, 3] { inner: Regularised, Dropout<0.25> }
}

fn input() -> Tensor {
    Tensor::randn([4, 6], &Cpu, &mut seeded(9))
}

#[test]
fn training_mode_drops_and_eval_mode_passes_through() {
    let mut net = Regularised::new(&Cpu, &mut seeded(1));
    let x = input();
    let (a, b) = (net.forward(&x).unwrap(), net.forward(&x).unwrap());
    assert_ne!(a.to_vec(), b.to_vec(), "each pass draws a new mask");
    net.eval();
    let hidden = net.fc1.forward(&x).unwrap().clamp_min(0.0);
    let plain = net.fc2.forward(&hidden).unwrap().to_vec();
    assert_eq!(net.forward(&x).unwrap().to_vec(), plain);
    net.train();
    assert_ne!(net.forward(&x).unwrap().to_vec(), plain);
}

#[test]
fn eval_reaches_nested_networks() {
    let mut net = Outer::new(&Cpu, &mut seeded(2));
    let x = input();
    let summary = Outer::<Cpu>::summary();
    assert!(summary.contains("Dropout<0.25>"), "{summary}");
    net.eval();
    let first = net.forward(&x).unwrap().to_vec();
    assert_eq!(net.forward(&x).unwrap().to_vec(), first);
    assert_eq!(
        net.inner.forward(&x).unwrap().to_vec(),
        first,
        "the outer dropout passes through too"
    );
}

/// The input gradient against central differences through the same mask: a network built from
/// the same seed draws the same first mask.
#[test]
fn backward_uses_the_forward_mask() {
    let fresh = || Regularised::new(&Cpu, &mut seeded(3));
    let x = input();
    let weights = Tensor::randn([4, 3], &Cpu, &mut seeded(4));
    let mut net = fresh();
    let (_, tape) = net.forward_train(&x).unwrap();
    let grad = net.backward(tape, &weights).unwrap().to_vec();
    let data = x.to_vec();
    let weighted = |data: &[f32]| -> f64 {
        let y = fresh()
            .forward(&Tensor::from_slice(data, [4, 6], &Cpu))
            .unwrap();
        y.to_vec()
            .iter()
            .zip(weights.to_vec())
            .map(|(y, w)| f64::from(y * w))
            .sum()
    };
    let mut dropped = 0;
    for i in 0..data.len() {
        let at = |delta: f32| {
            let mut data = data.clone();
            data[i] += delta;
            weighted(&data)
        };
        let numeric = ((at(1e-3) - at(-1e-3)) / 2e-3) as f32;
        assert!(
            (grad[i] - numeric).abs() < 1e-2 * numeric.abs().max(1.0),
            "input {i}: {} vs {numeric}",
            grad[i]
        );
        dropped += usize::from(grad[i] == 0.0);
    }
    assert!(dropped < data.len(), "some gradient flows");
}
