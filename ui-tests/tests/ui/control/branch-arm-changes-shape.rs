// The `else` arm makes `h` `[N, 4]` while it is `[N, 8]` before the `if` (and after the other
// arm): both arms must leave it the same shape. The caret must point at the `h` reassigned
// in the `else` arm.
use declnet::prelude::*;

network! {
    struct Net {
        first: Linear<3, 8>,
        keep: Linear<8, 8>,
        shrink: Linear<8, 4>,
        last: Linear<8, 4>,
    }
    fn forward(x: [N, 3], train: bool) -> [N, 4] {
        let mut h = first(x);
        if train {
            h = keep(h);
        } else {
            h = shrink(h);
        }
        last(h)
    }
}

fn main() {}
