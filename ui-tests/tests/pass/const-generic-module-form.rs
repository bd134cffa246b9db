// Const generics in the module form: the macro leaves `H == H` and `[H]` biases to rustc.
use declnet::prelude::*;

network! {
    struct Net<const H: usize> {
        fc1: Linear<100, H>,
        b: Param<[H]>,
        fc2: Linear<H, 10>,
    }
    fn forward(x: [N, 100]) -> [N, 10] {
        fc2((fc1(x) + b).tanh())
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::<32>::new(&Cpu, rng);
    let x = Tensor::randn([3, 100], &Cpu, rng);
    assert_eq!(net.forward(&x)?.dims(), &[3, 10]);
    let (y, tape) = net.forward_train(&x)?;
    net.backward_params(tape, &y)?;
    assert_eq!(net.b.grad().expect("bias gradient").dims(), &[32]);
    Ok(())
}
