// `h += x` adds a `[N, 10]` tensor to a `[N, 784]` one.
// The caret must point at `+=`, and the message must name both shapes and where they come from.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        let mut h = fc(x);
        h += x;
        h
    }
}

fn main() {}
