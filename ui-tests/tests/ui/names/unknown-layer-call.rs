// `fc2` is called but no field of that name is declared.
// The caret must point at `fc2`.
use declnet::prelude::*;

network! {
    struct Net {
        fc1: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc2(fc1(x))
    }
}

fn main() {}
