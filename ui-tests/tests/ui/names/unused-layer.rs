// `spare` is declared but `forward` never uses it, so it would never be trained.
// The caret must point at `spare`.
use declnet::prelude::*;

network! {
    struct Net {
        layer: Linear<8, 4>,
        spare: Linear<4, 4>,
    }
    fn forward(x: [N, 8]) -> [N, 4] {
        layer(x)
    }
}

fn main() {}
