// `Capsule` is not a layer `network!` knows.
// The caret must point at `Capsule`, and the message must say where the layers are listed.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, 100>, Capsule<3, 3>, Linear<100, 10>
    }
}

fn main() {}
