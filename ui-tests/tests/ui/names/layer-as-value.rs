// `fc` is a layer, used as a value in `x.mm(fc)`; layers are called: `fc(x)`.
// The caret must point at `fc`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        x.mm(fc)
    }
}

fn main() {}
