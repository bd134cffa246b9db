// The network declares output `[N, 5]` but its last layer produces `[N, 10]`.
// The caret must point at the declared output shape `[N, 5]`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 5] {
        Linear<784, 100>, ReLU, Linear<100, 10>
    }
}

fn main() {}
