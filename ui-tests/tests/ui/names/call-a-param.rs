// `w` is a `Param`, not a layer, so it cannot be called like `w(x)`.
// The caret must point at `w` in the call.
use declnet::prelude::*;

network! {
    struct Net {
        w: Param<[784, 10]>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        w(x)
    }
}

fn main() {}
