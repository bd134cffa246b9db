// `.rleu()` is a typo of `.relu()`.
// The caret must point at `rleu`, and the message must suggest `.relu()`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(x).rleu()
    }
}

fn main() {}
