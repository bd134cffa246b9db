// `x.mm(w)` multiplies `[N, 1000]` by `[100, 10]`: the inner dims differ.
// The caret must point at `mm`.
use declnet::prelude::*;

network! {
    struct Net {
        w: Param<[100, 10]>,
    }
    fn forward(x: [N, 1000]) -> [N, 10] {
        x.mm(w)
    }
}

fn main() {}
