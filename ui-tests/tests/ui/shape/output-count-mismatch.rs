// `forward` declares two outputs but ends with one tensor. The caret must point at `head(h)`.
use declnet::prelude::*;

network! {
    struct Net {
        trunk: Linear<3, 4>,
        head: Linear<4, 2>,
    }
    fn forward(x: [N, 3]) -> ([N, 2], [N, 4]) {
        let h = trunk(x);
        head(h)
    }
}

fn main() {}
