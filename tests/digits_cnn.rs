//! The digits CNN example, shortened: four epochs on the CPU must reach 90% on the held-out
//! fifth (the full ten reach about 98.9%), and the trained network must save and load back to
//! the same accuracy.

#[path = "../examples/08_digits_cnn.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;

use declnet::prelude::*;

#[test]
fn a_short_run_learns_the_digits_and_round_trips_through_a_file() {
    let (train, test) = example::load_digits().unwrap().split(0.2, &mut seeded(0));
    assert_eq!((train.len(), test.len()), (1438, 359));
    let rng = &mut seeded(1);
    let mut net = example::DigitsCnn::new(&Cpu, rng);
    let mut optimizer = example::optimizer();
    let before = example::evaluate(&net, &test, &Cpu).unwrap();
    for _ in 0..4 {
        example::train_epoch(&mut net, &mut optimizer, &train, &Cpu, rng).unwrap();
    }
    let after = example::evaluate(&net, &test, &Cpu).unwrap();
    println!("test accuracy: {before} before training, {after} after 4 epochs");
    assert!(after >= 0.9, "test accuracy {after} after 4 epochs");
    let path =
        std::env::temp_dir().join(format!("declnet_digits_{}.safetensors", std::process::id()));
    net.save(&path).unwrap();
    let loaded = example::DigitsCnn::load(&Cpu, &path).unwrap();
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
