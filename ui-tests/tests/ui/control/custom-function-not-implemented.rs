// `Doubler` does not implement `Function`, so the generated call does not type-check.
// The caret must point at `Doubler`.
use declnet::prelude::*;

struct Doubler;

network! {
    struct Net {
        layer: Linear<8, 8>,
    }
    fn forward(x: [N, 8]) -> [N, 8] {
        Doubler.apply(layer(x))
    }
}

fn main() {}
