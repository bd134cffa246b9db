// A 5x5 kernel over a 4x4 input without padding.
// The caret must point at the layer's input channels, and the message must give the sizes.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 3, 4, 4]) -> [N, 8, 1, 1] {
        Conv2d<3, 8, 5>
    }
}

fn main() {}
