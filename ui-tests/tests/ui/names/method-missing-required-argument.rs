// `.pow()` has no default exponent.
// The caret must point at `pow`, and the message must name the `exponent`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(x).pow()
    }
}

fn main() {}
