// A closure in `forward` is not supported; the message must say what is.
// The caret must point at the closure.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        let f = |h| fc(h);
        fc(x)
    }
}

fn main() {}
