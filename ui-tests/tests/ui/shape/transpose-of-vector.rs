// `.t()` on a 1-D `Param<[10]>`: only 2-D tensors can be transposed.
// The caret must point at `t`.
use declnet::prelude::*;

network! {
    struct Net {
        b: Param<[10]>,
    }
    fn forward(x: [N, 10]) -> [N, 10] {
        x + b.t()
    }
}

fn main() {}
