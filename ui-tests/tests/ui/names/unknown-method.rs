// `.dropout()` is not a method `forward` supports.
// The caret must point at `dropout`; no method is close enough to suggest.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(x).dropout(0.5)
    }
}

fn main() {}
