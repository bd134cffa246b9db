// `.reshape([N, 5, 3])` of a `[N, 16]` tensor: 16 elements per sample against 15.
// The caret must point at `reshape`, and the message must show both shapes.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 16>,
    }
    fn forward(x: [N, 784]) -> [N, 5, 3] {
        fc(x).reshape([N, 5, 3])
    }
}

fn main() {}
