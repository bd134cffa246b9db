// `Capsule` is unknown, yet every item a network gets (`new`, the passes, `NUM_PARAMS`,
// `summary`, `load`, `params`, and its use as a layer of another network) compiles below: the
// only error is the caret at `Capsule`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, 100>, Capsule<100, 10>
    }
}

network! {
    struct Outer(x: [N, 784]) -> [N, 10] {
        inner: Net
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
    net.backward_params(net.forward_train(&x)?.1, &y)?;
    assert_eq!(<Net>::NUM_PARAMS, net.num_params());
    println!("{}", <Net>::summary());
    let names: Vec<String> = net.params().into_iter().map(|(name, _)| name.into()).collect();
    let loaded = Net::load(&Cpu, "net.safetensors")?;
    let outer = Outer::new(&Cpu, rng);
    outer.forward(&loaded.forward(&x)?)?;
    assert!(names.len() < <Outer>::NUM_PARAMS);
    Ok(())
}
