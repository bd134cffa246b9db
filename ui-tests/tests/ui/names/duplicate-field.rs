// Two fields are named `fc1`.
// The caret must point at the second `fc1`, with a second error at the first one.
use declnet::prelude::*;

network! {
    struct Net {
        fc1: Linear<784, 100>,
        fc1: Linear<100, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc1(x)
    }
}

fn main() {}
