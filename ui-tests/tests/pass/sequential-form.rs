// The sequential form: layers applied in order, named like `nn.Sequential` (`0.weight`, ..).
use declnet::prelude::*;

network! {
    struct Net(x: [N, 20]) -> [N, 3] {
        Linear<20, 8>, ReLU, Linear<8, 3>
    }
}

fn main() -> Result<()> {
    let rng = &mut seeded(0);
    let mut net = Net::new(&Cpu, rng);
    let x = Tensor::randn([5, 20], &Cpu, rng);
    assert_eq!(net.forward(&x)?.dims(), &[5, 3]);
    let (y, tape) = net.forward_train(&x)?;
    let grad_x = net.backward(tape, &y)?;
    assert_eq!(grad_x.dims(), &[5, 20]);
    let names: Vec<String> = net.params().into_iter().map(|(name, _)| name.into()).collect();
    assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    Ok(())
}
