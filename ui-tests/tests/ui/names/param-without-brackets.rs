// `Param<784>` is missing the brackets of a shape: it must be `Param<[784]>`.
// The caret must point at `Param<784>`.
use declnet::prelude::*;

network! {
    struct Net {
        w: Param<784>,
    }
    fn forward(x: [N, 784]) -> [N, 784] {
        x * w
    }
}

fn main() {}
