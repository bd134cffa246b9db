// `conv2` takes 8 input channels, but `conv1` makes 16.
// The caret must point at the argument, and the message must show both shapes.
use declnet::prelude::*;

network! {
    struct Net {
        conv1: Conv2d<1, 16, 3>,
        conv2: Conv2d<8, 32, 3>,
    }
    fn forward(x: [N, 1, 12, 12]) -> [N, 32, 8, 8] {
        conv2(conv1(x).relu())
    }
}

fn main() {}
