// Raw `Param`s and expressions: `x.t()` read in place by `mm`, and a `Param<[3]>` bias
// broadcast over the batch.
use declnet::prelude::*;

network! {
    struct Net {
        w: Param<[3, 20]>,
        b: Param<[3]>,
    }
    fn forward(x: [N, 20]) -> [N, 3] {
        x.mm(w.t()) + b
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::new(&Cpu, rng);
    let x = Tensor::randn([6, 20], &Cpu, rng);
    assert_eq!(net.forward(&x)?.dims(), &[6, 3]);
    let (y, tape) = net.forward_train(&x)?;
    let grad_x = net.backward(tape, &y)?;
    assert_eq!(grad_x.dims(), &[6, 20]);
    let grad_b = net.b.grad().expect("backward fills the bias gradient");
    assert_eq!(grad_b.dims(), &[3]);
    Ok(())
}
