// Loops inside loops are not supported yet. The caret must point at the inner `for`.
use declnet::prelude::*;

network! {
    struct Net {
        layer: Linear<8, 8>,
    }
    fn forward(x: [N, 8], outer: usize, inner: usize) -> [N, 8] {
        let mut h = x;
        for _ in 0..outer {
            for _ in 0..inner {
                h = layer(h);
            }
        }
        h
    }
}

fn main() {}
