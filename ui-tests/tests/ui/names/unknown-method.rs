// `.dropout()` is not a method `forward` supports.
// The caret must point at `dropout`, and the message must list the supported methods.
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
