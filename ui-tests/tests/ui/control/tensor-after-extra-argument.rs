// Tensor inputs come before non-tensor arguments in `forward`'s signature.
// The caret must point at `x`.
use declnet::prelude::*;

network! {
    struct Net {
        layer: Linear<8, 8>,
    }
    fn forward(repeats: usize, x: [N, 8]) -> [N, 8] {
        let mut h = layer(x);
        for _ in 0..repeats {
            h = layer(h);
        }
        h
    }
}

fn main() {}
