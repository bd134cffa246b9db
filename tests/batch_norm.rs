//! `BatchNorm` and train/eval mode against PyTorch: `F.batch_norm` in training mode
//! (`ops.safetensors`), and `cnn_digits.safetensors`, a conv + `BatchNorm2d` + pool CNN
//! trained 40 SGD steps from PyTorch's initial state and then run in eval mode: the losses,
//! the final weights and running statistics, and the eval-mode logits.

mod common;

use common::{Fixture, assert_losses_match, max_rel_diff, on_every_device};
use declnet::prelude::*;
use declnet::runtime::layers::{BatchNorm, BatchNormConfig, BatchNormKind};
use declnet::runtime::network::Layer;

network! {
    /// The reference script's `Cnn`.
    struct DigitsBn(x: [N, 1, 8, 8]) -> [N, 10] {
        conv1: Conv2d<1, 16, 3, padding = 1>, bn1: BatchNorm2d<16>, ReLU, MaxPool2d<2>,
        conv2: Conv2d<16, 32, 3, padding = 1>, ReLU, MaxPool2d<2>,
        Flatten, fc: Linear<128, 10>
    }
}

on_every_device!(batch_norm_matches_pytorch, batch_norm_op);

fn batch_norm_op<B: Backend>(device: &B) {
    let fixture = Fixture::open("ops.safetensors");
    let tensor = |key: &str| fixture.tensor_on(&format!("batch_norm_train.{key}"), device);
    let mut bn = BatchNorm::new(BatchNormKind::OneD, 5, BatchNormConfig::default(), device);
    bn.weight
        .as_mut()
        .unwrap()
        .set_value(tensor("in1"))
        .unwrap();
    bn.bias.as_mut().unwrap().set_value(tensor("in2")).unwrap();
    let x = tensor("in0");
    let (y, tape) = bn.layer_forward_train(&x).unwrap();
    let grad_x = bn
        .layer_backward(Some(&x), tape, &tensor("grad_out"), true)
        .unwrap()
        .unwrap();
    let checks = [
        ("output", y, "out"),
        ("input gradient", grad_x, "grad_in0"),
        (
            "weight gradient",
            bn.weight
                .as_ref()
                .unwrap()
                .grad()
                .unwrap()
                .try_clone()
                .unwrap(),
            "grad_in1",
        ),
        (
            "bias gradient",
            bn.bias
                .as_ref()
                .unwrap()
                .grad()
                .unwrap()
                .try_clone()
                .unwrap(),
            "grad_in2",
        ),
    ];
    for (what, actual, key) in checks {
        let diff = max_rel_diff(&actual.to_vec(), &tensor(key).to_vec(), 1.0);
        println!("batch_norm {what}: {diff:e}");
        assert!(diff <= 2e-6, "batch_norm {what} differs by {diff:e}");
    }
}

on_every_device!(cnn_with_batch_norm_trains_like_pytorch, cnn_digits);

fn cnn_digits<B: Backend>(device: &B) {
    let path = common::fixture_path("cnn_digits.safetensors");
    let fixture = Fixture::open("cnn_digits.safetensors");
    let mut net = DigitsBn::new(device, &mut seeded(0));
    net.load_with(&path, |name| format!("init.{name}")).unwrap();
    let images = fixture.tensor("images").to_vec();
    let labels: Vec<usize> = fixture
        .i64s("labels")
        .iter()
        .map(|&label| usize::try_from(label).unwrap())
        .collect();
    let batch = |step: usize| {
        let start = (step * 64) % 256;
        let x = Tensor::from_slice(
            &images[start * 64..(start + 64) * 64],
            [64, 1, 8, 8],
            device,
        );
        (x, Labels::new(&labels[start..start + 64], device))
    };
    let mut optimizer = Sgd::new(SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        ..SgdConfig::default()
    });
    let loss_fn = CrossEntropyLoss::default();
    let losses: Vec<f32> = (0..40)
        .map(|step| {
            let (x, labels) = batch(step);
            net.train_step(&x, &labels, &loss_fn, &mut optimizer)
                .unwrap()
                .item()
        })
        .collect();
    assert_losses_match(&losses, &fixture.tensor("train.losses").to_vec(), 1e-4);

    // The trained state: every parameter and buffer, under PyTorch's names.
    let mut worst = 0.0f32;
    net.visit_params(&mut |name, param| {
        let diff = max_rel_diff(
            &param.value().to_vec(),
            &fixture.tensor(&format!("final.{name}")).to_vec(),
            1.0,
        );
        worst = worst.max(diff);
        assert!(diff <= 1e-5, "final {name} differs by {diff:e}");
    });
    let (mean, var) = net.bn1.running_stats().unwrap();
    for (name, actual) in [("running_mean", mean), ("running_var", var)] {
        let expected = fixture.tensor(&format!("final.bn1.{name}")).to_vec();
        let diff = max_rel_diff(&actual.to_vec(), &expected, 1.0);
        worst = worst.max(diff);
        assert!(diff <= 1e-5, "final bn1.{name} differs by {diff:e}");
    }
    assert_eq!(
        net.bn1.num_batches_tracked(),
        fixture.i64s("final.bn1.num_batches_tracked")[0]
    );
    println!("final state: worst relative difference {worst:e}");

    net.eval();
    let (x, _) = batch(0);
    let logits = net.forward(&x).unwrap().to_vec();
    let diff = max_rel_diff(&logits, &fixture.tensor("eval.logits").to_vec(), 1.0);
    println!("eval logits: {diff:e}");
    assert!(diff <= 1e-4, "eval-mode logits differ by {diff:e}");
    assert_eq!(
        net.bn1.num_batches_tracked(),
        40,
        "eval mode updates nothing"
    );
}

/// A saved network keeps its buffers: a reload in eval mode gives the same logits, and the
/// file has PyTorch's `num_batches_tracked` as an `I64` scalar.
#[test]
fn buffers_are_saved_and_loaded() {
    let mut net = DigitsBn::new(&Cpu, &mut seeded(3));
    let x = Tensor::randn([8, 1, 8, 8], &Cpu, &mut seeded(4));
    for _ in 0..3 {
        // A training-mode forward pass updates the running statistics, as in PyTorch.
        net.forward(&x).unwrap();
    }
    net.eval();
    let path = std::env::temp_dir().join("declnet-test-batch-norm-buffers.safetensors");
    net.save(&path).unwrap();
    let mut loaded = DigitsBn::load(&Cpu, &path).unwrap();
    loaded.eval();
    assert_eq!(loaded.bn1.num_batches_tracked(), 3);
    assert_eq!(
        loaded.forward(&x).unwrap().to_vec(),
        net.forward(&x).unwrap().to_vec()
    );
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let count = file.tensor("bn1.num_batches_tracked").unwrap();
    assert_eq!(count.dtype(), safetensors::Dtype::I64);
    assert_eq!(count.shape(), [0usize; 0]);
    assert_eq!(count.data(), 3i64.to_le_bytes());
    std::fs::remove_file(&path).ok();
}

/// Eval mode normalises with the running statistics, so a sample's output does not depend on
/// the rest of its batch, and a batch of one vector works.
#[test]
fn eval_mode_uses_running_statistics() {
    let mut net = DigitsBn::new(&Cpu, &mut seeded(5));
    let x = Tensor::randn([4, 1, 8, 8], &Cpu, &mut seeded(6));
    let one = Tensor::from_slice(&x.to_vec()[..64], [1, 1, 8, 8], &Cpu);
    let alone = net.forward(&one).unwrap().to_vec();
    let together = net.forward(&x).unwrap().to_vec();
    assert_ne!(alone, together[..10], "training mode uses the batch");
    net.eval();
    let alone = net.forward(&one).unwrap().to_vec();
    let together = net.forward(&x).unwrap().to_vec();
    // Equal up to the GEMMs' blocking, which depends on the batch size.
    assert!(max_rel_diff(&alone, &together[..10], 1.0) < 1e-6);

    let mut bn = BatchNorm::new(BatchNormKind::OneD, 3, BatchNormConfig::default(), &Cpu);
    let row = Tensor::ones([1, 3], &Cpu);
    let error = bn.layer_forward(&row).unwrap_err();
    assert_eq!(
        error.to_string(),
        "usage: BatchNorm1d: expected more than 1 value per channel when training, got input [1, 3]"
    );
    bn.eval();
    let y = bn.layer_forward(&row).unwrap().to_vec();
    let expected = 1.0 / (1.0f32 + 1e-5).sqrt();
    assert_eq!(y, [expected; 3]);
    let error = bn.layer_forward(&Tensor::ones([2, 4], &Cpu)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "usage: BatchNorm1d(3) expects input [N, 3] or [N, 3, L], found [2, 4]"
    );
}
