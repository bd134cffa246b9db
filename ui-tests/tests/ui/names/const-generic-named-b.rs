// A const generic named `B` clashes with the backend type parameter `network!` adds.
// The caret must point at `B` in `<const B: usize>`.
use declnet::prelude::*;

network! {
    struct Net<const B: usize>(x: [N, 784]) -> [N, 10] {
        Linear<784, B>, ReLU, Linear<B, 10>
    }
}

fn main() {}
