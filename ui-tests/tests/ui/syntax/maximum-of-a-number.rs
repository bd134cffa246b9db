// `torch.maximum` takes two tensors; a number bound is `.clamp_min(c)`.
// The caret must point at `0.5`.
use declnet::prelude::*;

network! {
    struct Net {
        fc: Linear<784, 10>,
    }
    fn forward(x: [N, 784]) -> [N, 10] {
        fc(x).maximum(0.5)
    }
}

fn main() {}
