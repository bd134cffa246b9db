// `K` is not a const generic, so `Linear<K, 10>` has no size when the network is built.
// The caret must point at `K`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<K, 10>
    }
}

fn main() {}
