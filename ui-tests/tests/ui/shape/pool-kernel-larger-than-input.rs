// `MaxPool2d<4>` over a `[N, 3, 3, 3]` map: the kernel is larger than the (unpadded) input.
// The caret must point at the layer, and the message must give the sizes.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 3, 3, 3]) -> [N, 3, 1, 1] {
        pool: MaxPool2d<4>
    }
}

fn main() {}
