// The sequential network's input has 784 features but its first `Linear` takes 1000.
// The caret must point at the `1000` of `Linear<1000, 10>`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<1000, 10>
    }
}

fn main() {}
