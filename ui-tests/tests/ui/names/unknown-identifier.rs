// `hidden` is not an input, a `let` binding or a field.
// The caret must point at `hidden`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(hidden)
    }
}

fn main() {}
