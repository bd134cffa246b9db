// `x.mm(b)` with a 1-D `Param<[10]>`: `.mm()` needs two 2-D tensors.
// The caret must point at the argument `b`.
use declnet::prelude::*;

network! {
    struct Net {
        b: Param<[10]>,
    }
    fn forward(x: [N, 10]) -> [N, 10] {
        x.mm(b)
    }
}

fn main() {}
