// A `[N, 8, 4, 4]` feature map fed to `Linear<128, 10>` without flattening it.
// The caret must point at the argument, and the message must say to flatten first.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<128, 10>,
    }
    fn forward(x: [N, 8, 4, 4]) -> [N, 10] {
        fc(x)
    }
}

fn main() {}
