// `blocks` holds two layers; `blocks[2]` is past its end.
use declnet::prelude::*;

network! {
    struct Net {
        blocks: [Linear<8, 8>; 2],
    }
    fn forward(x: [N, 8]) -> [N, 8] {
        blocks[2](blocks[1](blocks[0](x)))
    }
}

fn main() {}
