// A const generic hidden size, fixed where the network is instantiated.
use declnet::prelude::*;

network! {
    struct Mlp<const H: usize>(x: [N, 784]) -> [N, 10] {
        Linear<784, H>, ReLU, Linear<H, 10>
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Mlp::<128>::new(&Cpu, rng);
    assert_eq!(Mlp::<128>::NUM_PARAMS, 784 * 128 + 128 + 128 * 10 + 10);
    let x = Tensor::randn([2, 784], &Cpu, rng);
    assert_eq!(net.forward(&x)?.dims(), &[2, 10]);
    let (y, tape) = net.forward_train(&x)?;
    let grad_x = net.backward(tape, &y)?;
    assert_eq!(grad_x.dims(), &[2, 784]);
    Ok(())
}
