// `forward` declares output `[N, 10]` but returns the hidden `[N, 100]` activation.
// The caret must point at the declared output shape `[N, 10]`.
use declnet::prelude::*;

network! {
    struct Net {
        fc1: Linear<784, 100>,
        fc2: Linear<100, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        let h = fc1(x).relu();
        h
    }
}

fn main() {}
