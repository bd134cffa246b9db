// `classifier` is called but not declared, and no declared name is close to it.
// The caret must point at `classifier`, and the suggested declaration must take the 64
// features it is called with.
use declnet::prelude::*;

network! {
    struct Net {
        hidden: Linear<784, 64>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        classifier(hidden(x).relu())
    }
}

fn main() {}
