// `ReLU<10>`: activation layers take no arguments.
// The caret must point at the `10`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, 10>, ReLU<10>
    }
}

fn main() {}
