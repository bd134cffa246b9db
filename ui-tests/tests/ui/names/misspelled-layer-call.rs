// `outptu` is a typo of the declared layer `output`.
// The caret must point at `outptu`, and the message must suggest `output`.
use declnet::prelude::*;

network! {
    struct Net {
        hidden: Linear<784, 64>,
        output: Linear<64, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        outptu(hidden(x).relu())
    }
}

fn main() {}
