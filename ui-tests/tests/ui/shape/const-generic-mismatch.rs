// `fc1` produces `[B, H]` but `fc2` takes 50 features; the macro cannot compare `H` with 50,
// so rustc does, when `Net::<100>` is instantiated. The caret must point at the `50`.
use declnet::prelude::*;

network! {
    struct Net<const H: usize> {
        fc1: Linear<100, H>,
        fc2: Linear<50, 10>,
    }
    fn forward(x: [N, 100]) -> [N, 10] {
        fc2(fc1(x))
    }
}

fn main() {
    let net = Net::<100>::new(&Cpu, &mut seeded(0));
    drop(net);
}
