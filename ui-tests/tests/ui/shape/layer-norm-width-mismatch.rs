// `norm` normalises rows of 16, but `fc` makes rows of 32: the error shows both shapes and
// points at the call, then at the declared size.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<8, 32>,
        norm: LayerNorm<16>,
    }
    fn forward(x: [N, 8]) -> [N, 32] {
        norm(fc(x))
    }
}

fn main() {}
