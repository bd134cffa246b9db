// `Conv2d` is unknown, yet `Net::new`, `.forward`, `.forward_train` and `.backward` below
// compile: the only error is the caret at `Conv2d`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, 100>, Conv2d<100, 10>
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::new(&Cpu, rng);
    let x = Tensor::randn([2, 784], &Cpu, rng);
    let y = net.forward(&x)?;
    let (y_train, tape) = net.forward_train(&x)?;
    let grad_x = net.backward(tape, &y_train)?;
    assert_eq!(y.dims(), grad_x.dims());
    Ok(())
}
