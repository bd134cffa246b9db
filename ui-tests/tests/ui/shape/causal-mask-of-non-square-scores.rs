// `.causal_mask()` masks square `[.., T, T]` scores; `[B, T, 8]` is not square.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<8, 8>,
    }
    fn forward(x: [B, T, 8]) -> [B, T, 8] {
        fc(x).causal_mask().softmax(-1)
    }
}

fn main() {}
