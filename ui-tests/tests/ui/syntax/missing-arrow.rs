// The output shape of a sequential network must follow `->`.
// The caret must point at `[N, 10]`, where `->` is expected.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) [N, 10] {
        Linear<784, 10>
    }
}

fn main() {}
