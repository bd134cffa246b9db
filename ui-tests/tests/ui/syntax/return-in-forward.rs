// `return` in `forward`: the output is the last expression, without `return`.
// The caret must point at `return fc(x)`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        return fc(x);
    }
}

fn main() {}
