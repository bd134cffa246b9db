// `groups = 3` does not divide 16 output channels.
// The caret must point at the `16`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 3, 8, 8]) -> [N, 16, 6, 6] {
        Conv2d<3, 16, 3, groups = 3>
    }
}

fn main() {}
