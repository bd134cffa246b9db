// A list of layers: one array field, `state_dict` names `hidden.0`, `hidden.1`, ..., applied
// in a loop (unrolled: every element its own weights) or by index, with gradients for each.
use declnet::prelude::*;

network! {
    struct Net {
        hidden: [Linear<4, 4>; 3],
        norms: [LayerNorm<4>; 2],
        out: Linear<4, 2>,
    }
    fn forward(x: [N, 4]) -> [N, 2] {
        let mut h = x;
        for layer in &hidden {
            let z = layer(h).relu();
            h = h + z;
        }
        out(norms[1](norms[0](h)))
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::new(&Cpu, rng);
    assert_eq!(
        net.param_names(),
        [
            "hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "hidden.1.bias",
            "hidden.2.weight", "hidden.2.bias", "norms.0.weight", "norms.0.bias",
            "norms.1.weight", "norms.1.bias", "out.weight", "out.bias",
        ]
    );
    assert_eq!(Net::<Cpu>::NUM_PARAMS, 3 * 20 + 2 * 8 + 10);
    // Each element drew its own weights.
    assert_ne!(net.hidden[0].weight.value().to_vec(), net.hidden[1].weight.value().to_vec());
    let x = Tensor::randn([5, 4], &Cpu, rng);
    let (y, tape) = net.forward_train(&x)?;
    net.backward_params(tape, &y)?;
    for layer in &net.hidden {
        assert!(layer.weight.grad().is_some());
    }
    assert!(Net::<Cpu>::summary().contains("hidden.2"));
    Ok(())
}
