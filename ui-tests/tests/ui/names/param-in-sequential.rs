// A `Param` is a tensor, not a layer: it cannot be a step of a sequential network.
// The caret must point at `Param<[100]>`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 100] {
        Linear<784, 100>, Param<[100]>
    }
}

fn main() {}
