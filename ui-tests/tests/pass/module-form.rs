// The module form: named layers and a forward body with `let` bindings.
use declnet::prelude::*;

network! {
    struct Net {
        linear1: Linear<20, 8>,
        linear2: Linear<8, 3>,
    }
    fn forward(x: [N, 20]) -> [N, 3] {
        let h = linear1(x).clamp_min(0.0);
        linear2(h)
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::new(&Cpu, rng);
    let x = Tensor::randn([4, 20], &Cpu, rng);
    assert_eq!(net.forward(&x)?.dims(), &[4, 3]);
    let (y, tape) = net.forward_train(&x)?;
    net.backward_params(tape, &y)?;
    let grad = net.linear1.weight.grad().expect("backward fills linear1's gradient");
    assert_eq!(grad.dims(), &[8, 20]);
    Ok(())
}
