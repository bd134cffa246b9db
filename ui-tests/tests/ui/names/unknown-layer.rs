// `Conv2d` is not a layer `network!` knows.
// The caret must point at `Conv2d`, and the message must list the known layers.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 784]) -> [N, 10] {
        Linear<784, 100>, Conv2d<3, 3>, Linear<100, 10>
    }
}

fn main() {}
