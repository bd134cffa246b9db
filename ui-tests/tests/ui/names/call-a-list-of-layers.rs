// A list of layers is called element by element, not as a whole.
use declnet::prelude::*;

network! {
    struct Net {
        blocks: [Linear<8, 8>; 2],
    }
    fn forward(x: [N, 8]) -> [N, 8] {
        blocks(x)
    }
}

fn main() {}
