//! `backward_params_notify`: every field is announced once, after its gradients are final
//! (weight sharing, a run-time loop, nested networks and a list of blocks), in the order the
//! backward pass finishes them; what `DataParallel::backward_synced` relies on to start
//! all-reduces early.

#[path = "../examples/02_autograd.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod raw;

#[path = "../examples/07_dynamic_net.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod dynamic;

#[path = "../examples/09_char_gpt.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod gpt;

use declnet::prelude::*;

/// Each parameter's gradient, by name (`NaN`s for none).
fn grads<M: Module<Cpu>>(net: &M, prefix: Option<&str>) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    net.visit_params(&mut |name, param| {
        let named = prefix.is_none_or(|prefix| {
            name.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        });
        if named {
            let numel = param.value().numel();
            let grad = param.grad().map_or(vec![f32::NAN; numel], Tensor::to_vec);
            out.push((name.to_owned(), grad));
        }
    });
    out
}

/// Runs `backward` with a callback that snapshots each announced field's gradients, then
/// checks the snapshots against the final gradients (bit for bit), that every parameter was
/// announced exactly once, and returns the announced prefixes in order.
fn announced<M: Module<Cpu>>(
    net: &mut M,
    backward: impl FnOnce(&mut M, &mut dyn FnMut(&M, &str) -> Result<()>) -> Result<()>,
) -> Vec<String> {
    let mut snapshots = Vec::new();
    backward(net, &mut |net, prefix| {
        snapshots.push((prefix.to_owned(), grads(net, Some(prefix))));
        Ok(())
    })
    .unwrap();
    let finals = grads(net, None);
    let mut seen: Vec<&str> = Vec::new();
    for (prefix, snapshot) in &snapshots {
        assert!(!snapshot.is_empty(), "`{prefix}` names no parameter");
        for (name, grad) in snapshot {
            let (_, last) = finals.iter().find(|(n, _)| n == name).unwrap();
            let same = grad
                .iter()
                .zip(last)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "`{name}` changed after `{prefix}` was announced");
            seen.push(name);
        }
    }
    seen.sort_unstable();
    let mut all: Vec<&str> = finals.iter().map(|(n, _)| n.as_str()).collect();
    all.sort_unstable();
    assert_eq!(seen, all, "every parameter announced exactly once");
    snapshots.into_iter().map(|(prefix, _)| prefix).collect()
}

#[test]
fn raw_parameters_are_announced_after_their_products() {
    let rng = &mut seeded(0);
    let mut net = raw::RawNet::new(&Cpu, rng);
    let x = Tensor::randn([4, 1000], &Cpu, rng);
    let order = announced(&mut net, |net, ready| {
        let (y, tape) = net.forward_train(&x)?;
        net.backward_params_notify(tape, &y, ready)
    });
    assert_eq!(order, ["w2", "w1"]);
}

#[test]
fn a_layer_reused_in_a_loop_is_announced_after_the_loop() {
    for repeats in [0, 1, 3] {
        let rng = &mut seeded(repeats as u64);
        let mut net = dynamic::DynamicNet::new(&Cpu, rng);
        let x = Tensor::randn([4, 1000], &Cpu, rng);
        let order = announced(&mut net, |net, ready| {
            let (y, tape) = net.forward_train(&x, repeats)?;
            net.backward_params_notify(tape, &y, ready)
        });
        assert_eq!(
            order,
            ["output_linear", "middle_linear", "input_linear"],
            "{repeats} repeats"
        );
    }
}

#[test]
fn blocks_of_a_list_are_announced_last_block_first() {
    let rng = &mut seeded(0);
    let mut net = gpt::CharGpt::new(&Cpu, rng);
    let ids: Vec<usize> = (0..2 * 8).map(|i| (i * 5) % 76).collect();
    let idx = Indices::with_shape(&ids, [2, 8], &Cpu).unwrap();
    let positions = gpt::positions(8, &Cpu).unwrap();
    let order = announced(&mut net, |net, ready| {
        let (y, tape) = net.forward_train(&idx, &positions)?;
        net.backward_params_notify(tape, &y, ready)
    });
    let expected = [
        "lm_head", "ln_f", "blocks.3", "blocks.2", "blocks.1", "blocks.0", "wpe", "wte",
    ];
    assert_eq!(order, expected);
}
