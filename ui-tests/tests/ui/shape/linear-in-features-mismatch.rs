// The second `Linear` of a sequential network takes 50 features but the first produces 100.
// The caret must point at the `50` of `Linear<50, 10>`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, 100>, ReLU, Linear<50, 10>
    }
}

fn main() {}
