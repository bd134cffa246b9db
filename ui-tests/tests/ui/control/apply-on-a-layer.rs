// `.apply(..)` is for custom functions (unit structs implementing `Function`); `layer` is a
// field. The caret must point at `layer`.
use declnet::prelude::*;

network! {
    struct Net {
        layer: Linear<8, 8>,
    }
    fn forward(x: [N, 8]) -> [N, 8] {
        layer.apply(x)
    }
}

fn main() {}
