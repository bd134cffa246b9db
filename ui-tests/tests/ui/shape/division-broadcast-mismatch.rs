// `/` of a `[N, 10]` by a `[3]` tensor: the widths differ and neither is 1.
// The caret must point at `/`, and the message must say "divide" and name both shapes.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
        scale: Param<[3]>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(x) / scale
    }
}

fn main() {}
