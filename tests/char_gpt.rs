//! The character GPT example, shortened: 30 steps must take the validation loss well below a
//! uniform guess (ln 76 = 4.33 nats), sampling must extend the prompt, and bad input (a
//! character outside the vocabulary, a sequence longer than the position table, a bad
//! temperature) must be errors, not panics.

#[path = "../examples/09_char_gpt.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;

use declnet::distributed::{DataParallel, Local};
use declnet::prelude::*;

#[test]
fn a_short_run_learns_and_samples() {
    let (vocab, train, validation) = example::load_text().unwrap();
    assert!(
        train.len().abs_diff(9 * validation.len()) < 10,
        "a 90/10 split"
    );
    let rng = &mut seeded(0);
    let net = example::CharGpt::new(&Cpu, rng);
    let mut net = DataParallel::new(net, Local).unwrap();
    let mut optimizer = AdamW::new(AdamWConfig {
        lr: 5e-3,
        betas: (0.9, 0.95),
        weight_decay: 0.1,
        ..AdamWConfig::default()
    });
    let before = example::evaluate(&net, &validation, 2, &Cpu).unwrap();
    for _ in 0..30 {
        example::train_step(&mut net, &mut optimizer, &train, &Cpu, rng).unwrap();
    }
    let after = example::evaluate(&net, &validation, 2, &Cpu).unwrap();
    println!("validation loss {before} -> {after} after 30 steps");
    assert!(before > 4.0 && after < 3.0, "{before} -> {after}");

    let text = example::generate(&net, &vocab, "ROMEO.", 20, 0.8, &Cpu, rng).unwrap();
    assert!(
        text.starts_with("ROMEO.") && text.chars().count() == 26,
        "{text:?}"
    );

    let error = example::generate(&net, &vocab, "ROMEO\u{e9}", 5, 0.8, &Cpu, rng).unwrap_err();
    assert_eq!(
        error.to_string(),
        "usage: the character '\u{e9}' is not in the vocabulary"
    );
    let error = example::generate(&net, &vocab, "A", 5, 0.0, &Cpu, rng).unwrap_err();
    assert!(error.to_string().contains("temperature"), "{error}");

    let long = Indices::with_shape(&[0; 65], [1, 65], &Cpu).unwrap();
    let error = net
        .forward(&long, &example::positions(65, &Cpu).unwrap())
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "usage: Embedding(64, 128): index 64 is out of range for a table of 64 rows"
    );
}
