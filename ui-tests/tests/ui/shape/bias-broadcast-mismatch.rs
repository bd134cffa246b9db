// Adding a `[10]` bias to a `[N, 100]` value: dims 100 and 10 cannot broadcast.
// The caret must point at the `+` of `x.mm(w) + b`.
use declnet::prelude::*;

network! {
    struct Net {
        w: Param<[784, 100]>,
        b: Param<[10]>,
    }
    fn forward(x: [N, 784]) -> [N, 100] {
        x.mm(w) + b
    }
}

fn main() {}
