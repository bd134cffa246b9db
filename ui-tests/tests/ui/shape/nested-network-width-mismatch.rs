// `Block` takes `[N, 4]`, but `input` produces `[N, 8]`: rustc compares `Block`'s
// `IN_FEATURES` with 8 through types. The caret must point at the argument of `block(..)`.
use declnet::prelude::*;

network! {
    pub struct Block {
        fc: Linear<4, 4>,
    }
    fn forward(x: [N, 4]) -> [N, 4] {
        fc(x).relu()
    }
}

network! {
    struct Net {
        input: Linear<3, 8>,
        block: Block,
    }
    fn forward(x: [N, 3]) -> [N, 4] {
        block(input(x))
    }
}

fn main() {}
