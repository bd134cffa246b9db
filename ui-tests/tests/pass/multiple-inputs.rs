// Two inputs sharing the batch dim; `backward` returns both gradients.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<20, 4>,
    }
    fn forward(x: [N, 20], skip: [N, 4]) -> [N, 4] {
        fc(x) + skip * 0.5
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::new(&Cpu, rng);
    let x = Tensor::randn([7, 20], &Cpu, rng);
    let skip = Tensor::randn([7, 4], &Cpu, rng);
    assert_eq!(net.forward(&x, &skip)?.dims(), &[7, 4]);
    let (y, tape) = net.forward_train(&x, &skip)?;
    let (grad_x, grad_skip) = net.backward(tape, &y)?;
    assert_eq!(grad_x.dims(), &[7, 20]);
    assert_eq!(grad_skip.dims(), &[7, 4]);
    Ok(())
}
