// `repeats` is a non-tensor argument; it can bound a loop but not enter a tensor expression.
// The caret must point at `repeats` in `x * repeats`.
use declnet::prelude::*;

network! {
    struct Net {
        layer: Linear<8, 8>,
    }
    fn forward(x: [N, 8], repeats: usize) -> [N, 8] {
        layer(x * repeats)
    }
}

fn main() {}
