// A loop over a list applies each element to the carried value: `[N, 8]` into layers that
// take 4 features. Reported once, at the call in the loop, not once per element.
use declnet::prelude::*;

network! {
    struct Net {
        blocks: [Linear<4, 4>; 3],
    }
    fn forward(x: [N, 8]) -> [N, 4] {
        let mut h = x;
        for block in blocks {
            h = block(h);
        }
        h
    }
}

fn main() {}
