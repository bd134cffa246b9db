// A dim cannot be negative.
// The caret must point at the `-`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, -10>
    }
}

fn main() {}
