//! The digits CNN example, shortened: four epochs on the CPU must reach 90% on the held-out
//! fifth (the full ten reach about 98%), and the trained network must save and load back
//! (running statistics included) to the same accuracy; `--plot` writes a PNG.

#[path = "../examples/08_digits_cnn.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;

use declnet::distributed::{DataParallel, Local};
use declnet::prelude::*;

#[test]
fn a_short_run_learns_the_digits_and_round_trips_through_a_file() {
    let (train, test) = example::load_digits().unwrap().split(0.2, &mut seeded(0));
    assert_eq!((train.len(), test.len()), (1438, 359));
    let rng = &mut seeded(1);
    let net = example::DigitsCnn::new(&Cpu, rng);
    let mut net = DataParallel::new(net, Local).unwrap();
    let mut optimizer = example::optimizer();
    net.eval();
    let before = example::evaluate(&net, &test, &Cpu).unwrap();
    let hidden = indicatif::ProgressBar::hidden();
    for _ in 0..4 {
        example::train_epoch(&mut net, &mut optimizer, &train, &Cpu, rng, &hidden).unwrap();
    }
    net.eval();
    let after = example::evaluate(&net, &test, &Cpu).unwrap();
    println!("test accuracy: {before} before training, {after} after 4 epochs");
    assert!(after >= 0.9, "test accuracy {after} after 4 epochs");
    let path =
        std::env::temp_dir().join(format!("declnet_digits_{}.safetensors", std::process::id()));
    net.save(&path).unwrap();
    let mut loaded = example::DigitsCnn::load(&Cpu, &path).unwrap();
    loaded.eval();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(example::evaluate(&loaded, &test, &Cpu).unwrap(), after);
}

#[test]
fn a_missing_tensor_or_a_float_label_is_an_error() {
    let path = example::data_path();
    let error = declnet::io::load_indices(&path, "images").unwrap_err();
    assert!(error.to_string().contains("F32"), "{error}");
    let error = declnet::io::load_tensor(&path, "pixels", &Cpu).unwrap_err();
    assert_eq!(
        error.to_string(),
        "usage: load_tensor: the file has no tensor `pixels`; it holds `images`, `labels`"
    );
}

#[test]
fn plots_are_pngs_and_a_misshaped_conv_weight_names_both_shapes() {
    let path = std::env::temp_dir().join(format!("declnet_plot_{}.png", std::process::id()));
    let curves = [
        example::plot::Curve {
            name: "training loss",
            values: &[1.5, 0.5, 0.25],
        },
        example::plot::Curve {
            name: "test accuracy",
            values: &[0.5, 0.9, 0.95],
        },
    ];
    example::plot::plot_curves(&path, "epoch", &curves).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    // A state dict whose first conv has a 5x5 kernel: both shapes are named, nothing changes.
    let net = example::DigitsCnn::new(&Cpu, &mut seeded(0));
    let mut state = net.state_dict().unwrap();
    assert_eq!(
        state.len(),
        2 + 5 + 2 + 5 + 2,
        "conv, bn (3 buffers), conv, bn, fc"
    );
    state[0].1 = Tensor::zeros([16, 1, 5, 5], &Cpu);
    let refs: Vec<(&str, &Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut target = example::DigitsCnn::new(&Cpu, &mut seeded(1));
    let before = target.conv1.weight.value().to_vec();
    let error = target.load_state_dict(&refs).unwrap_err().to_string();
    assert!(
        error.contains("conv1.weight")
            && error.contains("[16, 1, 5, 5]")
            && error.contains("[16, 1, 3, 3]"),
        "{error}"
    );
    assert_eq!(target.conv1.weight.value().to_vec(), before);
    state[0].1 = net.conv1.weight.value().try_clone().unwrap();
    let refs: Vec<(&str, &Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
    target.load_state_dict(&refs).unwrap();
    assert_eq!(target.bn2.num_batches_tracked(), 0);
}
