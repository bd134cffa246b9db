// `w` is used, but only in a value the output does not depend on: it can never receive a
// gradient. The caret must point at the field `w`.
use declnet::prelude::*;

network! {
    struct Net {
        layer: Linear<8, 4>,
        w: Param<[8, 4]>,
    }
    fn forward(x: [N, 8]) -> [N, 4] {
        let unused = x.mm(w);
        layer(x)
    }
}

fn main() {}
