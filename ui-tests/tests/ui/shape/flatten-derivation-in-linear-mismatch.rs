// `Flatten` makes `[N, 72]` from `[N, 8, 3, 3]`, but `fc` wants 288 features.
// The caret must point at `fc`'s in-features, and the message must show the derivation.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 8, 3, 3]) -> [N, 10] {
        flat: Flatten, fc: Linear<288, 10>
    }
}

fn main() {}
