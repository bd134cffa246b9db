// In `fn forward`, `fc2` takes 50 features but `fc1` produces 100.
// The caret must point at the argument `fc1(x)` of the call to `fc2`, with a second error at `50`.
use declnet::prelude::*;

network! {
    struct Net {
        fc1: Linear<784, 100>,
        fc2: Linear<50, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc2(fc1(x))
    }
}

fn main() {}
