// A network used as a layer of another: shapes checked through its `LayerShape` constants,
// parameters named with dotted paths, gradients flowing through it.
use declnet::prelude::*;

network! {
    pub struct Block {
        fc: Linear<4, 4>,
    }
    fn forward(x: [N, 4]) -> [N, 4] {
        x + fc(x).tanh()
    }
}

network! {
    struct Net {
        input: Linear<3, 4>,
        block: Block,
    }
    fn forward(x: [N, 3]) -> [N, 4] {
        block(block(input(x)))
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::new(&Cpu, rng);
    let x = Tensor::randn([2, 3], &Cpu, rng);
    let (y, tape) = net.forward_train(&x)?;
    assert_eq!(y.dims(), &[2, 4]);
    let grad_x = net.backward(tape, &y)?;
    assert_eq!(grad_x.dims(), &[2, 3]);
    assert_eq!(net.param_names()[2], "block.fc.weight");
    assert!(net.block.fc.weight.grad().is_some());
    Ok(())
}
