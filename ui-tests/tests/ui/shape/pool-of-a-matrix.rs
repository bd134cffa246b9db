// `.max_pool2d(2)` of a `[N, 10]` tensor: pooling needs `[N, C, H, W]`.
// The caret must point at `max_pool2d`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 5] {
        fc(x).max_pool2d(2)
    }
}

fn main() {}
