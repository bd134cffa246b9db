// `let h;` declares no value; every `let` in `forward` needs one.
// The caret must point at `let h;`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        let h;
        fc(x)
    }
}

fn main() {}
